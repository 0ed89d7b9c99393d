"""A signed-in user's own page: whether visitsdash mails them the weekly digest and the alerts."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from visits.access import signed_in_required
from visits.notify.account import AccountSettingsForm, account_settings_get, account_settings_save, mail_refusal


@signed_in_required
def account_settings(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = AccountSettingsForm(request.POST)
        if form.is_valid():
            account_settings_save(user=request.user, **form.cleaned_data)
            messages.success(request, "Your mail settings are saved.")
            return redirect("visits:account_settings")
    else:
        current = account_settings_get(user=request.user)
        form = AccountSettingsForm(
            initial={"digest_enabled": current.digest_enabled, "alerts_enabled": current.alerts_enabled}
        )
    return render(request, "visits/account_settings.html", {"form": form, "refusal": mail_refusal(request.user)})

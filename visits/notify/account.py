"""Who visitsdash mails, and each user's own choices: the active members of Managers or Directors
with an e-mail address get the weekly digest and the rate alerts, unless they turned them off on
the settings page (AccountSettings; no row means both on)."""

from __future__ import annotations

from django import forms
from django.contrib.auth.models import User
from django.db.models import QuerySet

from visits.models import AccountSettings

MAIL_GROUPS = ("Managers", "Directors")


def mail_users() -> QuerySet[User]:
    """Every account that may get the digest and the alerts (their own choices aside)."""
    return User.objects.filter(is_active=True, groups__name__in=MAIL_GROUPS).exclude(email="").distinct()


def mail_refusal(user: User) -> str | None:
    """Why visitsdash mails `user` nothing whatever their settings, as a sentence; None if it may."""
    name = user.get_username()
    if not user.is_active:
        return f"{name}'s account is inactive."
    if not user.groups.filter(name__in=MAIL_GROUPS).exists():
        return f"{name} is in neither {' nor '.join(MAIL_GROUPS)}: only their members get the digest and alerts."
    if not user.email:
        return f"{name} has no e-mail address (set it in the admin, under Users)."
    return None


def account_settings_get(*, user: User) -> AccountSettings:
    """The user's settings; the defaults (everything on), unsaved, when they never changed them."""
    found = AccountSettings.objects.filter(user=user).first()
    return found or AccountSettings(user=user)


def account_settings_save(*, user: User, digest_enabled: bool, alerts_enabled: bool) -> AccountSettings:
    settings, _ = AccountSettings.objects.update_or_create(
        user=user, defaults={"digest_enabled": digest_enabled, "alerts_enabled": alerts_enabled}
    )
    return settings


class AccountSettingsForm(forms.Form):
    digest_enabled = forms.BooleanField(
        required=False,
        label="The weekly digest",
        help_text="Monday morning: last week's visits and rates for your reps, the reps who moved most, "
        "and the new high-risk flags.",
    )
    alerts_enabled = forms.BooleanField(
        required=False,
        label="Too-far rate alerts",
        help_text="A mail when one of your reps' too-far rate jumps from one week to the next.",
    )

"""The report filters, shared by every report, list and export, read from the query string."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.db.models import QuerySet

from .models import Outcome, Rep, VerificationStatus, Visit

DATE_ERROR = "must be a date written YYYY-MM-DD"


class ReportFilters(forms.Form):
    start = forms.DateField(required=False, input_formats=["%Y-%m-%d"], error_messages={"invalid": DATE_ERROR})
    end = forms.DateField(required=False, input_formats=["%Y-%m-%d"], error_messages={"invalid": DATE_ERROR})
    rep = forms.TypedMultipleChoiceField(
        required=False, coerce=int, choices=(), error_messages={"invalid_choice": "%(value)s is not a known rep id"}
    )
    outcome = forms.TypedMultipleChoiceField(
        required=False, coerce=int, choices=(), error_messages={"invalid_choice": "%(value)s is not a known outcome id"}
    )
    status = forms.MultipleChoiceField(
        required=False,
        choices=VerificationStatus.choices,
        error_messages={"invalid_choice": "%(value)s is not one of " + ", ".join(VerificationStatus.values)},
    )
    resource_type = forms.CharField(required=False, max_length=40)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rep"].choices = [(r.id, str(r)) for r in Rep.objects.only("id", "name")]
        self.fields["outcome"].choices = [(o.id, str(o)) for o in Outcome.objects.only("id", "name")]

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("start must not be after end")
        return data

    def problems(self) -> str:
        """One line per wrong parameter: 'rep: 99 is not a known rep'."""
        lines = []
        for name, errors in self.errors.items():
            label = "filters" if name == "__all__" else name
            lines.extend(f"{label}: {error}" for error in errors)
        return "\n".join(lines)

    def visits(self) -> QuerySet:
        """Visits not deleted in Sell, narrowed by the filters; days end at midnight in DISPLAY_TIME_ZONE."""
        data = self.cleaned_data
        zone = ZoneInfo(settings.DISPLAY_TIME_ZONE)
        visits = Visit.objects.filter(deleted_at__isnull=True)
        if data.get("start"):
            visits = visits.filter(visited_at__gte=datetime.combine(data["start"], time.min, tzinfo=zone))
        if data.get("end"):
            visits = visits.filter(visited_at__lt=datetime.combine(data["end"] + timedelta(days=1), time.min, tzinfo=zone))
        if data.get("rep"):
            visits = visits.filter(rep_id__in=data["rep"])
        if data.get("outcome"):
            visits = visits.filter(outcome_id__in=data["outcome"])
        if data.get("status"):
            visits = visits.filter(verification_status__in=data["status"])
        if data.get("resource_type"):
            visits = visits.filter(resource_type=data["resource_type"])
        return visits

    def query_string(self) -> str:
        """The filters as given, for links and downloads that must keep them."""
        return self.data.urlencode() if hasattr(self.data, "urlencode") else ""

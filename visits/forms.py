"""The report filters, shared by every report, list and export, read from the query string."""

from datetime import date

from django import forms
from django.conf import settings
from django.db.models import QuerySet

from .analytics import Scope
from .events import MAX_ID  # the largest id the database holds (Sell's ids are 64-bit)
from .models import DecisionKind, FlagRule, Outcome, Rep, VerificationStatus
from .review import REVIEW_STATES

DATE_ERROR = "must be a date written YYYY-MM-DD"


def date_bounds() -> tuple[date, date]:
    """The dates a filter may name: the years a visit can have (SELL_TIME_MIN_YEAR to
    SELL_TIME_MAX_YEAR; ingestion rejects times outside them)."""
    return date(settings.SELL_TIME_MIN_YEAR, 1, 1), date(settings.SELL_TIME_MAX_YEAR, 12, 31)


class FilterDateField(forms.DateField):
    """A YYYY-MM-DD date within date_bounds(): the reports step a day or a month past the ends
    of a range, which the ends of the calendar cannot do."""

    def __init__(self, **kwargs) -> None:
        super().__init__(required=False, input_formats=["%Y-%m-%d"], error_messages={"invalid": DATE_ERROR}, **kwargs)

    def validate(self, value) -> None:
        super().validate(value)
        low, high = date_bounds()
        if value is not None and not low <= value <= high:
            raise forms.ValidationError(f"must be between {low.isoformat()} and {high.isoformat()}")


def id_coerce(value: str) -> int:
    """A database id from text: a whole number from 1 to MAX_ID, else a ValueError (a form error)."""
    number = int(value)
    if not 0 < number <= MAX_ID:
        raise ValueError(f"{value} is out of range")
    return number


class ReportFilters(forms.Form):
    start = FilterDateField()
    end = FilterDateField()
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

    def scope(self) -> Scope:
        data = self.cleaned_data
        return Scope(
            start=data.get("start"),
            end=data.get("end"),
            reps=frozenset(data["rep"]) if data.get("rep") else None,
            outcomes=frozenset(data["outcome"]) if data.get("outcome") else None,
            statuses=frozenset(data["status"]) if data.get("status") else None,
            resource_type=data.get("resource_type") or "",
        )

    def visits(self) -> QuerySet:
        """Visits not deleted in Sell, narrowed by the filters; days end at midnight in DISPLAY_TIME_ZONE."""
        return self.scope().visits()

    def query_string(self) -> str:
        """The filters as given, for links and downloads that must keep them."""
        return self.data.urlencode() if hasattr(self.data, "urlencode") else ""


class ReviewFilters(ReportFilters):
    """The report filters plus the flag rules and the review state, for the review queue."""

    rule = forms.MultipleChoiceField(
        required=False,
        choices=FlagRule.choices,
        error_messages={"invalid_choice": "%(value)s is not one of " + ", ".join(FlagRule.values)},
    )
    review = forms.ChoiceField(
        required=False,
        choices=list(REVIEW_STATES.items()),
        error_messages={"invalid_choice": "%(value)s is not one of " + ", ".join(REVIEW_STATES)},
    )

    def clean_review(self) -> str:
        return self.cleaned_data.get("review") or "awaiting"


class DecisionForm(forms.Form):
    """A decision on one or more flagged visits."""

    visit = forms.TypedMultipleChoiceField(
        coerce=id_coerce,
        error_messages={"required": "choose at least one visit", "invalid_choice": "%(value)s is not a visit id"},
    )
    kind = forms.ChoiceField(choices=DecisionKind.choices, error_messages={"required": "choose a decision"})
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        ids = self.data.getlist("visit") if hasattr(self.data, "getlist") else []
        self.fields["visit"].choices = [(i, i) for i in ids]  # existence is checked when recording

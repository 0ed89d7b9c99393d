"""The review queue's filters (the report filters plus rule and review state) and a decision."""

from typing import cast

from django import forms

from visits.models import DecisionKind, FlagRule, RiskTier
from visits.reports.filters import ReportFilters, id_coerce
from visits.review.queue import QUEUE_SORTS, REVIEW_STATES


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

    tier = forms.MultipleChoiceField(
        required=False,
        choices=RiskTier.choices,
        error_messages={"invalid_choice": "%(value)s is not one of " + ", ".join(RiskTier.values)},
    )
    sort = forms.ChoiceField(
        required=False,
        choices=list(QUEUE_SORTS.items()),
        error_messages={"invalid_choice": "%(value)s is not one of " + ", ".join(QUEUE_SORTS)},
    )

    def clean_review(self) -> str:
        return self.cleaned_data.get("review") or "awaiting"

    def clean_sort(self) -> str:
        return self.cleaned_data.get("sort") or "risk"


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
        cast(forms.ChoiceField, self.fields["visit"]).choices = [
            (i, i) for i in ids
        ]  # existence is checked when recording

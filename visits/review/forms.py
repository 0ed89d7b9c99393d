"""The review queue's filters (the report filters plus rule, review state, tier and sort), a decision,
a bulk accept of the low tier, and the rules page's filters."""

from typing import cast

from django import forms

from visits.models import AcceptReason, DecisionKind, FlagRule, RiskTier
from visits.reports.filters import ReportFilters, id_coerce
from visits.review.queue import QUEUE_SORTS, REVIEW_STATES, decision_problems


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


REASON_ERRORS = {"invalid_choice": "%(value)s is not one of " + ", ".join(AcceptReason.values)}


class RulesFilters(ReportFilters):
    """The report filters plus the risk tiers, for the rules' precision page."""

    tier = forms.MultipleChoiceField(
        required=False,
        choices=RiskTier.choices,
        error_messages={"invalid_choice": "%(value)s is not one of " + ", ".join(RiskTier.values)},
    )


class DecisionForm(forms.Form):
    """A decision on one or more flagged visits: an accept with its reason (and a note for
    "other"), a reject or a follow-up with an optional note."""

    visit = forms.TypedMultipleChoiceField(
        coerce=id_coerce,
        error_messages={"required": "choose at least one visit", "invalid_choice": "%(value)s is not a visit id"},
    )
    kind = forms.ChoiceField(choices=DecisionKind.choices, error_messages={"required": "choose a decision"})
    reason = forms.ChoiceField(required=False, choices=AcceptReason.choices, error_messages=REASON_ERRORS)
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        ids = self.data.getlist("visit") if hasattr(self.data, "getlist") else []
        cast(forms.ChoiceField, self.fields["visit"]).choices = [
            (i, i) for i in ids
        ]  # existence is checked when recording

    def clean(self):
        data = super().clean()
        assert data is not None
        if data.get("kind") and data["kind"] != DecisionKind.ACCEPT:
            data["reason"] = ""  # a reason picked before choosing Reject (no script to hide it) is not kept
        if "kind" in data and "reason" in data:
            for name, problem in decision_problems(
                kind=data["kind"], reason=data["reason"], note=data.get("note", "")
            ).items():
                self.add_error(name, problem)
        return data


class BulkAcceptForm(forms.Form):
    """The confirmation of a bulk accept of the low tier: the reason, the note, and how many visits
    the reviewer was shown (a different count now is asked again, not recorded)."""

    reason = forms.ChoiceField(
        choices=AcceptReason.choices, error_messages={**REASON_ERRORS, "required": "choose a reason for the accept"}
    )
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)
    expected = forms.IntegerField(min_value=0, error_messages={"required": "the count confirmed is missing"})

    def clean(self):
        data = super().clean()
        assert data is not None
        if data.get("reason"):
            for name, problem in decision_problems(
                kind=DecisionKind.ACCEPT, reason=data["reason"], note=data.get("note", "")
            ).items():
                self.add_error(name, problem)
        return data

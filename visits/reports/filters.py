"""The report filters, shared by every report, list and export, read from the query string."""

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date
from typing import cast

from django import forms
from django.conf import settings
from django.db.models import QuerySet

from visits.models import Outcome, Rep, VerificationStatus
from visits.reports.scope import Scope
from visits.sell.events import MAX_ID  # the largest id the database holds (Sell's ids are 64-bit)

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


NO_GROUP = "none"  # the team filter's value for reps without a Sell group
NO_GROUP_LABEL = "No group"


def team_value(group_id: int | None) -> str:
    """A team's value in the `team` filter: its Sell group id, or NO_GROUP."""
    return NO_GROUP if group_id is None else str(group_id)


def teams_of(reps: Iterable[tuple[int, int | None, str]]) -> tuple[dict[str, set[int]], dict[str, str]]:
    """From (rep id, group id, the rep's team name) rows: each team's reps and its label, by the
    `team` filter's values. A group is named as most of its reps name it (the group's name, else
    their free-text team_name; ties by name), else "Group <id>"; "No group" for none."""
    members: dict[str, set[int]] = defaultdict(set)
    names: dict[str, Counter[str]] = defaultdict(Counter)
    for rep_id, group_id, name in reps:
        value = team_value(group_id)
        members[value].add(rep_id)
        if name:
            names[value][name] += 1
    labels = {}
    for value in members:
        if value == NO_GROUP:
            labels[value] = NO_GROUP_LABEL
        elif names[value]:
            labels[value] = min(names[value].items(), key=lambda item: (-item[1], item[0]))[0]
        else:
            labels[value] = f"Group {value}"
    return dict(members), labels


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
    # A Sell group id (Rep.group_id), or NO_GROUP; among the groups of the reps the user may see.
    team = forms.MultipleChoiceField(
        required=False,
        choices=(),
        error_messages={"invalid_choice": f"%(value)s is not a known group id (or {NO_GROUP}, for reps without one)"},
    )
    status = forms.MultipleChoiceField(
        required=False,
        choices=VerificationStatus.choices,
        error_messages={"invalid_choice": "%(value)s is not one of " + ", ".join(VerificationStatus.values)},
    )
    resource_type = forms.CharField(required=False, max_length=40)

    def __init__(self, *args, reps: QuerySet | None = None, **kwargs) -> None:
        """`reps`: those the filter may name, from `visits.access.reps_for_user` (all reps if None)."""
        super().__init__(*args, **kwargs)
        reps = Rep.objects.all() if reps is None else reps
        rows = list(reps.values_list("id", "name", "group_id", "group_name", "team_name"))  # by name (Rep's order)
        cast(forms.ChoiceField, self.fields["rep"]).choices = [(i, Rep.label_for(i, name)) for i, name, *_ in rows]
        self.team_reps, labels = teams_of((i, group, group_name or team) for i, _, group, group_name, team in rows)
        by_name = sorted(labels, key=lambda value: (value == NO_GROUP, labels[value].casefold(), value))
        cast(forms.ChoiceField, self.fields["team"]).choices = [(value, labels[value]) for value in by_name]
        cast(forms.ChoiceField, self.fields["outcome"]).choices = [
            (o.id, str(o)) for o in Outcome.objects.only("id", "name")
        ]

    def clean(self):
        data = super().clean()
        assert data is not None  # Form.clean gives back cleaned_data
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("start must not be after end")
        return data

    def problems(self) -> str:
        """One line per wrong parameter: 'rep: 99 is not a known rep'."""
        lines: list[str] = []
        for name, errors in self.errors.items():
            label = "filters" if name == "__all__" else name
            lines.extend(f"{label}: {error}" for error in errors)
        return "\n".join(lines)

    def scope(self) -> Scope:
        """The filters as a Scope. For `visits.access.scope_for_user`, which adds what the user may see:
        views call that, never this."""
        data = self.cleaned_data
        reps = frozenset(data["rep"]) if data.get("rep") else None
        if data.get("team"):
            team = frozenset().union(*(self.team_reps[value] for value in data["team"]))
            reps = team if reps is None else reps & team
        return Scope(
            start=data.get("start"),
            end=data.get("end"),
            reps=reps,
            outcomes=frozenset(data["outcome"]) if data.get("outcome") else None,
            statuses=frozenset(data["status"]) if data.get("status") else None,
            resource_type=data.get("resource_type") or "",
        )

    def query_string(self) -> str:
        """The filters as given, for links and downloads that must keep them."""
        return self.data.urlencode() if hasattr(self.data, "urlencode") else ""

"""Read-side selectors: report rows, rates and trends over a filtered set of visits.

Rates are shares of all the visits in the row (every status counts in the denominator).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncWeek

from .models import Outcome, Rep, VerificationStatus

# Counting a column of the covering index (never null), not the primary key, lets the
# database answer from the index alone.
STATUS_COUNTS = {
    "visits": Count("verification_status"),
    **{
        status.value: Count("verification_status", filter=Q(verification_status=status.value))
        for status in VerificationStatus
    },
}
MIN_VISITS_FOR_RANKING = 20  # the overview ranks reps by too-far rate only from this many visits


@dataclass
class Counts:
    visits: int = 0
    verified: int = 0
    resource_location_too_far: int = 0
    location_unknown: int = 0
    location_services_disabled: int = 0

    @classmethod
    def of(cls, row: dict) -> Counts:
        return cls(**{name: row.get(name) or 0 for name in STATUS_COUNTS})

    def rate(self, count: int) -> float | None:
        return count / self.visits if self.visits else None

    @property
    def verified_rate(self) -> float | None:
        return self.rate(self.verified)

    @property
    def too_far_rate(self) -> float | None:
        return self.rate(self.resource_location_too_far)

    @property
    def unknown_rate(self) -> float | None:
        return self.rate(self.location_unknown)

    @property
    def disabled_rate(self) -> float | None:
        return self.rate(self.location_services_disabled)


@dataclass
class Row:
    """One report row: who or what (id and name) and its counts."""

    id: int | None
    name: str
    counts: Counts


@dataclass
class Cell:
    visits: int
    too_far: int

    @property
    def too_far_rate(self) -> float | None:
        return self.too_far / self.visits if self.visits else None


SORTS = ("name", "visits", *VerificationStatus.values, "verified_rate", "too_far_rate")


def rows_sort(rows: list[Row], *, sort: str) -> list[Row]:
    """Sort by a column name, '-name' for descending; empty rates sort last either way."""
    key, descending = sort.lstrip("-"), sort.startswith("-")
    if key == "name":
        return sorted(rows, key=lambda r: (r.name.casefold(), r.id or 0), reverse=descending)
    present = [r for r in rows if getattr(r.counts, key) is not None]
    missing = [r for r in rows if getattr(r.counts, key) is None]
    present.sort(key=lambda r: (getattr(r.counts, key), r.name.casefold()), reverse=descending)
    return present + missing


def totals(*, visits: QuerySet) -> Counts:
    return Counts.of(visits.aggregate(**STATUS_COUNTS))


def rep_rows(*, visits: QuerySet, sort: str = "name") -> list[Row]:
    names = dict(Rep.objects.values_list("id", "name"))
    rows = [
        Row(id=row["rep_id"], name=names.get(row["rep_id"]) or f"Rep {row['rep_id']}", counts=Counts.of(row))
        for row in visits.order_by().values("rep_id").annotate(**STATUS_COUNTS)
    ]
    return rows_sort(rows, sort=sort)


def outcome_rows(*, visits: QuerySet, sort: str = "name") -> list[Row]:
    names = dict(Outcome.objects.values_list("id", "name"))
    rows = [
        Row(
            id=row["outcome_id"],
            name=(names.get(row["outcome_id"]) or f"Outcome {row['outcome_id']}") if row["outcome_id"] else "(no outcome)",
            counts=Counts.of(row),
        )
        for row in visits.order_by().values("outcome_id").annotate(**STATUS_COUNTS)
    ]
    return rows_sort(rows, sort=sort)


def matrix(*, visits: QuerySet) -> tuple[list[Row], list[Row], dict[tuple[int, int | None], Cell]]:
    """Reps (rows) by outcomes (columns); each cell the visits and too-far visits."""
    cells = {
        (row["rep_id"], row["outcome_id"]): Cell(visits=row["visits"], too_far=row["too_far"])
        for row in visits.order_by()
        .values("rep_id", "outcome_id")
        .annotate(
            visits=Count("verification_status"),
            too_far=Count("verification_status", filter=Q(verification_status=VerificationStatus.TOO_FAR)),
        )
    }
    return rep_rows(visits=visits), outcome_rows(visits=visits), cells


def weekly_trend(*, visits: QuerySet) -> list[tuple[date, Counts]]:
    """Counts per week (weeks start on Monday in DISPLAY_TIME_ZONE), oldest first."""
    zone = ZoneInfo(settings.DISPLAY_TIME_ZONE)
    rows = (
        visits.order_by()
        .annotate(week=TruncWeek("visited_at", tzinfo=zone))
        .values("week")
        .annotate(**STATUS_COUNTS)
        .order_by("week")
    )
    return [(row["week"].date(), Counts.of(row)) for row in rows]


def too_far_leaders(*, visits: QuerySet, limit: int = 5) -> list[Row]:
    ranked = [r for r in rep_rows(visits=visits) if r.counts.visits >= MIN_VISITS_FOR_RANKING]
    return rows_sort(ranked, sort="-too_far_rate")[:limit]

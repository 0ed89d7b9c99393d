"""The scope of a report: which visits it counts, as plain values (dates, reps, outcomes, statuses,
a resource type). Built from a request by `visits.access.scope_for_user`, never by hand in a view.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import QuerySet

from visits.models import Visit


@dataclass(frozen=True)
class Scope:
    """What a report counts: the filters, as values. None means "no filter on this"."""

    start: date | None = None
    end: date | None = None
    reps: frozenset[int] | None = None
    outcomes: frozenset[int] | None = None
    statuses: frozenset[str] | None = None
    resource_type: str = ""

    def for_rep(self, rep_id: int) -> Scope:
        """This scope narrowed to one rep (nothing, if the rep filter leaves that rep out)."""
        return replace(self, reps=frozenset({rep_id}) & self.reps if self.reps is not None else frozenset({rep_id}))

    def visits(self) -> QuerySet:
        """Live visits in scope, bounded on visited_at with days in DISPLAY_TIME_ZONE."""
        zone = ZoneInfo(settings.DISPLAY_TIME_ZONE)
        visits = self._narrow(Visit.objects.live(), rep="rep_id", outcome="outcome_id")
        if self.start:
            visits = visits.filter(visited_at__gte=datetime.combine(self.start, time.min, tzinfo=zone))
        if self.end:
            visits = visits.filter(visited_at__lt=datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=zone))
        return visits

    def _narrow(self, rows: QuerySet, *, rep: str, outcome: str | None) -> QuerySet:
        if self.reps is not None:
            rows = rows.filter(**{f"{rep}__in": self.reps})
        if self.outcomes is not None and outcome:
            rows = rows.filter(**{f"{outcome}__in": self.outcomes})
        if self.statuses is not None:
            rows = rows.filter(verification_status__in=self.statuses)
        if self.resource_type and outcome:  # the week tally has neither dimension
            rows = rows.filter(resource_type=self.resource_type)
        return rows

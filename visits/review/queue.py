"""The review queue: flagged visits, their latest decision, and recording decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Prefetch, QuerySet, Subquery

from visits.geo import distance
from visits.models import Decision, DecisionKind, Flag, Visit, VisitQuerySet

REVIEW_STATES = {
    "awaiting": "Awaiting a decision",
    DecisionKind.FOLLOW_UP: "To follow up",
    DecisionKind.ACCEPT: "Accepted",
    DecisionKind.REJECT: "Rejected",
    "all": "All flagged",
}


def latest_decision() -> Subquery:
    return Subquery(Decision.objects.filter(visit=OuterRef("pk")).order_by("-decided_at", "-id").values("kind")[:1])


def flagged_visits(*, visits: QuerySet, rules: list[str] | None = None, state: str = "awaiting") -> QuerySet:
    """`visits` narrowed to those with a flag (of one of `rules`), annotated with `review_status`
    (the latest decision's kind, None while none) and narrowed to `state`."""
    flags = Flag.objects.filter(visit=OuterRef("pk"))
    if rules:
        flags = flags.filter(rule__in=rules)
    chosen = visits.filter(Exists(flags)).annotate(review_status=latest_decision())
    if state == "awaiting":
        return chosen.filter(review_status__isnull=True)
    if state != "all":
        return chosen.filter(review_status=state)
    return chosen


@dataclass
class Neighbour:
    visit: Visit
    minutes: float  # after (+) or before (-) the reviewed visit
    km: float | None


def time_shift(moment: datetime, delta: timedelta) -> datetime:
    """moment + delta, held within what a datetime can be (stored data is not trusted to be
    far from the ends of the calendar)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if delta > timedelta(0) else datetime.min.replace(tzinfo=UTC)


def neighbours(*, visit: Visit, hours: int = 12, limit: int = 6) -> list[Neighbour]:
    """The rep's other visits within `hours` of this one, nearest in time first."""
    around = (
        Visit.objects.live().filter(rep_id=visit.rep_id,
                                    visited_at__gte=time_shift(visit.visited_at, -timedelta(hours=hours)),
                                    visited_at__lte=time_shift(visit.visited_at, timedelta(hours=hours)))
        .exclude(id=visit.id).select_related("outcome")
    )  # fmt: skip
    found = []
    for other in around:
        km = None
        here, there = visit.point, other.point
        if here is not None and there is not None:
            km = distance.km_between(here, there)
        found.append(Neighbour(other, (other.visited_at - visit.visited_at).total_seconds() / 60, km))
    return sorted(found, key=lambda n: abs(n.minutes))[:limit]


def latest_kinds(*, visit_ids: list[int] | None = None) -> dict[int, str]:
    """The latest decision's kind per visit (of `visit_ids`, or of all decided visits)."""
    decisions = Decision.objects.all() if visit_ids is None else Decision.objects.filter(visit_id__in=visit_ids)
    latest: dict[int, str] = {}
    for visit_id, kind in decisions.order_by("visit_id", "decided_at", "id").values_list("visit_id", "kind"):
        latest[visit_id] = kind  # ordered oldest first: the last one seen wins
    return latest


def rejected_ids_of(*, visit_ids: list[int] | None = None) -> set[int]:
    """Visits whose latest decision is a rejection."""
    return {vid for vid, kind in latest_kinds(visit_ids=visit_ids).items() if kind == DecisionKind.REJECT}


def queue_items(*, visits) -> list[dict]:
    """A page of flagged visits as the queue shows them: the visit, its flags, its latest
    decision and the rep's nearby visits. Flags and decisions come prefetched, two queries
    for the page; the nearby visits take one query a visit."""
    page = visits.prefetch_related(
        "flags", Prefetch("decisions", queryset=Decision.objects.select_related("decided_by"))
    )
    return [
        {"visit": v, "flags": list(v.flags.all()), "last": next(iter(v.decisions.all()), None),
         "neighbours": neighbours(visit=v)}
        for v in page
    ]  # fmt: skip


def decisions_record(*, visit_ids: list[int], kind: str, note: str, user, visits: VisitQuerySet | None = None) -> int:
    """One new decision per visit (flagged, live ones only, of `visits`: the deciding user's, from
    `visits.access`; every live visit if None, as for the admin); returns how many were recorded."""
    pool = Visit.objects.all() if visits is None else visits
    flagged = list(
        pool.live().filter(id__in=visit_ids, flags__isnull=False)
        .values_list("id", flat=True).distinct()
    )  # fmt: skip
    with transaction.atomic():
        Decision.objects.bulk_create([Decision(visit_id=vid, kind=kind, note=note, decided_by=user) for vid in flagged])
    return len(flagged)

"""The review queue: flagged visits, their latest decision, and recording decisions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, F, Prefetch, QuerySet, prefetch_related_objects
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from visits.ingest.review_tally import ReviewFilter, review_counts
from visits.models import (
    RULE_BITS,
    AcceptReason,
    Decision,
    DecisionKind,
    Flag,
    Rep,
    RiskTier,
    Visit,
    VisitQuerySet,
    review_status_refresh,
    rules_mask,
)
from visits.review.day import STATUS_LABELS, days_of, url_pattern
from visits.review.rules import tier_scores
from visits.review.stored import reps_lock

REVIEW_STATES = {
    "awaiting": "Awaiting a decision",
    DecisionKind.FOLLOW_UP: "To follow up",
    DecisionKind.ACCEPT: "Accepted",
    DecisionKind.REJECT: "Rejected",
    "all": "All flagged",
}

# The queue's orders: riskiest first (then newest), or by time alone.
QUEUE_SORTS = {"risk": "Highest risk first", "newest": "Newest first", "oldest": "Oldest first"}
# Each sort as an order_by (ids last: a total order, for keyset pages and the CSV alike).
QUEUE_ORDERS = {
    "risk": ["-risk", "-visited_at", "-id"],
    "newest": ["-visited_at", "-id"],
    "oldest": ["visited_at", "id"],
}
# The queue's count stops there ("more than 10,000"): an exact count read the whole flagged index
# (a quarter of the visits), most of the first page's SQL at 1M; /review/reps/ counts them all.
QUEUE_COUNT_CAP = 10_000
RISK_VALUES = list(range(0, 101))  # every Visit.risk, ascending: the groups the risk order walks (views/pager.py)


def risk_groups(tiers: list[str] | None) -> list[int]:
    """The risks the queue's risk order walks as groups (views/pager.py): those of the chosen tiers."""
    return tier_scores(tiers) if tiers else RISK_VALUES


def flagged_visits(
    *, visits: QuerySet, rules: list[str] | None = None, state: str = "awaiting", tiers: list[str] | None = None
) -> QuerySet:
    """`visits` narrowed to the flagged ones (with a flag of one of `rules`, if given, and in one
    of the risk `tiers`, if given) in review `state`. All are kept on the visit (`flagged`,
    `flag_rules`, `risk_tier` by the flags, and `review_status` with each decision), so this
    reads the visits (their flagged indexes) alone."""
    chosen = visits.filter(flagged=True)
    if tiers:
        # The tier as a range of risks too, which the risk index leads with (the tier alone made
        # the index be read past every other tier's visits: 150 ms at 1M for medium and low).
        scores = tier_scores(tiers)
        chosen = (
            chosen.filter(risk_tier__in=tiers, risk__gte=scores[0], risk__lte=scores[-1]) if scores else chosen.none()
        )
    if rules:
        if not Flag.objects.filter(rule__in=rules).exists():  # a probe of the flags' rule index
            return chosen.none()  # nothing flagged by these rules: no scan of every flagged visit
        chosen = chosen.filter(GreaterThan(F("flag_rules").bitand(rules_mask(rules)), 0))
    if state == "awaiting":
        return chosen.filter(review_status__isnull=True)
    if state != "all":
        return chosen.filter(review_status=state)
    return chosen


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


def queue_items(*, visits: list[Visit]) -> list[dict]:
    """A page of flagged visits as the queue shows them: the visit, its flags, its latest
    decision and the rep's day (review/day.py). Flags, decisions, the days and their customers
    take one query each for the whole page."""
    page = list(visits)
    prefetch_related_objects(
        page, "flags", Prefetch("decisions", queryset=Decision.objects.select_related("decided_by"))
    )
    days = days_of(visits=page)
    # Each card's links and texts made here once (three {% url %} and two formatting filters a
    # card were a fifth of the page's rendering).
    visit_url, rep_url = url_pattern("visits:visit"), url_pattern("visits:rep")
    shown_in = timezone.get_current_timezone()
    return [
        {
            "visit": v, "flags": list(v.flags.all()), "last": next(iter(v.decisions.all()), None), "day": days[v.id],
            "url": visit_url.format(v.id), "rep_url": rep_url.format(v.rep_id),
            "when": v.visited_at.astimezone(shown_in).strftime("%Y-%m-%d %H:%M"),
            "status": STATUS_LABELS.get(v.verification_status, v.verification_status),
        }
        for v in page
    ]  # fmt: skip


@dataclass
class RepQueue:
    """One rep's part of the queue: how many visits, per tier and per rule (a visit flagged by two
    rules counts once in each)."""

    rep: Rep
    total: int = 0
    tiers: dict[str, int] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)

    @property
    def tier_counts(self) -> list[int]:
        return [self.tiers.get(tier, 0) for tier in RiskTier.values]


def rep_queues(*, visits: QuerySet | None, tallied: ReviewFilter | None = None) -> list[RepQueue]:
    """The queue `visits` (flagged_visits') per rep, most high-tier visits first, then most visits,
    then by name, each rule bit counted here: from the review tally's rows, when the same visits
    are `tallied` (review_tally.review_filter; `visits` may then be None), else one GROUP BY of the
    visits by rep, rules and tier (the columns of the flagged indexes, never the flags; 200 ms at 1M)."""
    by = ("rep_id", "flag_rules", "risk_tier")
    if tallied is not None:
        grouped: Iterable[tuple] = review_counts(chosen=tallied, by=by)
    else:
        assert visits is not None, "the queue's visits, or what the tally counts of them"
        grouped = visits.order_by().values_list(*by).annotate(n=Count("id"))
    rows: dict[int, RepQueue] = {}
    for rep_id, mask, tier, n in grouped:
        row = rows.get(rep_id)
        if row is None:
            row = rows[rep_id] = RepQueue(rep=Rep(id=rep_id))
        row.total += n
        row.tiers[tier] = row.tiers.get(tier, 0) + n
        for rule, bit in RULE_BITS.items():
            if mask & bit:
                row.rules[rule] = row.rules.get(rule, 0) + n
    for rep in Rep.objects.filter(id__in=list(rows)):
        rows[rep.id].rep = rep
    return sorted(rows.values(), key=lambda r: (-r.tiers.get(RiskTier.HIGH, 0), -r.total, r.rep.name, r.rep.id))


def decision_problems(*, kind: str, reason: str, note: str) -> dict[str, str]:
    """What is wrong with a decision, by field: an accept needs a reason from AcceptReason and
    "other" a note; a reject or a follow-up has no reason. Empty when it may be recorded."""
    if kind != DecisionKind.ACCEPT:
        return {"reason": "only an accept takes a reason"} if reason else {}
    if not reason:
        return {"reason": "an accept needs a reason: " + ", ".join(AcceptReason.values)}
    if reason not in AcceptReason.values:
        return {"reason": f"{reason} is not one of " + ", ".join(AcceptReason.values)}
    if reason == AcceptReason.OTHER and not note.strip():
        return {"note": "an accept for another reason needs a note saying what it is"}
    return {}


def decisions_record(
    *, visit_ids: list[int], kind: str, note: str, user, reason: str = "", visits: VisitQuerySet | None = None
) -> int:
    """One new decision per visit (flagged, live ones only, of `visits`: the deciding user's, from
    `visits.access`; every live visit if None, as for the admin); returns how many were recorded.
    ValueError when the decision lacks what decision_problems asks (the forms check it first)."""
    problems = decision_problems(kind=kind, reason=reason, note=note)
    if problems:
        raise ValueError("; ".join(f"{name}: {problem}" for name, problem in problems.items()))
    pool = Visit.objects.all() if visits is None else visits
    flagged = list(
        pool.live().filter(id__in=visit_ids, flags__isnull=False)
        .values_list("id", flat=True).distinct()
    )  # fmt: skip
    with transaction.atomic():
        Decision.objects.bulk_create(
            [Decision(visit_id=vid, kind=kind, reason=reason, note=note, decided_by=user) for vid in flagged]
        )
        review_status_refresh(visit_ids=flagged)
    return len(flagged)


# --- Accepting every low-tier visit of a filter at once -------------------------------------

BULK_CHUNK = 2000  # decisions per INSERT and visits per UPDATE: well under SQLite's 32,766 parameters


def low_tier_awaiting(*, visits: QuerySet, rules: list[str] | None = None) -> QuerySet:
    """The visits a bulk accept takes: of `visits` (a scope's), the flagged, low-tier ones awaiting
    a decision (with a flag of one of `rules`, if given); the queue's tier and review-state
    filters do not widen or change it."""
    return flagged_visits(visits=visits, rules=rules, state="awaiting", tiers=[RiskTier.LOW])


def low_tier_accept(*, visits: QuerySet, reason: str, note: str, user, rules: list[str] | None = None) -> int:
    """Accept (with `reason`) every visit of low_tier_awaiting, in one transaction; returns how
    many. For tens of thousands of visits:

    1. the reps of those visits are read and their rows locked (stored.reps_lock: the lock order
       of every writer of a rep's visits' review state); then the ids, of those reps' visits, are
       read from the queue's flagged index, locking the rows (PostgreSQL; NO KEY UPDATE, as a
       decision's insert only asks KEY SHARE), so a visit decided meanwhile by someone else is
       left out, not decided twice;
    2. the decisions are inserted BULK_CHUNK at a time (bulk_create);
    3. the same chunk's visits get review_status "accept" in one UPDATE: they awaited a
       decision, so this one is their latest (no need to read the decisions back).
    """
    problems = decision_problems(kind=DecisionKind.ACCEPT, reason=reason, note=note)
    if problems:
        raise ValueError("; ".join(f"{name}: {problem}" for name, problem in problems.items()))
    now = timezone.now()
    with transaction.atomic():
        awaiting = low_tier_awaiting(visits=visits, rules=rules)
        reps = sorted(set(awaiting.order_by().values_list("rep_id", flat=True).distinct()))
        reps_lock(rep_ids=reps)
        chosen = awaiting.filter(rep_id__in=reps).order_by("id").select_for_update(of=("self",), no_key=True)
        ids = list(chosen.values_list("id", flat=True))
        for at in range(0, len(ids), BULK_CHUNK):
            chunk = ids[at : at + BULK_CHUNK]
            Decision.objects.bulk_create(
                [Decision(visit_id=vid, kind=DecisionKind.ACCEPT, reason=reason, note=note, decided_by=user,
                          decided_at=now) for vid in chunk]
            )  # fmt: skip
            Visit.objects.filter(id__in=chunk).update(review_status=DecisionKind.ACCEPT)
    return len(ids)

"""Keeping the stored flags equal to the rules' findings.

Ingestion marks the reps whose visits changed (DirtyRep, in its own transaction);
flags_refresh() recomputes those reps' flags whole and writes only the differences, so the
stored flags always equal a computation from scratch (flags_rebuild() does that for all reps).
"""

from __future__ import annotations

from django.db import transaction

from visits.models import DirtyRep, Flag, Rep, Visit
from visits.review.rules import Finding, VisitFacts, rep_findings


def rep_visits(*, rep_id: int) -> list[VisitFacts]:
    rows = (
        Visit.objects.live().filter(rep_id=rep_id)
        .order_by("visited_at", "id")
        .values_list("id", "visited_at", "created_at", "latitude", "longitude", "verification_status",
                     "resource_type", "resource_id")
    )  # fmt: skip
    return [
        VisitFacts(vid, at, created, lat, lng, status, (rtype, rid if rid is not None else f"visit {vid}"))
        for vid, at, created, lat, lng, status, rtype, rid in rows
    ]


def reps_flag(*, rep_ids: list[int]) -> int:
    """Recompute the flags of these reps' visits and store the differences; returns changes."""
    changes = 0
    for rep_id in rep_ids:
        wanted = {(f.visit_id, f.rule): f for f in rep_findings(rep_visits(rep_id=rep_id))}
        stored = {(f.visit_id, f.rule): f for f in Flag.objects.filter(visit__rep_id=rep_id)}
        gone = [f.id for key, f in stored.items() if key not in wanted]
        if gone:
            Flag.objects.filter(id__in=gone).delete()
        fresh, changed = [], []
        for key, finding in wanted.items():
            old = stored.get(key)
            if old is None:
                fresh.append(
                    Flag(
                        visit_id=finding.visit_id, rule=finding.rule, numbers=finding.numbers, sentence=finding.sentence
                    )
                )
            elif old.numbers != finding.numbers or old.sentence != finding.sentence:
                old.numbers, old.sentence = finding.numbers, finding.sentence
                changed.append(old)
        Flag.objects.bulk_create(fresh)
        Flag.objects.bulk_update(changed, ["numbers", "sentence"])
        changes += len(gone) + len(fresh) + len(changed)
        # Visit.flagged follows (the tallies' triggers count it for the reports).
        now_flagged = {visit_id for visit_id, _ in wanted}
        was_flagged = set(Visit.objects.filter(rep_id=rep_id, flagged=True).values_list("id", flat=True))
        if now_flagged - was_flagged:
            Visit.objects.filter(id__in=list(now_flagged - was_flagged)).update(flagged=True)
        if was_flagged - now_flagged:
            Visit.objects.filter(id__in=list(was_flagged - now_flagged)).update(flagged=False)
    return changes


def flags_refresh(*, chunk: int = 50) -> tuple[int, int]:
    """Recompute the flags of every rep ingestion marked; (reps, flag changes)."""
    reps = changes = 0
    while True:
        with transaction.atomic():
            # skip_locked: two workers refreshing at once take different reps (PostgreSQL;
            # SQLite runs one writing transaction at a time anyway).
            dirty = DirtyRep.objects.select_for_update(skip_locked=True).order_by("rep_id")
            rep_ids = list(dirty.values_list("rep_id", flat=True)[:chunk])
            if not rep_ids:
                return reps, changes
            changes += reps_flag(rep_ids=rep_ids)
            DirtyRep.objects.filter(rep_id__in=rep_ids).delete()
            reps += len(rep_ids)


def flags_rebuild() -> tuple[int, int]:
    """Every rep's flags from scratch (e.g. after the thresholds changed)."""
    DirtyRep.objects.bulk_create(
        [DirtyRep(rep_id=r) for r in Rep.objects.values_list("id", flat=True)], ignore_conflicts=True
    )
    return flags_refresh()


def flags_expected() -> dict[tuple[int, str], Finding]:
    """Every flag as a computation from scratch would store it (for tests and checks)."""
    return {
        (f.visit_id, f.rule): f
        for rep_id in Rep.objects.values_list("id", flat=True)
        for f in rep_findings(rep_visits(rep_id=rep_id))
    }

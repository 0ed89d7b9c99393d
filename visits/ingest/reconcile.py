"""Backfilling recent stretches from the Core API: a gap's time range after a 410 (the Firehose's
events there are gone), and the daily reconciliation of the last days (Core API counts per day
against what is held, and whatever is missing stored).

The Core API has no date filter, so both walk each rep's visits newest first (sort_by
visited_at:desc) and stop at the first page reaching past the start of the stretch, less a margin
(BACKFILL_GAP_MARGIN_HOURS) for visits logged late. Both are backfill runs (ingest/backfill.py)
of their own kind, stored and flagged the same way.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from visits.ingest import backfill
from visits.ingest.tallies import local_day, zone_get
from visits.models import BackfillKind, BackfillPart, BackfillRun, BackfillState, Gap, ReconcileDay, Rep, Visit
from visits.sell.core import CoreClient
from visits.sell.core_items import HistoryVisit

log = logging.getLogger(__name__)

RECENT_SORT = "visited_at:desc"
RUNS_KEPT = timedelta(days=30)  # the reconciliation's own runs, for a look at a recent one


def recent_run(*, kind: str, since: datetime, gap: Gap | None = None) -> BackfillRun:
    """A run with one part per rep known, newest visits first, down to `since`."""
    with transaction.atomic():
        run = BackfillRun.objects.create(kind=kind, gap=gap)
        BackfillPart.objects.bulk_create(
            [BackfillPart(run=run, filters={"creator_id": rep_id}, sort=RECENT_SORT, stop_before=since)
             for rep_id in Rep.objects.order_by("id").values_list("id", flat=True)]
        )  # fmt: skip
    return run


# --- Gaps --------------------------------------------------------------------------------------


def gap_fill(*, gap: Gap, client: CoreClient | None = None) -> Gap:
    """Backfill one gap's time range by itself, and record how it went on the gap.

    1. With nothing held before the gap (no start), the whole history is the gap: that is
       backfill_visits' work, and the gap says so.
    2. Continue this gap's unfinished run, or start one from the gap's start less the margin.
    3. Walk it; on the gap, filled_at and the visits stored, or the error.
    """
    if gap.start is None:
        gap.fill_error = "nothing was held before this gap: the history backfill (manage.py backfill_visits) fills it"
        gap.save(update_fields=["fill_error"])
        return gap
    try:
        backfill.feature_check()
        run = BackfillRun.objects.filter(kind=BackfillKind.GAP, gap=gap, state=BackfillState.RUNNING).first()
        since = gap.start - timedelta(hours=settings.BACKFILL_GAP_MARGIN_HOURS)
        run = backfill.walk_guarded(run=run or recent_run(kind=BackfillKind.GAP, since=since, gap=gap), client=client)
    except Exception as exc:  # noqa: BLE001 - recorded on the gap, for the status page; the pull goes on
        gap.fill_error = str(exc)[:500] or type(exc).__name__
        gap.save(update_fields=["fill_error"])
        log.warning("gap %s: the fill from the Core API failed: %s", gap.id, gap.fill_error)
        return gap
    gap.filled_at, gap.filled_visits, gap.fill_error = timezone.now(), run.stored, ""
    gap.save(update_fields=["filled_at", "filled_visits", "fill_error"])
    return gap


def gaps_fill(*, client: CoreClient | None = None) -> list[Gap]:
    """Fill every gap of the visits stream not filled yet (pull.visits_pull after a sync that
    recorded one, and the daily task)."""
    return [gap_fill(gap=gap, client=client) for gap in Gap.objects.filter(stream="visits", filled_at__isnull=True)]


# --- The daily reconciliation --------------------------------------------------------------------


@dataclass
class DayFigures:
    day: date
    core_visits: int
    held_visits: int
    filled: int


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The first moment of `day` and of the day after, in DISPLAY_TIME_ZONE."""
    zone = zone_get(settings.DISPLAY_TIME_ZONE)
    start = datetime.combine(day, time(), tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)


def held_count(day: date) -> int:
    """Live visits held on `day`, by visited_at (the covering index's first column)."""
    start, end = day_bounds(day)
    return Visit.objects.live().filter(visited_at__gte=start, visited_at__lt=end).count()


def visits_reconcile(
    *, days: int | None = None, today: date | None = None, client: CoreClient | None = None
) -> list[DayFigures]:
    """Per day of the last `days` (BACKFILL_RECONCILE_DAYS) up to `today` (in DISPLAY_TIME_ZONE),
    count what the Core API lists against what is held, and store what is missing; each day's
    figures kept (ReconcileDay).

    1. Count the live visits held per day.
    2. Walk every rep's visits newest first down to the first day (a new run each time: the
       counts are made as it walks), counting the distinct visits listed per day and those
       stored of them.
    3. Record each day's figures, or the error on every day.
    """
    days = days or settings.BACKFILL_RECONCILE_DAYS
    zone = settings.DISPLAY_TIME_ZONE
    today = today or timezone.now().astimezone(zone_get(zone)).date()
    wanted = [today - timedelta(days=n) for n in range(days)]
    held = {day: held_count(day) for day in wanted}
    listed: dict[date, set[int]] = defaultdict(set)
    filled: dict[date, set[int]] = defaultdict(set)

    def counted(visits: list[HistoryVisit], stored_ids: list[int]) -> None:
        stored = set(stored_ids)
        for visit in visits:
            day = local_day(visited_at=visit.visited_at, zone_name=zone)
            if day in held:
                listed[day].add(visit.id)
                if visit.id in stored:
                    filled[day].add(visit.id)

    now = timezone.now()
    try:
        backfill.feature_check()
        BackfillRun.objects.filter(kind=BackfillKind.RECONCILE, state=BackfillState.RUNNING).update(
            state=BackfillState.FAILED, finished_at=now, error="stopped before its end; a later run replaced it"
        )
        run = recent_run(kind=BackfillKind.RECONCILE, since=day_bounds(wanted[-1])[0])
        backfill.walk_guarded(run=run, client=client, on_visits=counted)
    except Exception as exc:  # noqa: BLE001 - recorded for the status page; the schedule runs again tomorrow
        message = str(exc)[:500] or type(exc).__name__
        for day in wanted:
            ReconcileDay.objects.update_or_create(
                day=day, defaults={"held_visits": held[day], "checked_at": now, "error": message}
            )
        raise
    # Each day's run and its parts (one per rep) say nothing once the day's figures are kept.
    BackfillRun.objects.filter(kind=BackfillKind.RECONCILE, started_at__lt=now - RUNS_KEPT).exclude(id=run.id).delete()
    figures = [DayFigures(day, len(listed[day]), held[day], len(filled[day])) for day in wanted]
    for f in figures:
        ReconcileDay.objects.update_or_create(
            day=f.day,
            defaults={"core_visits": f.core_visits, "held_visits": f.held_visits, "filled": f.filled,
                      "checked_at": timezone.now(), "error": ""},
        )  # fmt: skip
    return figures

"""What follows the history backfill: a gap's time range filled from the Core API after a 410,
the daily reconciliation, and where history visits show (status page, /visits.csv, maps)."""

import csv
import io
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from visits.demo.generator import team_generate
from visits.ingest.pull import visits_pull
from visits.ingest.reconcile import visits_reconcile
from visits.ingest.sync import streams_sync
from visits.models import BackfillRun, Gap, ReconcileDay, SyncState, Visit, VisitSource
from visits.review.flags import flags_rebuild, flags_refresh
from visits.tasks import RECONCILE_SCHEDULE_NAME

from .conftest import DEMO_NOW, assert_flags_match, assert_tallies_match

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def team():
    return team_generate(seed=13, reps=5, weeks=2, history_weeks=2, now=DEMO_NOW)


def lose(*, after: datetime, field: str) -> dict[int, Visit]:
    """Take away the visits `field` after `after`, as if their events never arrived; the live ones."""
    gone = {v.id: v for v in Visit.objects.filter(**{f"{field}__gt": after})}
    Visit.objects.filter(id__in=list(gone)).delete()
    return {vid: v for vid, v in gone.items() if v.deleted_at is None}


def test_gap_after_a_410_is_filled_from_the_core_api_and_shown(serve, team, client, cast):
    server = serve(team)
    assert [r.error for r in streams_sync()] == ["", ""]
    cut = DEMO_NOW - timedelta(days=1)
    lost = lose(after=cut, field="created_at")
    assert lost
    SyncState.objects.filter(stream="visits").update(newest_event_time=cut)
    server.retention = timedelta(seconds=1)  # the lost events are gone from the Firehose
    server.expire_positions()
    pull = visits_pull()
    assert not pull.errors and pull.gaps_filled == 1
    gap = Gap.objects.get(stream="visits")
    assert gap.start == cut and gap.filled_at is not None and gap.fill_error == ""
    assert gap.filled_visits == len(lost)
    back = Visit.objects.filter(id__in=list(lost))
    assert back.count() == len(lost) and not back.exclude(source=VisitSource.CORE_API).exists()
    assert not back.filter(latitude__isnull=False).exists()
    flags_rebuild()
    assert_flags_match()
    client.force_login(cast.superuser)
    page = client.get("/status/").content.decode()
    assert f"filled from the Core API (statuses, no positions): {len(lost)} visits stored" in page


def test_gap_fill_failure_is_kept_on_the_gap_and_the_pull_goes_on(serve, team, client, cast):
    from visits.demo.core_api import CoreFaults

    server = serve(team)
    streams_sync()
    server.core.faults = CoreFaults(forbidden=frozenset({"visits"}))
    server.expire_positions()
    pull = visits_pull()
    assert not pull.errors and pull.gaps_filled == 0
    gap = Gap.objects.get(stream="visits")
    assert gap.filled_at is None and "no Core API visits" in gap.fill_error
    client.force_login(cast.superuser)
    assert "not filled" in client.get("/status/").content.decode()


def test_reconcile_counts_each_day_against_the_core_api_and_fills_it(serve, team, client, cast):
    serve(team)
    streams_sync()
    flags_refresh()
    lost = lose(after=DEMO_NOW - timedelta(days=3), field="visited_at")
    today = DEMO_NOW.date()
    days = [today - timedelta(days=n) for n in range(7)]
    listed = Counter(datetime.fromisoformat(v["visited_at"]).date() for v in team.core_visits().values())
    missing = Counter(v.visited_at.date() for v in lost.values())
    assert missing
    figures = visits_reconcile(today=today, days=7)
    assert [f.day for f in figures] == days
    for f in figures:
        assert (f.core_visits, f.held_visits, f.filled) == (
            listed[f.day],
            listed[f.day] - missing[f.day],
            missing[f.day],
        )
    assert ReconcileDay.objects.count() == 7
    assert Visit.objects.filter(id__in=list(lost)).count() == len(lost)
    again = visits_reconcile(today=today, days=7)
    assert all(f.filled == 0 and f.core_visits == f.held_visits for f in again)
    assert BackfillRun.objects.filter(kind="reconcile").count() == 2
    BackfillRun.objects.filter(kind="reconcile").update(started_at=DEMO_NOW - timedelta(days=40))
    visits_reconcile(today=today, days=7)
    assert BackfillRun.objects.filter(kind="reconcile").count() == 1  # runs older than 30 days go
    assert_tallies_match()
    client.force_login(cast.superuser)
    page = client.get("/status/").content.decode()
    assert "Daily reconciliation" in page and today.isoformat() in page


def test_setup_schedules_adds_the_daily_reconciliation_once(settings):
    settings.BACKFILL_RECONCILE_HOUR = 4
    call_command("setup_schedules")
    first = Schedule.objects.get(name=RECONCILE_SCHEDULE_NAME)
    call_command("setup_schedules")
    again = Schedule.objects.get(name=RECONCILE_SCHEDULE_NAME)
    assert first.schedule_type == Schedule.DAILY and again.func == "visits.tasks.reconcile_task"
    assert again.next_run == first.next_run and first.next_run.hour == 4  # not moved by a second setup


def csv_of(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(body[1:])))


def history_visit(visit_id: int, *, address: str, rep_id: int = 7) -> None:
    from visits.ingest.history import history_store
    from visits.sell.core_items import history_items_parse

    data = {
        "id": visit_id, "creator_id": rep_id, "outcome_id": 3, "resource_type": "lead", "resource_id": 5,
        "visited_at": "2026-01-05T10:00:00.000Z", "created_at": "2026-01-05T10:05:00.000Z",
        "updated_at": "2026-01-05T10:05:00.000Z", "summary": "", "rep_location_verification_status": "verified",
        "resource_address": address,
    }  # fmt: skip
    history_store(parsed=history_items_parse(items=[{"data": data}]), now=DEMO_NOW)
    flags_refresh()


def test_visits_csv_ends_with_source_and_the_address_formula_escaped(client, cast):
    history_visit(93_001, address='=HYPERLINK("http://x","y")')
    history_visit(93_002, address="12 Main St, Springfield")
    client.force_login(cast.manager)
    rows = csv_of(client.get("/visits.csv"))
    assert list(rows[0])[-7:] == [
        "flags",
        "review_status",
        "source",
        "resource_address",
        "customer_distance_m",
        "customer_location",
        "position_removed",
    ]
    by_id = {row["id"]: row for row in rows}
    assert (
        by_id["93001"]["source"] == "core_api" and by_id["93001"]["resource_address"] == '\'=HYPERLINK("http://x","y")'
    )
    assert by_id["93002"]["resource_address"] == "12 Main St, Springfield"
    assert by_id["93002"]["latitude"] == by_id["93002"]["longitude"] == ""


def test_map_leaves_history_out_and_says_how_many(serve, team, client, cast):
    serve(team)
    streams_sync()
    for n in range(3):
        history_visit(94_001 + n, address="1 Elm St")
    client.force_login(cast.manager)
    page = client.get("/map/").content.decode()
    assert "3 visits of these have no position (history from the Core API) and are not on the map." in page
    world = client.get("/map/clusters.json?bbox=-180,-90,180,90&zoom=0").json()
    assert world["total"] == Visit.objects.filter(latitude__isnull=False, deleted_at__isnull=True).count() > 0
    points = client.get("/map/points.json?bbox=-180,-90,180,90&zoom=13").json()
    assert not {94_001, 94_002, 94_003} & {row[6] for row in points["rows"]}
    only = client.get("/map/?rep=7").content.decode()
    assert "No visit with a location matches these filters" in only and "3 visits of these" in only


def test_daily_task_fills_the_last_week_and_says_so(serve, settings):
    from datetime import UTC

    from visits.ingest.sync import READ_ONLY_MESSAGE
    from visits.tasks import reconcile_task

    settings.SELL_ACCESS_TOKEN = ""
    assert reconcile_task() == READ_ONLY_MESSAGE
    data = team_generate(seed=17, reps=3, weeks=1, now=datetime.now(UTC))  # the task's week is the real one
    serve(data)
    streams_sync()
    lost = lose(after=datetime.now(UTC) - timedelta(days=4), field="visited_at")  # weekdays, whatever today
    assert lost
    summary = reconcile_task()
    assert f"7 days reconciled: {len(lost)} visits were missing, {len(lost)} stored" in summary
    assert ReconcileDay.objects.count() == 7 and Visit.objects.filter(id__in=list(lost)).count() == len(lost)


def test_gap_with_nothing_held_before_it_is_left_to_the_history_backfill():
    from visits.ingest.reconcile import gap_fill

    gap = gap_fill(gap=Gap.objects.create(stream="visits", start=None, end=DEMO_NOW, reason="410"))
    assert gap.filled_at is None and "manage.py backfill_visits" in gap.fill_error

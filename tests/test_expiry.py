"""A position that expires (410) anywhere in a sync: on the first page after a stored position, in
the fetch process mid-backlog, on the page that would be top, twice in one sync, or for ever.
The demo Firehose expires positions after N pages (Faults.expire_after_pages) or by retention."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from visits.demo.generator import team_generate
from visits.demo.server import Faults
from visits.ingest.sync import stream_sync
from visits.models import DeletedVisit, Gap, RejectedItem, SyncState, Visit
from visits.sell import events, fetcher, firehose

from .conftest import DEMO_NOW, TOKEN, assert_db_matches, command_env
from .test_settings import manage_check

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 10  # items a page: the small team's 155 visit events make 16 pages, the 16th says top


@pytest.fixture
def paged(settings):
    settings.SELL_PAGE_LIMIT = LIMIT


def visit_requests(server) -> list[tuple[str, int | None]]:
    """(position asked for, HTTP status) of each request to the visits stream, in order."""
    return [(r.query["position"], r.status) for r in server.requests if r.path == "/v3/visits/stream"]


def newest_time(items: list) -> datetime:
    """The newest event time among `items` that parse: what the sync holds after applying them."""
    return max(e.event_time for e in events.items_parse(stream="visits", items=items) if type(e) is events.Event)


def users_then_faults(server, faults: Faults) -> None:
    """Sync the users stream untouched, then turn the faults on: their page count starts at the
    visits stream's first page."""
    assert not stream_sync(stream="users").error
    server.faults = faults
    server.reset_requests()


def assert_exact_without_duplicates(data) -> None:
    assert_db_matches(data)
    live_or_deleted = [v for v, want in data.expected_visits().items() if want["snapshot"] is not None]
    assert Visit.objects.count() == len(live_or_deleted)
    # every restart from tail sends the rejects again: each is still kept once
    assert RejectedItem.objects.filter(stream="visits").count() == data.malformed_count["visits"]


@pytest.mark.parametrize(
    "after_pages",
    [1, 3, 8, 15],
    ids=["second-page-first-from-the-fetch-process", "after-a-few", "mid-backlog", "the-page-that-would-be-top"],
)
def test_expiry_mid_sync_from_tail_restarts_from_tail_and_ends_exact(serve, small_team, paged, after_pages):
    server = serve(small_team)
    users_then_faults(server, Faults(expire_after_pages=after_pages))
    started = datetime.now(UTC)
    result = stream_sync(stream="visits")
    assert not result.error and result.at_top and result.gaps == 1, result
    requests = visit_requests(server)
    # pages 1..N, the 410 on the next one (the fetch process asked), then tail again to top
    assert [status for _, status in requests[: after_pages + 1]] == [200] * after_pages + [410]
    assert [position for position, _ in requests].count("tail") == 2 and requests[after_pages + 1][0] == "tail"
    gap = Gap.objects.get()
    assert gap.stream == "visits" and "expired" in gap.reason
    assert gap.start == newest_time(small_team.visits_events[: after_pages * LIMIT])  # the newest event held
    assert started <= gap.end <= datetime.now(UTC)
    state = SyncState.objects.get(stream="visits")
    assert state.at_top and not state.last_error
    assert_exact_without_duplicates(small_team)


def test_expiry_mid_sync_from_a_stored_position_restarts_from_tail(serve, small_team, paged):
    server = serve(small_team)
    stream_sync(stream="users")
    first = stream_sync(stream="visits", max_seconds=0)  # one page, its position stored
    stored = SyncState.objects.get(stream="visits").position
    assert first.pages == 1 and not first.at_top and stored not in ("", "tail")
    server.faults = Faults(expire_after_pages=4)
    server.reset_requests()
    result = stream_sync(stream="visits")
    assert not result.error and result.at_top and result.gaps == 1, result
    requests = visit_requests(server)
    assert requests[0] == (stored, 200) and requests[4][1] == 410 and requests[5][0] == "tail"
    assert Gap.objects.get().start == newest_time(small_team.visits_events[: 5 * LIMIT])
    assert_exact_without_duplicates(small_team)


def test_a_stored_position_expired_between_syncs_then_again_mid_sync_restarts_twice(serve, small_team, paged):
    server = serve(small_team)
    stream_sync(stream="users")
    stream_sync(stream="visits", max_seconds=0)
    server.expire_positions()  # between syncs: the first request answers 410 (the parent's own fetch)
    server.faults = Faults(expire_after_pages=6)
    server.reset_requests()
    result = stream_sync(stream="visits")
    assert not result.error and result.at_top and result.gaps == 2, result
    requests = visit_requests(server)
    assert requests[0][1] == 410 and requests[1][0] == "tail"  # the stored position, then tail
    assert requests[7][1] == 410 and requests[8][0] == "tail"  # six pages later, again
    assert Gap.objects.count() == 2
    assert_exact_without_duplicates(small_team)


def test_a_second_expiry_in_the_same_sync_restarts_again(serve, small_team, paged):
    server = serve(small_team)
    users_then_faults(server, Faults(expire_after_pages=5, expire_times=2))
    result = stream_sync(stream="visits")
    assert not result.error and result.at_top and result.gaps == 2, result
    statuses = [status for _, status in visit_requests(server)]
    assert statuses.count(410) == 2 and statuses[5] == 410 and statuses[11] == 410
    first, second = Gap.objects.order_by("recorded_at", "id")
    # both start at the newest event held: a restart from tail re-delivers older events only
    assert first.start == second.start == newest_time(small_team.visits_events[: 5 * LIMIT])
    assert first.end <= second.end
    assert_exact_without_duplicates(small_team)


def test_endless_expiry_stops_at_the_bound_with_the_error_recorded(serve, small_team, paged, settings):
    settings.SELL_EXPIRY_RESTARTS = 2
    server = serve(small_team)
    users_then_faults(server, Faults(expire_after_pages=2, expire_times=0))  # every second page, for ever
    result = stream_sync(stream="visits")
    assert result.error_kind == "expired" and result.gaps == 2 and not result.at_top
    assert "expired again after 2 restart(s) from tail" in result.error and "SELL_EXPIRY_RESTARTS (2)" in result.error
    requests = visit_requests(server)
    # three runs of two pages and a 410: the start and the two restarts, then no more requests
    assert [status for _, status in requests] == [200, 200, 410] * 3
    assert [position for position, _ in requests].count("tail") == 3
    state = SyncState.objects.get(stream="visits")
    assert result.error in state.last_error and state.last_error_at is not None
    assert Gap.objects.count() == 2  # the third expiry stops the sync: the next run records its gap
    # the position kept is the last page applied (requests[-2] answered it): the first two pages
    assert state.position not in ("", "tail") and Visit.objects.count() + DeletedVisit.objects.count() > 0
    assert result.pages == 6 and state.pages == 6

    server.faults = Faults()  # the fault ends: the next run goes on from the kept position
    server.reset_requests()
    again = stream_sync(stream="visits")
    assert not again.error and again.at_top and again.gaps == 1  # the kept position had expired too
    assert visit_requests(server)[0] == (state.position, 410)
    assert not SyncState.objects.get(stream="visits").last_error
    assert_exact_without_duplicates(small_team)


@pytest.mark.slow  # starts the fetch process by itself
def test_the_fetch_process_raises_an_expiry_as_position_expired(serve, small_team):
    server = serve(small_team, faults=Faults(expire_after_pages=2))
    job = fetcher.FetchJob(
        stream="visits", position="tail", limit=LIMIT, base_url=server.url, token=TOKEN, timeout=5, max_retries=3,
        backoff_base=0.001, backoff_cap=0.01, rate_limit=0, min_year=1990, max_year=2100,
    )  # fmt: skip
    process = fetcher.FetchProcess()
    pages = []
    try:
        with pytest.raises(firehose.PositionExpired, match="the stored position has expired .*HTTP 410"):
            for page in process.pages(job=job):
                pages.append(page)
    finally:
        process.stop()
    assert len(pages) == 2 and not pages[-1].top  # what came before the 410 arrives first


def replayed(log: list[dict], delivered: range | list[int]) -> dict[int, dict]:
    """Visit id -> the event with the highest sequence among the delivered offsets of `log`:
    what a client that applied exactly those events must hold."""
    newest: dict[int, dict] = {}
    for offset in delivered:
        event = log[offset]
        visit_id = event["data"]["id"]
        if visit_id not in newest or event["meta"]["sequence"] > newest[visit_id]["meta"]["sequence"]:
            newest[visit_id] = event
    return newest


def test_expiry_by_retention_mid_backfill_records_the_gap_of_what_was_lost(serve, settings):
    """A first backfill from tail outlasts retention: its position points at events Sell has
    dropped. The restart from tail delivers what Sell still keeps; the gap covers what it lost."""
    settings.SELL_PAGE_LIMIT = LIMIT
    data = team_generate(seed=11, reps=6, weeks=1, now=DEMO_NOW)  # clean: every event has its time
    log = data.visits_events
    retention = timedelta(days=3650)  # everything, users too, until the clock jumps
    jump = retention - timedelta(days=4, hours=12)  # then the cutoff falls in the middle of the week
    read_pages = 3
    clock = {"armed": False, "pages": 0}

    def now():  # called once for each page asked for, once armed
        if clock["armed"]:
            clock["pages"] += 1
            if clock["pages"] > read_pages:
                return DEMO_NOW + jump
        return DEMO_NOW

    server = serve(data, retention=retention, clock=now)
    assert not stream_sync(stream="users").error
    clock["armed"] = True
    result = stream_sync(stream="visits")
    assert not result.error and result.at_top and result.gaps == 1, result
    requests = visit_requests(server)
    assert [status for _, status in requests[: read_pages + 1]] == [200] * read_pages + [410]  # Sell's answer
    assert requests[read_pages + 1][0] == "tail"

    cutoff = DEMO_NOW + jump - retention
    times = [datetime.fromisoformat(e["meta"]["event_time"]) for e in log]
    first_kept = next(i for i, t in enumerate(times) if t >= cutoff)  # where tail starts now
    read = read_pages * LIMIT
    lost = range(read, first_kept)
    assert len(lost) > 20  # the test means something: many events were dropped unread
    truth = data.expected_visits()
    touched = {log[i]["data"]["id"] for i in lost}  # visits with an event Sell dropped unread
    want = replayed(log, [*range(read), *range(first_kept, len(log))])
    lost_visits = touched - set(want)
    assert lost_visits, "some visits had all their events in the lost stretch"

    rows = {v.id: v for v in Visit.objects.all()}
    tombstones = dict(DeletedVisit.objects.values_list("id", "sequence"))

    def held(visit_id: int) -> tuple[int | None, bool] | None:
        """(sequence, deleted) as stored, or None when nothing is held of the visit."""
        row = rows.get(visit_id)
        if row is not None:
            return row.sequence, row.deleted_at is not None
        return (tombstones[visit_id], True) if visit_id in tombstones else None

    # Where the gap lost nothing, the generator's truth; where it did, exactly what was delivered.
    for visit_id, wanted in truth.items():
        if visit_id not in touched:
            assert held(visit_id) == (wanted["sequence"], wanted["deleted"]), visit_id
    for visit_id in touched:
        event = want.get(visit_id)
        expected = None if event is None else (event["meta"]["sequence"], event["meta"]["event_type"] == "deleted")
        assert held(visit_id) == expected, visit_id
    for visit_id, wanted in truth.items():  # and their fields, for the live ones
        snap = wanted["snapshot"]
        if visit_id in touched or snap is None or wanted["deleted"]:
            continue
        row = rows[visit_id]
        got = (row.summary, row.rep_id, row.outcome_id, row.latitude, row.longitude)
        location, outcome = snap["sales_rep_location"], snap.get("outcome") or {}
        assert got == (
            snap["summary"] or "",
            snap["creator_id"],
            outcome.get("id"),
            location["latitude"],
            location["longitude"],
        ), visit_id

    gap = Gap.objects.get()
    assert gap.start == max(times[:read])  # the newest event held when the position expired
    assert gap.start <= min(times[i] for i in lost) and max(times[i] for i in lost) <= gap.end


def sync_command(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "sync_visits"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sync_visits_survives_an_expiry_in_the_middle_of_a_first_backfill(serve, small_team):
    """The fault of the issue: a sync from tail whose position expires mid-way exited 1."""
    server = serve(small_team, faults=Faults(expire_after_pages=4))  # the users stream's page is one of them
    done = sync_command(command_env(server.url))
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("sync complete: users:") and "1 gap(s)" in last
    assert Gap.objects.filter(stream="visits").count() == 1
    assert_exact_without_duplicates(small_team)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sync_visits_exits_1_saying_so_when_positions_keep_expiring(serve, small_team):
    server = serve(small_team, faults=Faults(expire_after_pages=1, expire_times=0))
    done = sync_command(command_env(server.url, SELL_EXPIRY_RESTARTS="2"))
    assert done.returncode == 1
    lines = [line for line in done.stderr.strip().splitlines() if "retrying" not in line]
    assert len(lines) == 1 and lines[0].startswith("CommandError: visits stream: the stream position expired again")
    assert "after 2 restart(s) from tail" in lines[0]
    state = SyncState.objects.get(stream="visits")
    assert state.last_error in lines[0] and Gap.objects.filter(stream="visits").count() == 2
    assert SyncState.objects.get(stream="users").at_top  # a stream's own failure: users went on to top


ALL_FAULTS = dict(
    empty_pages=0.2, short_pages=0.3, redeliver=0.3, shuffle=0.5, server_errors=0.1, rate_limit=0.1,
    drop_connection=0.05, truncate=0.05,
)  # fmt: skip


@pytest.mark.slow
def test_every_fault_and_expiries_mid_sync_end_exact(serve, full_team):
    """The fault run of tests/test_fault_run.py with positions expiring every 25 pages, twice:
    a restart from tail meets the next expiry before top, and the third run gets there."""
    server = serve(full_team, faults=Faults(**ALL_FAULTS))
    assert not stream_sync(stream="users").error
    server.faults = Faults(**ALL_FAULTS, expire_after_pages=25, expire_times=2, seed=3)
    result = stream_sync(stream="visits")
    assert not result.error and result.at_top and result.gaps == 2, result
    assert Gap.objects.filter(stream="visits").count() == 2
    assert_exact_without_duplicates(full_team)


@pytest.mark.slow
def test_the_demo_command_expires_positions_after_n_pages():
    server = subprocess.Popen(
        [sys.executable, "manage.py", "demo_firehose", "--port", "0", "--reps", "3", "--weeks", "1",
         "--expire-after-pages", "2", "--expire-times", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        banner = server.stdout.readline()
        assert "expire_after_pages=2 expire_times=0" in banner
        url = banner.split(" on ", 1)[1].split()[0]
        headers = {"Authorization": "Bearer demo-token"}

        def get(position: str) -> requests.Response:
            return requests.get(f"{url}/v3/visits/stream", params={"position": position, "limit": 5}, headers=headers)

        first = get("tail").json()["meta"]["position"]
        second = get(first).json()["meta"]["position"]  # the second page: every position so far expires
        assert get(second).status_code == 410 and get(first).status_code == 410
        third = get("tail").json()["meta"]["position"]
        fourth = get(third).json()["meta"]["position"]  # two more pages: and again (for ever)
        assert get(fourth).status_code == 410
    finally:
        server.terminate()
        server.communicate(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "101", "many"])
def test_a_restart_bound_that_cannot_work_stops_startup_naming_it(value):
    """0 would leave a position that expired between syncs stuck for ever: at least one restart."""
    result = manage_check(SELL_EXPIRY_RESTARTS=value)
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr
    assert "SELL_EXPIRY_RESTARTS" in result.stderr.strip().splitlines()[-1]

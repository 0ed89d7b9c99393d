"""Ingestion behaviour, one by one, over HTTP against the demo Firehose."""

import json
from datetime import timedelta

import pytest

from visits.demo.generator import MALFORMED_FIRST_ID, USER_DAMAGE, VISIT_DAMAGE, team_generate
from visits.demo.server import Faults
from visits.ingest import pages
from visits.ingest.sync import stream_sync, streams_sync
from visits.models import DeletedVisit, Gap, Outcome, RejectedItem, Rep, SyncState, Visit
from visits.sell import events, firehose

from .conftest import DEMO_NOW, assert_db_matches

pytestmark = pytest.mark.django_db


def sync_all():
    results = streams_sync()
    assert [r.error for r in results] == ["", ""], results
    return results


def test_full_sync_matches_generator_and_reaches_top(serve, small_team):
    serve(small_team)
    users, visits = sync_all()
    assert users.at_top and visits.at_top
    assert_db_matches(small_team)
    state = SyncState.objects.get(stream="visits")
    assert state.at_top and state.position not in ("", "tail")
    assert state.events_applied == visits.applied > 0
    assert state.newest_event_time is not None


def test_requests_carry_auth_accept_user_agent_and_limit(serve, small_team, settings):
    settings.SELL_PAGE_LIMIT = 37
    server = serve(small_team)
    sync_all()
    stream_requests = [r for r in server.requests if r.path.endswith("/stream")]
    assert stream_requests
    for record in stream_requests:
        headers = {k.lower(): v for k, v in record.headers.items()}
        assert headers["authorization"] == "Bearer test-token"
        assert headers["accept"] == "application/json"
        assert headers["user-agent"].startswith(f"visitsdash/{settings.VERSION}")
        assert record.query["limit"] == "37"
    assert stream_requests[0].query["position"] == "tail"


def test_start_position_top_takes_only_new_events(serve, settings):
    data = team_generate(seed=3, reps=3, weeks=1, now=DEMO_NOW)
    settings.SELL_START_POSITION = "top"
    server = serve(data)
    sync_all()
    assert Visit.objects.count() == 0
    fresh = data.append_live(count=3, now=DEMO_NOW + timedelta(minutes=5))
    server.append("visits", fresh)
    sync_all()
    assert set(Visit.objects.values_list("id", flat=True)) == {e["data"]["id"] for e in fresh}


def test_empty_and_short_pages_with_top_false_are_followed(serve, small_team):
    server = serve(small_team, faults=Faults(empty_pages=0.5, short_pages=0.5))
    users, visits = sync_all()
    assert_db_matches(small_team)
    assert visits.pages > len(small_team.visits_events) / 100  # many more pages than full ones
    assert any(r.status == 200 for r in server.requests)


def test_resume_from_stored_position_applies_nothing_twice(serve, small_team):
    server = serve(small_team)
    first = stream_sync(stream="visits", max_seconds=0)  # stops after one page
    assert first.pages == 1 and not first.at_top
    position = SyncState.objects.get(stream="visits").position
    server.reset_requests()
    sync_all()
    visit_requests = [r for r in server.requests if r.path == "/v3/visits/stream"]
    assert visit_requests[0].query["position"] == position
    assert SyncState.objects.get(stream="visits").events_skipped == 0
    assert_db_matches(small_team)


def test_failure_inside_a_page_rolls_back_items_and_position(serve, small_team, monkeypatch):
    serve(small_team)
    stream_sync(stream="users")
    stream_sync(stream="visits", max_seconds=0)
    before_position = SyncState.objects.get(stream="visits").position
    before_count = Visit.objects.count()
    real = pages.rejects_store

    def explode(**kwargs):
        real(**kwargs)
        raise RuntimeError("disk full")

    monkeypatch.setattr(pages, "rejects_store", explode)
    result = stream_sync(stream="visits", max_seconds=0)
    assert result.error_kind == "crashed" and "RuntimeError: disk full" in result.error
    state = SyncState.objects.get(stream="visits")
    assert state.position == before_position and state.lock_owner == ""
    assert "RuntimeError: disk full" in state.last_error and state.last_error_at  # the status page shows it
    assert Visit.objects.count() == before_count
    monkeypatch.undo()
    sync_all()
    assert_db_matches(small_team)
    assert SyncState.objects.get(stream="visits").last_error == ""


def test_redeliveries_and_stale_events_are_no_ops(serve, small_team, settings):
    settings.SELL_PAGE_LIMIT = 10  # many pages, so that re-deliveries happen
    serve(small_team, faults=Faults(redeliver=0.6, shuffle=0.5))
    users, visits = sync_all()
    assert visits.skipped > 0
    assert_db_matches(small_team)
    # A replay of the whole stream from tail changes nothing.
    SyncState.objects.filter(stream="visits").update(position="tail")
    snapshot = list(Visit.objects.order_by("id").values())
    replay = stream_sync(stream="visits")
    assert replay.applied == 0 and replay.skipped > 0
    assert list(Visit.objects.order_by("id").values_list("id", "sequence")) == [
        (v["id"], v["sequence"]) for v in snapshot
    ]


def test_updates_store_the_newest_snapshot(serve, small_team):
    serve(small_team)
    sync_all()
    updated = {
        e["data"]["id"]
        for e in small_team.visits_events
        if isinstance(e.get("meta"), dict) and e["meta"].get("event_type") == "updated"
    }
    assert updated, "the generator should emit updated events"
    expected = small_team.expected_visits()
    for visit in Visit.objects.filter(id__in=updated):
        assert visit.sequence == expected[visit.id]["sequence"] > 1
        assert visit.summary == (expected[visit.id]["snapshot"]["summary"] or "")


@pytest.mark.slow
def test_deleted_events_with_snapshot_or_id_only_mark_visits_deleted(serve, full_team):
    # The full team: a week of six reps can hold a single delete (the generator deletes 1%).
    serve(full_team)
    sync_all()
    deletes = [
        e for e in full_team.visits_events
        if isinstance(e.get("meta"), dict) and e["meta"].get("event_type") == "deleted"
    ]  # fmt: skip
    kinds = {set(e["data"]) == {"id"} for e in deletes}
    assert kinds == {True, False}, "both shapes of deleted event should be exercised"
    for event in deletes:
        visit = Visit.objects.filter(id=event["data"]["id"]).first()
        if visit is None:
            assert DeletedVisit.objects.filter(id=event["data"]["id"]).exists()
        else:
            assert visit.deleted_at is not None


def test_delete_of_unseen_visit_blocks_its_older_replay(serve):
    data = team_generate(seed=5, reps=2, weeks=1, updates=False, deletes=False, now=DEMO_NOW)
    victim = data.visits_events[0]
    deleted = {
        "data": {"id": victim["data"]["id"]},
        "meta": {**victim["meta"], "event_type": "deleted", "sequence": 2, "event_id": "x" * 22},
    }
    data_only_delete = team_generate(seed=5, reps=2, weeks=1, updates=False, deletes=False, now=DEMO_NOW)
    data_only_delete.visits_events[:] = [deleted]
    server = serve(data_only_delete)
    stream_sync(stream="visits")
    assert DeletedVisit.objects.filter(id=victim["data"]["id"], sequence=2).exists()
    # Now the original created event (sequence 1) shows up, e.g. after a restart from tail.
    server.append("visits", [victim])
    stream_sync(stream="visits")
    assert not Visit.objects.filter(id=victim["data"]["id"]).exists()


def test_malformed_items_are_kept_with_reasons_and_rest_applied(serve, small_team):
    serve(small_team, faults=Faults(redeliver=0.5))
    sync_all()
    assert_db_matches(small_team)
    stored = RejectedItem.objects.filter(stream="visits")
    assert stored.count() == small_team.malformed_count["visits"]
    assert RejectedItem.objects.filter(stream="users").count() == small_team.malformed_count["users"]
    reasons = " | ".join(stored.values_list("reason", flat=True))
    for fragment in ["data is not an object", "verification_status", "latitude", "visited_at", "event_type"]:
        assert fragment in reasons
    for item in stored:
        json.loads(item.raw)  # kept verbatim, as JSON
    assert SyncState.objects.get(stream="visits").items_rejected == stored.count()


HOSTILE_VISITS = {
    "verification_status_list": "verification_status",
    "visited_at_year_one": "visited_at '0001-01-01T00:00:00+01:00' is outside the years",
    "event_time_year_9999": "meta.event_time '9999-12-31T23:59:59-01:00' is outside the years",
    "summary_lone_surrogate": "summary holds text that cannot be stored as UTF-8",
    "outcome_name_lone_surrogate": "outcome.name holds text that cannot be stored as UTF-8",
}
HOSTILE_USERS = {
    "name_lone_surrogate": "name holds text that cannot be stored as UTF-8",
    "status_object": "status is not text",
    "event_time_year_one": "meta.event_time '0001-01-01T00:00:00+01:00' is outside the years",
}


def test_hostile_items_mid_page_are_rejected_and_every_good_item_lands(serve, settings):
    """Items that once raised in parsing or in writing (stopping the stream for good) sit in the
    middle of pages, the first one (parsed here) and later ones (parsed by the fetch process)."""
    settings.SELL_PAGE_LIMIT = 10
    data = team_generate(seed=5, reps=3, weeks=1, now=DEMO_NOW)
    hostile = team_generate(seed=5, reps=3, weeks=1, malformed=True, now=DEMO_NOW)

    def by_damage(events, names):  # the generator gives the item of names[i] the id MALFORMED_FIRST_ID + i
        found = {e["data"].get("id"): e for e in events if isinstance(e.get("data"), dict)}
        return lambda name: found[MALFORMED_FIRST_ID + names.index(name)]

    visit_item = by_damage(hostile.visits_events, list(VISIT_DAMAGE))
    user_item = by_damage(hostile.users_events, [None, *USER_DAMAGE])
    for at, name in zip((5, 14, 25, 36, 47), HOSTILE_VISITS, strict=False):
        data.visits_events.insert(at, visit_item(name))
    for at, name in zip((1, 3, 5), HOSTILE_USERS, strict=False):
        data.users_events.insert(at, user_item(name))
    serve(data)
    users, visits = sync_all()
    assert users.at_top and visits.at_top and visits.pages > 5
    assert_db_matches(data)  # every good item arrived, no hostile one did
    for stream, expected in (("visits", HOSTILE_VISITS), ("users", HOSTILE_USERS)):
        stored = list(RejectedItem.objects.filter(stream=stream))
        assert len(stored) == len(expected), [r.reason for r in stored]
        reasons = " | ".join(r.reason for r in stored)
        for fragment in expected.values():
            assert fragment in reasons, (fragment, reasons)
        for item in stored:
            assert json.loads(item.raw)["data"]["id"] >= MALFORMED_FIRST_ID  # kept as JSON, escaped where need be
    assert "\\udfff" in RejectedItem.objects.get(reason__contains="outcome.name").raw


def test_a_crash_is_recorded_shown_and_does_not_block_the_other_stream(serve, small_team, monkeypatch):
    from visits.tasks import sync_streams_task

    serve(small_team)

    def crash(**kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(pages, "users_apply", crash)
    summary = sync_streams_task(session_seconds=0)
    assert "users: the sync stopped on an unexpected error (KeyError: 'a bug')" in summary
    users = SyncState.objects.get(stream="users")
    assert "KeyError: 'a bug'" in users.last_error and users.position in ("", "tail") and users.lock_owner == ""
    assert Visit.objects.count() > 0 and SyncState.objects.get(stream="visits").at_top  # visits went on
    monkeypatch.undo()
    sync_all()
    assert_db_matches(small_team)


@pytest.mark.parametrize(
    "item, reason",
    [
        ("just text", "item is not an object"),
        ({"data": [], "meta": {}}, "data is not an object"),
        ({"data": {"id": 1}, "meta": "x"}, "meta is not an object"),
        ({"data": {}, "meta": {"event_type": "created", "sequence": 1, "event_time": "2026-01-01T00:00:00Z"}}, "no id"),
        (
            {
                "data": {"id": True},
                "meta": {"event_type": "created", "sequence": 1, "event_time": "2026-01-01T00:00:00Z"},
            },
            "data.id",
        ),
        (
            {
                "data": {"id": 2**70},
                "meta": {"event_type": "created", "sequence": 1, "event_time": "2026-01-01T00:00:00Z"},
            },
            "out of range",
        ),
        (
            {
                "data": {"id": 1},
                "meta": {"event_type": "created", "sequence": "1", "event_time": "2026-01-01T00:00:00Z"},
            },
            "meta.sequence",
        ),
        (
            {"data": {"id": 1}, "meta": {"event_type": "created", "sequence": 1, "event_time": "2026-01-01"}},
            "no time zone",
        ),
    ],
)
def test_visit_parse_rejects_with_a_reason(item, reason):
    with pytest.raises(events.Rejected, match=reason):
        events.visit_parse(item)


def test_visit_parse_rejects_bad_snapshots(small_team):
    expected = small_team.expected_visits()
    good = next(
        e for e in small_team.visits_events
        if isinstance(e.get("data"), dict) and e["data"].get("id") in expected
        and e["meta"]["event_type"] == "created" and e["data"]["sales_rep_location"]["latitude"] is not None
    )  # fmt: skip
    events.visit_parse(good)  # the baseline is accepted

    def variant(path, value):
        item = json.loads(json.dumps(good))
        target = item
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return item

    cases = {
        ("data", "sales_rep_location", "latitude"): (91.0, "latitude"),
        ("data", "sales_rep_location", "longitude"): (-181, "longitude"),
        ("data", "visited_at"): ("yesterday", "visited_at"),
        ("data", "created_at"): (None, "created_at"),
        ("data", "creator_id"): ("7", "creator_id"),
        ("data", "outcome"): ("Interested", "outcome"),
        ("data", "resource_type"): ("", "resource_type"),
    }
    for path, (value, reason) in cases.items():
        with pytest.raises(events.Rejected, match=reason):
            events.visit_parse(variant(path, value))
    lone = variant(("data", "sales_rep_location", "longitude"), None)
    with pytest.raises(events.Rejected, match="only one of"):
        events.visit_parse(lone)
    nul = events.visit_parse(variant(("data", "summary"), "a\x00b"))
    assert nul.fields["summary"] == "ab"


def test_unknown_creator_gets_a_rep_named_later_by_users_stream(serve, small_team):
    serve(small_team)
    stream_sync(stream="visits")  # visits before users: creators are unknown
    assert Rep.objects.count() > 0 and not Rep.objects.exclude(name="").exists()
    stream_sync(stream="users")
    assert_db_matches(small_team)
    absent = [rid for rid, r in small_team.expected_reps().items() if r["name"] == ""]
    assert absent, "the generator leaves one rep out of the users stream"
    assert set(Rep.objects.filter(name="").values_list("id", flat=True)) == set(absent)


def test_outcome_takes_the_newest_name(serve, small_team):
    serve(small_team, faults=Faults(shuffle=1.0))
    sync_all()
    assert dict(Outcome.objects.values_list("id", "name")) == small_team.expected_outcomes()
    names_by_id = {}
    for e in small_team.visits_events:
        outcome = e.get("data", {}).get("outcome") if isinstance(e.get("data"), dict) else None
        if isinstance(outcome, dict):
            names_by_id.setdefault(outcome["id"], set()).add(outcome["name"])
    assert any(len(names) > 1 for names in names_by_id.values()), "one outcome should be renamed"


def test_server_errors_rate_limits_and_dropped_connections_are_retried(serve, small_team, settings):
    settings.SELL_PAGE_LIMIT = 10  # enough requests for every fault to strike
    serve(small_team, faults=Faults(server_errors=0.2, rate_limit=0.2, drop_connection=0.1))
    users, visits = sync_all()
    assert users.retries + visits.retries > 0
    assert_db_matches(small_team)


def test_retry_after_is_honoured(serve, small_team):
    server = serve(small_team, faults=Faults(rate_limit=1.0, retry_after=7))
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        server.faults.rate_limit = 0.0 if len(sleeps) >= 2 else 1.0

    client = firehose.FirehoseClient(sleep=fake_sleep)
    page = client.page_fetch(stream="visits", position="tail", limit=10)
    assert page.items
    assert sleeps == [7.0, 7.0]


def test_backoff_is_capped_exponential_with_jitter():
    client = firehose.FirehoseClient(backoff_base=1.0, backoff_cap=8.0, token="x")
    delays = [[client.backoff_delay(attempt=a) for _ in range(200)] for a in range(6)]
    assert all(0.5 <= d <= 1.0 for d in delays[0])
    assert all(2.0 <= d <= 4.0 for d in delays[2])
    assert all(4.0 <= d <= 8.0 for d in delays[5])  # capped
    assert len({round(d, 6) for d in delays[3]}) > 100  # jittered


def test_timeouts_are_retried(serve, small_team, settings):
    server = serve(small_team, faults=Faults(slow=1.0))
    settings.SELL_TIMEOUT = 0.05
    calls = []

    def on_retry(problem, delay):
        calls.append(problem)
        server.faults.slow = 0.0

    client = firehose.FirehoseClient(on_retry=on_retry)
    # the fault's latency is random up to 0.2 s; keep trying until one request times out
    for _ in range(20):
        client.page_fetch(stream="visits", position="tail", limit=5)
        if calls:
            break
        server.faults.slow = 1.0
    assert any("Timeout" in c for c in calls)


def test_refused_token_stops_and_records_a_clear_error(serve, small_team, settings):
    serve(small_team)
    settings.SELL_ACCESS_TOKEN = "wrong"
    users, *rest = streams_sync()
    assert users.error_kind == "token" and rest == []
    assert "the access token was refused" in users.error
    state = SyncState.objects.get(stream="users")
    assert "the access token was refused" in state.last_error and state.last_error_at
    assert Visit.objects.count() == 0


def test_a_client_without_a_token_says_so_and_sends_nothing(serve, small_team):
    """The sync never gets this far without a token (a read-only archive, tests/test_read_only.py);
    the client, used alone, still refuses to send a request that cannot succeed."""
    server = serve(small_team)
    with pytest.raises(firehose.NoToken, match="set SELL_ACCESS_TOKEN"):
        firehose.FirehoseClient(token="").page_fetch(stream="users", position="tail", limit=5)
    assert server.requests == []


def test_expired_position_records_a_gap_and_restarts_from_tail(serve, small_team):
    server = serve(small_team)
    stream_sync(stream="users")
    stream_sync(stream="visits", max_seconds=0)
    held = Visit.objects.order_by("-event_time").values_list("event_time", flat=True).first()
    server.expire_positions()
    server.reset_requests()
    result = stream_sync(stream="visits")
    assert result.gaps == 1 and not result.error
    gap = Gap.objects.get()
    assert gap.stream == "visits" and gap.start == held and gap.end > held
    assert "expired" in gap.reason
    positions = [r.query.get("position") for r in server.requests if r.path == "/v3/visits/stream"]
    assert positions[1] == "tail"
    assert_db_matches(small_team)


def test_other_client_errors_are_recorded_and_stop(serve, small_team):
    serve(small_team)
    SyncState.objects.create(stream="visits", position="not-a-position-this-server-issued")
    result = stream_sync(stream="visits")
    assert result.error_kind == "rejected" and "HTTP 400" in result.error
    assert "HTTP 400" in SyncState.objects.get(stream="visits").last_error


def test_unreachable_api_gives_up_after_retries(settings):
    settings.SELL_API_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    settings.SELL_ACCESS_TOKEN = "x"
    settings.SELL_MAX_RETRIES = 2
    settings.SELL_BACKOFF_BASE = 0.001
    result = stream_sync(stream="visits")
    assert result.error_kind == "unreachable"
    assert "unreachable after 2 retries" in result.error
    assert result.retries == 2


@pytest.mark.slow
def test_memory_stays_flat_whatever_the_stream_length(serve):
    """Peak memory of a sync does not grow with the stream: a bounded batch at a time."""
    import tracemalloc

    peaks = {}
    for weeks in (24, 72):  # both long enough to fill the prefetch queue and several batches
        data = team_generate(seed=9, reps=25, weeks=weeks, updates=False, deletes=False, now=DEMO_NOW)
        server = serve(data)
        Visit.objects.all().delete()
        SyncState.objects.all().delete()
        tracemalloc.start()
        result = stream_sync(stream="visits")
        peaks[weeks] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        server.stop()
        assert result.at_top and Visit.objects.count() > 0
    assert Visit.objects.count() > 36 * 1000  # three times the events of the shorter stream
    assert peaks[72] < 1.25 * peaks[24], peaks


def test_forbidden_token_is_refused_too(settings):
    """403 (e.g. a token without Firehose access) stops like 401, saying so."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Forbidden(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(
                {"errors": [{"error": {"code": "insufficient_scope", "details": "Firehose needs the Growth plan"}}]}
            ).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.SELL_API_URL = f"http://127.0.0.1:{server.server_port}"
        settings.SELL_ACCESS_TOKEN = "x"
        result = stream_sync(stream="users")
    finally:
        server.shutdown()
    assert result.error_kind == "token"
    assert "the access token was refused (HTTP 403: insufficient_scope: Firehose needs the Growth plan)" == result.error


def test_two_deletes_of_an_unseen_visit_in_one_batch_keep_the_newest():
    SyncState.objects.create(stream="visits", lock_owner="me")
    deletes = [
        {
            "data": {"id": 77},
            "meta": {"event_type": "deleted", "sequence": seq, "event_time": f"2026-11-0{seq}T10:00:00Z"},
        }
        for seq in (3, 2)
    ]
    result = pages.page_apply(
        stream="visits",
        events=events.items_parse(stream="visits", items=deletes),
        position="p1",
        at_top=True,
        owner="me",
        lease=timedelta(seconds=60),
    )
    assert (result.applied, result.skipped) == (2, 0)
    assert list(DeletedVisit.objects.values_list("id", "sequence")) == [(77, 3)]


def test_a_snapshot_after_an_id_only_delete_in_one_batch_wins():
    """Restored in Sell (a newer snapshot after an id-only delete, both in one batch): the visit
    is live, with the newest sequence, whether it was held or unseen before."""
    SyncState.objects.create(stream="visits", lock_owner="me")

    def item(visit_id, sequence, *, snapshot):
        meta = {"event_type": "updated" if snapshot else "deleted", "sequence": sequence,
                "event_time": f"2026-11-0{sequence}T10:00:00Z"}  # fmt: skip
        location = {"latitude": None, "longitude": None, "verification_status": "verified"}
        data = {"id": visit_id, "creator_id": 5, "resource_type": "lead", "resource_id": 1, "summary": "",
                "visited_at": "2026-11-01T09:00:00Z", "created_at": "2026-11-01T09:05:00Z", "outcome": None,
                "sales_rep_location": location}  # fmt: skip
        return {"data": data if snapshot else {"id": visit_id}, "meta": meta}

    def apply(items):
        pages.page_apply(stream="visits", events=events.items_parse(stream="visits", items=items), position="p",
                         at_top=True, owner="me", lease=timedelta(seconds=60))  # fmt: skip

    apply([item(1, 1, snapshot=True)])
    apply(
        [item(1, 2, snapshot=False), item(1, 3, snapshot=True), item(2, 2, snapshot=False), item(2, 3, snapshot=True)]
    )
    assert set(Visit.objects.values_list("id", "sequence", "deleted_at")) == {(1, 3, None), (2, 3, None)}
    assert not DeletedVisit.objects.exists()


def test_the_parser_knows_the_same_statuses_as_the_model():
    from visits.models import VerificationStatus

    assert events.STATUSES == set(VerificationStatus.values)

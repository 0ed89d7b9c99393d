"""The demo Firehose: its generated data is believable and self-consistent, and its HTTP server
speaks Sell's protocol (envelopes, positions, errors) and injects each fault as documented.
No database: every test talks to a real server on 127.0.0.1 or inspects generated data.
"""

import base64
import json
import math
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from visits.demo import server as server_module
from visits.demo.generator import MALFORMED_FIRST_ID, USER_DAMAGE, team_generate
from visits.demo.server import DemoFirehose, Faults

from .demo_clock import GENERATED, data_digest

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 3, 14, 16, 0, tzinfo=UTC)
TOKEN = "demo-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STATUSES = {"verified", "resource_location_too_far", "location_unknown", "location_services_disabled"}


@pytest.fixture(scope="module")
def data():
    return team_generate(now=NOW, malformed=True)


@pytest.fixture(scope="module")
def clean():
    return team_generate(now=NOW)


@pytest.fixture(scope="module")
def shared_firehose(data):
    with DemoFirehose(data, token=TOKEN) as server:
        yield server


@pytest.fixture
def firehose(shared_firehose):
    """The module's server with faults off and no requests recorded; tests that change its
    log or expire its positions start their own."""
    shared_firehose.faults = Faults()
    shared_firehose.reset_requests()
    return shared_firehose


@pytest.fixture
def session():
    with requests.Session() as http:
        yield http


def stream_get(session, server, stream, **params):
    return session.get(f"{server.url}/v3/{stream}/stream", params=params, headers=AUTH, timeout=5)


def stream_walk(session, server, stream, *, limit=100, max_requests=2_000):
    """Follow positions from tail until top; return every item received, in order."""
    position, items = "tail", []
    for _ in range(max_requests):
        response = stream_get(session, server, stream, position=position, limit=limit)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        position = body["meta"]["position"]
        if body["meta"]["top"]:
            return items
    raise AssertionError(f"{stream} never reached top")


def canonical(event):
    return json.dumps(event, sort_keys=True)


def event_key(event):
    return event["data"]["id"], event["meta"]["sequence"]


def error_of(response):
    body = response.json()
    assert body["meta"]["type"] == "errors"
    assert body["meta"]["logref"] == response.headers["X-Request-Id"]
    assert body["meta"]["http_status"].startswith(str(response.status_code))
    return body["errors"][0]["error"]


def haversine_km(a, b):
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def parse(moment):
    return datetime.strptime(moment, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def created_visits(data):
    """Data of every created visit event (malformed items excluded)."""
    return [
        e["data"]
        for e in data.visits_events
        if isinstance(e.get("data"), dict)
        and isinstance(e["data"].get("id"), int)
        and e["data"]["id"] < MALFORMED_FIRST_ID
        and e["meta"]["event_type"] == "created"
    ]


# --- protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}])
def test_missing_or_wrong_token_is_401_with_sell_error_body(firehose, session, headers):
    response = session.get(f"{firehose.url}/v3/visits/stream?position=tail", headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    error = error_of(response)
    assert error["code"] == "unauthorized"
    assert error["details"] == "Required access token is missing, malformed, expired, or invalid."


def test_unknown_path_is_404_incorrect_path(firehose, session):
    response = session.get(f"{firehose.url}/v3/deals/stream?position=tail", headers=AUTH, timeout=5)
    assert response.status_code == 404
    assert error_of(response)["code"] == "incorrect_path"


def test_every_response_has_a_fresh_request_id(firehose, session):
    ids = {stream_get(session, firehose, "users", position="tail").headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize(
    "params, named",
    [
        ({}, "position"),
        ({"position": "garbage!"}, "position"),
        ({"position": "dmlzaXRzLDEw"}, "position"),  # base64 of "visits,10": not one of ours
        ({"position": "tail", "limit": "0"}, "limit"),
        ({"position": "tail", "limit": "101"}, "limit"),
        ({"position": "tail", "limit": "ten"}, "limit"),
    ],
)
def test_bad_position_or_limit_is_400_invalid_param(firehose, session, params, named):
    response = stream_get(session, firehose, "visits", **params)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_param"
    assert named in error["message"]


def test_a_position_from_an_earlier_run_of_the_demo_is_expired(firehose, session):
    """bin/demo started again on the same database: the stored position is beyond anything this
    server issued, as an old position of Sell's is to Sell, so it is 410, not a bad parameter."""
    position = stream_get(session, firehose, "visits", position="tail").json()["meta"]["position"]
    _, offset, epoch, nonce = base64.urlsafe_b64decode(position + "=" * (-len(position) % 4)).decode().split(",")
    for later in (f"visits,{int(offset) + 10**6},{epoch},{nonce}", f"visits,{offset},{int(epoch) + 3},{nonce}"):
        token = base64.urlsafe_b64encode(later.encode()).decode().rstrip("=")
        response = stream_get(session, firehose, "visits", position=token)
        assert response.status_code == 410, later
        assert error_of(response)["code"] == "gone"


def test_position_from_another_stream_is_400(firehose, session):
    users_position = stream_get(session, firehose, "users", position="tail").json()["meta"]["position"]
    response = stream_get(session, firehose, "visits", position=users_position)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_param"


@pytest.mark.parametrize("stream", ["visits", "users"])
def test_walk_from_tail_to_top_returns_exactly_the_log(firehose, session, data, stream):
    items = stream_walk(session, firehose, stream)
    assert items == getattr(data, f"{stream}_events")


def test_default_limit_is_25_and_next_link_continues_the_stream(firehose, session, data):
    first = stream_get(session, firehose, "visits", position="tail").json()
    assert first["items"] == data.visits_events[:25]
    assert first["meta"]["top"] is False
    link = first["meta"]["links"]["next"]
    assert link == f"{firehose.url}/v3/visits/stream?position={first['meta']['position']}"
    second = session.get(link, headers=AUTH, timeout=5).json()
    assert second["items"] == data.visits_events[25:50]


def test_top_returns_no_items_and_only_later_events(clean, session):
    with DemoFirehose(clean, token=TOKEN) as server:
        body = stream_get(session, server, "visits", position="top").json()
        assert body["items"] == [] and body["meta"]["top"] is True
        new = {"data": {"id": 1}, "meta": {"type": "visit", "event_type": "deleted", "sequence": 9}}
        server.append("visits", [new])
        after = stream_get(session, server, "visits", position=body["meta"]["position"]).json()
    assert after["items"] == [new] and after["meta"]["top"] is True


def test_a_page_of_100_is_served_whole(firehose, session, data):
    # How fast it comes is a figure bench/ingest.py prints, not something a test may assert.
    for _ in range(3):
        items = stream_get(session, firehose, "visits", position="tail", limit=100).json()["items"]
        assert len(items) == 100
        assert items == data.visits_events[:100]


def test_requests_are_recorded_and_can_be_reset(firehose, session):
    stream_get(session, firehose, "visits", position="tail", limit=3)
    record = firehose.requests[-1]
    assert (record.method, record.path, record.query, record.status) == (
        "GET",
        "/v3/visits/stream",
        {"position": "tail", "limit": "3"},
        200,
    )
    assert record.headers["Authorization"] == f"Bearer {TOKEN}"
    firehose.reset_requests()
    assert firehose.requests == []


# --- faults --------------------------------------------------------------------------------


def test_empty_and_short_pages_never_skip_an_event(firehose, session, data):
    firehose.faults = Faults(empty_pages=0.5, short_pages=0.5, seed=3)
    items = stream_walk(session, firehose, "visits")
    assert items == data.visits_events
    assert len(firehose.requests) > 2 * math.ceil(len(items) / 100)  # the faults really bit


def test_empty_page_says_not_top_while_events_remain(firehose, session):
    firehose.faults = Faults(empty_pages=1.0)
    body = stream_get(session, firehose, "visits", position="tail").json()
    assert body["items"] == [] and body["meta"]["top"] is False


def test_redeliver_and_shuffle_keep_per_id_order_and_lose_nothing(firehose, session, clean):
    faults = Faults(redeliver=0.5, shuffle=0.7, short_pages=0.3, seed=5)
    with DemoFirehose(clean, token=TOKEN, faults=faults) as server:
        items = stream_walk(session, server, "visits")
    log = clean.visits_events
    assert len(items) > len(log)  # something was redelivered
    assert {canonical(e) for e in items} == {canonical(e) for e in log}
    first_seen = list(dict.fromkeys(event_key(e) for e in items))
    assert first_seen != [event_key(e) for e in log]  # something was shuffled
    sequences = defaultdict(list)
    for visit_id, sequence in first_seen:
        sequences[visit_id].append(sequence)
    assert all(seen == sorted(seen) for seen in sequences.values())


def test_expired_positions_answer_410_and_tail_still_works(clean, session):
    with DemoFirehose(clean, token=TOKEN) as server:
        position = stream_get(session, server, "visits", position="tail").json()["meta"]["position"]
        server.expire_positions()
        response = stream_get(session, server, "visits", position=position)
        assert response.status_code == 410
        error = error_of(response)
        assert error["code"] == "gone" and "72 hours" in error["details"]
        assert stream_get(session, server, "visits", position="tail").status_code == 200


def test_retention_drops_old_events_and_expires_positions_pointing_at_them(clean, session):
    cutoff = NOW - timedelta(hours=72)
    with DemoFirehose(clean, token=TOKEN, retention=timedelta(hours=72), clock=lambda: NOW) as server:
        for stream in ("visits", "users"):
            log = getattr(clean, f"{stream}_events")
            kept = [e for e in log if parse(e["meta"]["event_time"]) >= cutoff]
            assert stream_walk(session, server, stream) == kept
            assert len(kept) < len(log) / 5
        tail = stream_get(session, server, "visits", position="tail").json()["meta"]["position"]
        server.advance_clock(24 * 3600)
        response = stream_get(session, server, "visits", position=tail)
        assert response.status_code == 410
        assert error_of(response)["code"] == "gone"


def test_rate_limit_is_429_with_retry_after_only_when_configured(firehose, session):
    firehose.faults = Faults(rate_limit=1.0)
    response = stream_get(session, firehose, "visits", position="tail")
    assert response.status_code == 429
    assert error_of(response)["code"] == "rate_limit_exceeded"
    assert "Retry-After" not in response.headers
    firehose.faults.retry_after = 7
    assert stream_get(session, firehose, "visits", position="tail").headers["Retry-After"] == "7"


def test_server_errors_are_500_and_503_with_error_bodies(firehose, session):
    firehose.faults = Faults(server_errors=1.0, seed=1)
    codes = set()
    for _ in range(20):
        response = stream_get(session, firehose, "visits", position="tail")
        codes.add((response.status_code, error_of(response)["code"]))
    assert codes == {(500, "server_error"), (503, "temporarily_unavailable")}


def test_dropped_connection_raises_a_connection_error(firehose, session):
    firehose.faults = Faults(drop_connection=1.0)
    with pytest.raises(requests.ConnectionError):
        stream_get(session, firehose, "visits", position="tail")
    assert firehose.requests[-1].status is None


def test_slow_adds_latency_below_a_fifth_of_a_second(firehose, session, monkeypatch):
    """The delays the fault asks for are recorded, not timed: the machine's speed must not
    decide (bench/ingest.py prints how long the server takes)."""
    delays = []
    monkeypatch.setattr(server_module, "time", SimpleNamespace(sleep=delays.append, monotonic=time.monotonic))
    firehose.faults = Faults(slow=1.0, seed=2)
    for _ in range(8):
        assert stream_get(session, firehose, "users", position="tail").status_code == 200
    assert len(delays) == 8
    assert max(delays) < 0.25
    assert statistics.mean(delays) > 0.03


def test_fault_probabilities_are_validated():
    with pytest.raises(ValueError):
        Faults(empty_pages=1.5)


# --- generator -----------------------------------------------------------------------------


def test_generator_is_deterministic_for_a_seed_and_now():
    first = team_generate(seed=11, reps=8, weeks=2, now=NOW)
    again = team_generate(seed=11, reps=8, weeks=2, now=NOW)
    other = team_generate(seed=12, reps=8, weeks=2, now=NOW)
    assert first.visits_events == again.visits_events and first.users_events == again.users_events
    assert first.expected_visits() == again.expected_visits()
    assert first.visits_events != other.visits_events


@pytest.mark.slow
def test_the_generator_follows_its_clock_not_todays_date():
    """The same clock gives the same data whether the machine believes it is 2019 or 2031:
    nothing in the generator reads today's date (tests/demo_clock.py fakes every clock Python
    has in a fresh process, before the generator is imported)."""
    here = data_digest(team_generate(**GENERATED, now=NOW))
    for today in ("2019-02-11T22:00:00+00:00", "2031-07-04T09:00:00+00:00"):
        run = subprocess.run(
            [sys.executable, "-m", "tests.demo_clock", today, NOW.isoformat()],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        assert seen["default_now"] == today, "the false today did not reach the generator"
        assert seen["digest"] == here, f"the data changed with today's date ({today})"


def test_volumes_and_mixes_are_in_the_intended_ranges(clean):
    visits = created_visits(clean)
    assert 4_000 <= len(visits) <= 6_000
    statuses = Counter(v["sales_rep_location"]["verification_status"] for v in visits)
    assert set(statuses) == STATUSES
    share = {status: count / len(visits) for status, count in statuses.items()}
    assert 0.75 <= share["verified"] <= 0.85
    assert 0.08 <= share["resource_location_too_far"] <= 0.12
    assert 0.01 <= share["location_unknown"] <= 0.08 and 0.01 <= share["location_services_disabled"] <= 0.08
    assert len({v["outcome"]["id"] for v in visits}) == 8
    assert {v["resource_type"] for v in visits} == {"lead", "contact", "prospect_and_customer"}
    customers = Counter((v["resource_type"], v["resource_id"]) for v in visits)
    assert sum(1 for n in customers.values() if n > 1) > len(customers) / 2  # reps revisit
    types = Counter(e["meta"]["event_type"] for e in clean.visits_events)
    assert 0.02 <= (types["updated"] / len(visits)) <= 0.06
    assert 0.005 <= (types["deleted"] / len(visits)) <= 0.02


def test_visits_happen_on_weekdays_in_us_working_hours(clean):
    for visit in created_visits(clean):
        visited_at = parse(visit["visited_at"])
        assert visited_at.weekday() < 5 and 12 <= visited_at.hour <= 23, visit
        assert clean.now - timedelta(weeks=8) <= visited_at <= parse(visit["created_at"]) <= clean.now


def test_rep_positions_agree_with_their_verification_status(clean):
    for visit in created_visits(clean):
        location = visit["sales_rep_location"]
        customer = clean.customers[(visit["resource_type"], visit["resource_id"])]
        status = location["verification_status"]
        if status in ("location_unknown", "location_services_disabled"):
            assert location["latitude"] is None and location["longitude"] is None
            continue
        km = haversine_km(customer, (location["latitude"], location["longitude"]))
        if status == "verified":
            assert km <= 0.15, visit
        else:
            assert 1 <= km <= 30, visit


def test_expected_visits_match_a_replay_of_the_log(clean):
    replay = {}
    for event in clean.visits_events:
        visit_id, sequence = event_key(event)
        state = replay.setdefault(visit_id, {"deleted": False, "sequence": 0, "snapshot": None})
        assert sequence > state["sequence"]  # per id, the log is in sequence order
        state["sequence"] = sequence
        state["deleted"] = event["meta"]["event_type"] == "deleted"
        if set(event["data"]) != {"id"}:
            state["snapshot"] = event["data"]
    assert replay == clean.expected_visits()
    assert any(s["deleted"] and s["snapshot"] is None for s in replay.values())
    deletes = [e for e in clean.visits_events if e["meta"]["event_type"] == "deleted"]
    assert any(set(e["data"]) == {"id"} for e in deletes) and any(len(e["data"]) > 1 for e in deletes)


def test_updates_carry_old_values_of_changed_keys_only(clean):
    latest = {}
    updates = 0
    for event in clean.visits_events + clean.users_events:
        data, meta = event["data"], event["meta"]
        key = (meta["type"], data["id"])
        if meta["event_type"] == "updated":
            updates += 1
            old = latest[key]
            assert meta["previous"] == {k: old[k] for k in data if data[k] != old[k]} != {}
        if set(data) != {"id"}:
            latest[key] = data
    assert updates > 50


def test_event_envelopes_look_like_sell(clean):
    for event in clean.visits_events + clean.users_events:
        meta = event["meta"]
        assert meta["event_cause"] == "interaction" and len(meta["event_id"]) == 22
        assert parse(meta["event_time"]) <= clean.now
    times = [e["meta"]["event_time"] for e in clean.visits_events]
    assert times == sorted(times)
    assert len({e["meta"]["event_id"] for e in clean.visits_events}) == len(clean.visits_events)


def test_expected_reps_cover_users_and_unknown_creators(clean):
    reps = clean.expected_reps()
    users = {e["data"]["id"] for e in clean.users_events}
    creators = {v["creator_id"] for v in created_visits(clean)}
    assert set(reps) == users | creators
    unknown = creators - users
    assert len(unknown) == 1
    assert reps[unknown.pop()] == {"name": "", "email": "", "status": "", "role": ""}
    names = {rep["name"] for rep in reps.values()}
    assert "Jonathan Smith" in names and "Jon Smith" not in names
    assert Counter(rep["status"] for rep in reps.values())["inactive"] == 1
    managers = {
        e["data"]["id"]
        for e in clean.users_events
        if e["meta"]["event_type"] == "created" and e["data"]["role"] == "admin"
    }
    assert managers and not managers & creators
    promoted = [e for e in clean.users_events if e["meta"].get("previous") == {"role": "user"}]
    assert len(promoted) == 1 and reps[promoted[0]["data"]["id"]]["role"] == "admin"


def test_renamed_outcome_newest_name_wins(clean):
    names = {}
    for event in clean.visits_events:
        outcome = event["data"].get("outcome")
        if outcome:
            names.setdefault(outcome["id"], []).append(outcome["name"])
    assert names[4103][0] == "No answer" and names[4103][-1] == "No answer / closed"
    assert clean.expected_outcomes() == {outcome_id: seen[-1] for outcome_id, seen in names.items()}


def test_tricky_summaries_survive_to_the_expected_state(clean):
    summaries = [s["snapshot"]["summary"] for s in clean.expected_visits().values() if s["snapshot"]]
    assert any("," in s and '"' in s and "\n" in s for s in summaries)
    assert any(not s.isascii() for s in summaries)
    assert any("</script><img src=x onerror=alert(1)>${alert(1)}" in s for s in summaries)
    assert any(s.startswith('=HYPERLINK("http://x")') for s in summaries)


def test_malformed_items_are_extra_and_never_touch_real_visits(data, clean):
    known = {canonical(e) for e in clean.visits_events}
    extra = [e for e in data.visits_events if canonical(e) not in known]
    assert len(extra) == data.malformed_count["visits"] >= 8
    assert len(data.users_events) - len(clean.users_events) == data.malformed_count["users"] == 1 + len(USER_DAMAGE)
    ids = [e["data"].get("id") for e in extra if isinstance(e.get("data"), dict)]
    assert not set(ids) & set(clean.expected_visits())
    assert data.expected_visits() == clean.expected_visits()
    dumped = [json.dumps(e) for e in extra]
    for marker in (
        '"teleported"',
        '"latitude": 123.4',
        '"visited_at": "yesterday"',
        '"event_type": "exploded"',
        '"id": "abc"',
        '"data": "',
    ):
        assert sum(marker in d for d in dumped) == 1, marker
    assert sum("meta" not in e for e in extra) == 1
    assert sum("meta" in e and "sequence" not in e["meta"] for e in extra) == 1
    assert sum(isinstance(e["data"], dict) and "id" not in e["data"] for e in extra) == 1


def test_each_suspicious_pattern_is_present(clean):
    assert sorted(clean.suspicious.values()) == ["impossible_travel", "late_bursts", "shared_coordinates", "too_far"]
    by_rep = defaultdict(list)
    for visit in created_visits(clean):
        by_rep[visit["creator_id"]].append(visit)
    rep_of = {pattern: rep_id for rep_id, pattern in clean.suspicious.items()}

    def too_far_rate(visits):
        return sum(v["sales_rep_location"]["verification_status"] == "resource_location_too_far" for v in visits) / len(
            visits
        )

    assert 0.4 <= too_far_rate(by_rep[rep_of["too_far"]]) <= 0.6
    normal = [rep_id for rep_id in by_rep if rep_id not in clean.suspicious]
    assert all(too_far_rate(by_rep[rep_id]) < 0.2 for rep_id in normal)

    def jumps(visits):
        located = sorted(
            (v for v in visits if v["sales_rep_location"]["latitude"] is not None), key=lambda v: v["visited_at"]
        )
        for a, b in zip(located, located[1:], strict=False):
            hours = (parse(b["visited_at"]) - parse(a["visited_at"])).total_seconds() / 3600
            km = haversine_km(
                *[(v["sales_rep_location"]["latitude"], v["sales_rep_location"]["longitude"]) for v in (a, b)]
            )
            if hours <= 1 and km > 300:
                yield a, b

    assert len(list(jumps(by_rep[rep_of["impossible_travel"]]))) >= 3
    assert not any(list(jumps(by_rep[rep_id])) for rep_id in normal)

    def shared_spots(visits):
        customers_at = defaultdict(set)
        for v in visits:
            location = v["sales_rep_location"]
            if location["latitude"] is not None:
                spot = (round(location["latitude"], 5), round(location["longitude"], 5))
                customers_at[spot].add(v["resource_id"])
        return [spot for spot, customers in customers_at.items() if len(customers) >= 3]

    assert shared_spots(by_rep[rep_of["shared_coordinates"]])
    assert not any(shared_spots(by_rep[rep_id]) for rep_id in normal)

    late = by_rep[rep_of["late_bursts"]]
    assert all(parse(v["created_at"]) - parse(v["visited_at"]) > timedelta(hours=24) for v in late)
    created = sorted(parse(v["created_at"]) for v in late)
    assert any(created[i + 4] - created[i] <= timedelta(minutes=10) for i in range(len(created) - 4))
    assert all(
        parse(v["created_at"]) - parse(v["visited_at"]) < timedelta(minutes=30)
        for rep_id in normal
        for v in by_rep[rep_id]
    )


def test_append_live_adds_visits_at_now_and_the_server_streams_them(session):
    live = team_generate(seed=3, reps=8, weeks=1, now=NOW)
    before = len(live.visits_events)
    events = live.append_live(count=2, now=NOW + timedelta(minutes=5))
    assert live.visits_events[before:] == events
    assert {e["data"]["created_at"] for e in events} == {"2025-03-14T16:05:00Z"}
    assert all(live.expected_visits()[e["data"]["id"]]["sequence"] == 1 for e in events)
    with DemoFirehose(live, token=TOKEN, live_interval=0.05, clock=lambda: NOW) as server:
        top = stream_get(session, server, "visits", position="top").json()["meta"]["position"]
        new, deadline = [], time.monotonic() + 30  # the deadline only ends a hung test
        while len(new) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            new = stream_get(session, server, "visits", position=top).json()["items"]
    assert len(new) >= 2
    assert all(e["data"]["id"] in live.expected_visits() for e in new)

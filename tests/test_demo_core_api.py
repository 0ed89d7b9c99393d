"""The demo's Core API v2: its history is drawn beside the Firehose's window without changing it,
and its server answers with v2's shapes, filters, sorts, next_page links and 100-page cap, and
each CoreFaults knob. No database: a real server on 127.0.0.1 and the generator's truth."""

from collections import Counter
from datetime import UTC, datetime

import pytest
import requests

from visits.demo.core_api import CoreFaults
from visits.demo.generator import FIRST_VISIT_ID, HEAVY_REP_ID, HOSTILE_ADDRESSES, team_generate
from visits.demo.server import DemoFirehose

from .demo_clock import GENERATED, data_digest

NOW = datetime(2025, 3, 14, 16, 0, tzinfo=UTC)
TOKEN = "demo-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
V2_VISIT_KEYS = {
    "id", "creator_id", "outcome_id", "resource_type", "resource_id", "visited_at", "created_at", "updated_at",
    "summary", "rep_location_verification_status", "resource_address",
}  # fmt: skip
HEAVY = 12_000


@pytest.fixture(scope="module")
def data():
    """Six reps, a week in the Firehose, four weeks of history and a rep over the cap."""
    return team_generate(**GENERATED, now=NOW, history_weeks=4, heavy_rep_visits=HEAVY)


@pytest.fixture(scope="module")
def shared_server(data):
    with DemoFirehose(data, token=TOKEN) as server:
        yield server


@pytest.fixture
def server(shared_server):
    shared_server.core.faults = CoreFaults()
    shared_server.reset_requests()
    return shared_server


@pytest.fixture
def session():
    with requests.Session() as http:
        http.headers.update(AUTH)
        yield http


def listing(session, server, path, **params):
    response = session.get(f"{server.url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def all_pages(session, server, path, **params):
    """Every item's data, following next_page links from page 1."""
    items, url, query = [], f"{server.url}{path}", {**params, "per_page": 100}
    while url:
        body = session.get(url, params=query, timeout=10).json()
        items += [item["data"] for item in body["items"]]
        url, query = body["meta"]["links"].get("next_page"), None
    return items


# --- the generator -------------------------------------------------------------------------


def test_history_and_heavy_rep_leave_the_firehose_window_unchanged(data):
    plain = team_generate(**GENERATED, now=NOW)
    with_history = team_generate(**GENERATED, now=NOW, history_weeks=4)
    assert data_digest(with_history) == data_digest(plain)
    assert data.users_events == plain.users_events
    assert data.visits_events == plain.visits_events
    assert data.expected_visits() == plain.expected_visits()
    assert data.expected_reps() == plain.expected_reps()


def test_history_ids_are_below_the_window_and_grow_with_creation(data):
    window = set(data.expected_visits())
    history = {vid: v for vid, v in data.core_visits().items() if vid not in window}
    assert len(history) > HEAVY
    assert max(history) < FIRST_VISIT_ID <= min(vid for vid in window if vid >= FIRST_VISIT_ID)
    by_id = [history[vid] for vid in sorted(history)]
    assert all(a["created_at"] <= b["created_at"] for a, b in zip(by_id, by_id[1:], strict=False))
    window_start = min(e["meta"]["event_time"] for e in data.visits_events if isinstance(e.get("meta"), dict))
    assert max(v["created_at"] for v in history.values()) < window_start.replace("Z", ".000Z")


def test_core_visits_never_hold_a_visit_the_firehose_deleted(data):
    deleted = {vid for vid, truth in data.expected_visits().items() if truth["deleted"]}
    assert deleted
    assert not deleted & data.core_visits().keys()
    assert set(data.core_deleted_visits()) <= deleted
    live = {vid for vid, truth in data.expected_visits().items() if not truth["deleted"]}
    assert live <= data.core_visits().keys()


def test_history_has_the_windows_reps_statuses_and_outcomes(data):
    window = set(data.expected_visits())
    history = [v for vid, v in data.core_visits().items() if vid not in window and v["creator_id"] != HEAVY_REP_ID]
    window_reps = {t["snapshot"]["creator_id"] for t in data.expected_visits().values() if t["snapshot"]}
    assert {v["creator_id"] for v in history} == window_reps
    statuses = Counter(v["rep_location_verification_status"] for v in history)
    assert statuses.most_common(1)[0][0] == "verified" and len(statuses) == 4
    assert {v["outcome_id"] for v in history} <= set(data.core_outcomes())


def test_heavy_rep_needs_both_sort_orders_for_one_leaf(data):
    heavy = [v for v in data.core_visits().values() if v["creator_id"] == HEAVY_REP_ID]
    assert len(heavy) >= HEAVY - 1  # the window's one "prehistoric" delete may be one of them
    leaves = Counter((v["rep_location_verification_status"], v["outcome_id"], v["resource_type"]) for v in heavy)
    (leaf, size), (_, runner_up) = leaves.most_common(2)
    assert leaf == ("verified", 4101, "lead")
    assert 10_000 < size <= 20_000
    assert runner_up < 10_000
    assert HEAVY_REP_ID in data.core_users()
    assert HEAVY_REP_ID not in {e["data"].get("id") for e in data.users_events if isinstance(e.get("data"), dict)}


def test_every_visit_has_an_address_and_a_few_are_hostile(data):
    addresses = {v["resource_address"] for v in data.core_visits().values()}
    assert "" not in addresses
    assert all(", United States" in a or "États-Unis" in a for a in addresses)
    assert set(HOSTILE_ADDRESSES) & addresses


def test_core_users_have_teams_managers_and_a_director(data):
    users = data.core_users()
    reps = {vid["snapshot"]["creator_id"] for vid in data.expected_visits().values() if vid["snapshot"]}
    assert reps <= users.keys()
    directors = [u for u in users.values() if u["reports_to"] is None]
    assert len(directors) == 1 and directors[0]["group"] is None
    assert {u["group"]["name"] for u in users.values() if u["group"]} == {"Central", "East"}
    for user in users.values():
        assert user["team_name"] and user["timezone"].startswith("UTC")
        assert user["reports_to"] is None or user["reports_to"] in users
    in_firehose = {e["data"]["id"] for e in data.users_events if isinstance(e.get("data"), dict) and "id" in e["data"]}
    quiet = set(users) - reps - in_firehose - {HEAVY_REP_ID, directors[0]["id"]}
    assert quiet, "a manager with no visits, unknown to the Firehose"
    firehose_reps = data.expected_reps()
    for user_id, rep in firehose_reps.items():
        if rep["name"]:
            assert users[user_id]["name"] == rep["name"] and users[user_id]["status"] == rep["status"]


def test_core_outcomes_include_unused_ones(data):
    used = {v["outcome_id"] for v in data.core_visits().values()}
    assert set(data.core_outcomes()) - used


# --- the server ----------------------------------------------------------------------------


def test_visits_page_has_v2_shapes(server, session):
    body = listing(session, server, "/v2/visits")
    assert body["meta"]["type"] == "collection"
    assert body["meta"]["count"] == len(body["items"]) == 25  # per_page's default
    assert body["meta"]["links"]["self"].startswith(f"{server.url}/v2/visits")
    for item in body["items"]:
        assert item["meta"] == {"type": "visit"}
        assert set(item["data"]) == V2_VISIT_KEYS
        assert item["data"]["visited_at"].endswith(".000Z") and item["data"]["created_at"].endswith(".000Z")
        assert isinstance(item["data"]["outcome_id"], int)


def test_next_page_links_walk_the_whole_listing_and_stop(server, session, data):
    reps = Counter(v["creator_id"] for v in data.core_visits().values())
    rep_id, count = min(reps.items(), key=lambda kv: kv[1])
    items = all_pages(session, server, "/v2/visits", creator_id=rep_id)
    assert sorted(v["id"] for v in items) == sorted(
        vid for vid, v in data.core_visits().items() if v["creator_id"] == rep_id
    )
    last_page = -(-count // 100)
    body = listing(session, server, "/v2/visits", creator_id=rep_id, per_page=100, page=last_page)
    assert body["items"] and "next_page" not in body["meta"]["links"]


@pytest.mark.parametrize(
    "params",
    [
        {"outcome_id": "4102"},
        {"resource_type": "contact"},
        {"rep_location_verification_status": "location_unknown"},
        {"resource_type": "lead", "outcome_id": "4106"},
    ],
)
def test_visit_filters_select_what_python_selects(server, session, data, params):
    def matches(visit):
        return all(str(visit[key]) == value for key, value in params.items())

    expected = sorted(vid for vid, v in data.core_visits().items() if matches(v) and v["creator_id"] != HEAVY_REP_ID)
    got = all_pages(session, server, "/v2/visits", **params, creator_id=min(data.suspicious))
    assert {v["creator_id"] for v in got} == {min(data.suspicious)}
    assert sorted(v["id"] for v in got) == [
        vid for vid in expected if data.core_visits()[vid]["creator_id"] == min(data.suspicious)
    ]


def test_resource_id_filter_needs_resource_type(server, session, data):
    visit = next(iter(data.core_visits().values()))
    response = session.get(f"{server.url}/v2/visits", params={"resource_id": visit["resource_id"]}, timeout=5)
    assert response.status_code == 400
    assert response.json()["errors"][0]["error"]["code"] == "invalid_param"
    items = all_pages(
        session, server, "/v2/visits", resource_id=visit["resource_id"], resource_type=visit["resource_type"]
    )
    assert visit["id"] in {v["id"] for v in items}
    assert {(v["resource_type"], v["resource_id"]) for v in items} == {(visit["resource_type"], visit["resource_id"])}


@pytest.mark.parametrize("sort_by", ["id", "id:desc", "visited_at", "visited_at:desc"])
def test_visits_sort_orders(server, session, data, sort_by):
    rep_id = min(data.suspicious)
    items = all_pages(session, server, "/v2/visits", creator_id=rep_id, sort_by=sort_by)
    key, _, direction = sort_by.partition(":")
    expected = sorted(items, key=lambda v: (v[key], v["id"]), reverse=direction == "desc")
    assert [v["id"] for v in items] == [v["id"] for v in expected]
    assert len(items) > 100


@pytest.mark.parametrize(
    ("params", "code"),
    [({"per_page": "101"}, 400), ({"page": "0"}, 400), ({"sort_by": "summary"}, 400), ({"creator_id": "x"}, 400)],
)
def test_bad_list_parameters_are_a_400_envelope(server, session, params, code):
    response = session.get(f"{server.url}/v2/visits", params=params, timeout=5)
    assert response.status_code == code
    assert response.json()["errors"][0]["error"]["code"] == "invalid_param"


def test_page_100_is_the_last_page_a_list_reaches(server, session):
    page_100 = listing(session, server, "/v2/visits", creator_id=HEAVY_REP_ID, per_page=100, page=100)
    assert len(page_100["items"]) == 100
    assert "next_page" not in page_100["meta"]["links"]
    page_99 = listing(session, server, "/v2/visits", creator_id=HEAVY_REP_ID, per_page=100, page=99)
    assert "next_page" in page_99["meta"]["links"]
    past = listing(session, server, "/v2/visits", creator_id=HEAVY_REP_ID, per_page=100, page=101)
    assert past["items"] == [] and past["meta"]["count"] == 0 and "next_page" not in past["meta"]["links"]


def test_past_the_cap_can_be_an_error(server, session):
    server.core.faults = CoreFaults(past_cap="error")
    response = session.get(f"{server.url}/v2/visits", params={"page": 101, "per_page": 100}, timeout=5)
    assert response.status_code == 422
    assert "100 pages" in response.json()["errors"][0]["error"]["details"]
    assert listing(session, server, "/v2/visits", page=100, per_page=100)["items"]


def test_users_filters_and_sorts(server, session, data):
    users = all_pages(session, server, "/v2/users")
    assert {u["id"] for u in users} == set(data.core_users())
    assert [u["id"] for u in users] == sorted(u["id"] for u in users)
    by_name = all_pages(session, server, "/v2/users", sort_by="name")
    assert [u["name"] for u in by_name] == sorted(u["name"] for u in users)
    some = sorted(data.core_users())[:3]
    assert {u["id"] for u in all_pages(session, server, "/v2/users", ids=",".join(map(str, some)))} == set(some)
    admins = all_pages(session, server, "/v2/users", role="admin")
    assert admins and {u["role"] for u in admins} == {"admin"}
    inactive = all_pages(session, server, "/v2/users", status="inactive")
    assert {u["id"] for u in inactive} == {uid for uid, u in data.core_users().items() if u["status"] == "inactive"}


def test_outcomes_list_every_outcome(server, session, data):
    outcomes = all_pages(session, server, "/v2/visit_outcomes")
    assert {o["id"]: o["name"] for o in outcomes} == data.core_outcomes()


@pytest.mark.parametrize(
    ("feature", "path"), [("users", "/v2/users"), ("outcomes", "/v2/visit_outcomes"), ("visits", "/v2/visits")]
)
def test_a_forbidden_feature_answers_403_and_the_others_still_work(server, session, feature, path):
    server.core.faults = CoreFaults(forbidden=frozenset({feature}))
    response = session.get(f"{server.url}{path}", timeout=5)
    assert response.status_code == 403
    assert response.json()["errors"][0]["error"]["code"] == "forbidden"
    for other in {"/v2/users", "/v2/visit_outcomes", "/v2/visits"} - {path}:
        assert session.get(f"{server.url}{other}", timeout=5).status_code == 200


def test_core_api_wants_the_token(server):
    assert requests.get(f"{server.url}/v2/users", timeout=5).status_code == 401
    response = requests.get(f"{server.url}/v2/users", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert response.status_code == 401
    assert requests.get(f"{server.url}/v2/deals", headers=AUTH, timeout=5).status_code == 404


def test_a_stale_core_api_lists_deleted_visits(server, session, data):
    deleted = data.core_deleted_visits()
    assert deleted
    visit = next(iter(deleted.values()))
    params = {
        "creator_id": visit["creator_id"],
        "resource_type": visit["resource_type"],
        "resource_id": visit["resource_id"],
    }
    assert visit["id"] not in {v["id"] for v in all_pages(session, server, "/v2/visits", **params)}
    server.core.faults = CoreFaults(lists_deleted=True)
    assert visit["id"] in {v["id"] for v in all_pages(session, server, "/v2/visits", **params)}


def test_malformed_items_come_at_the_end_of_the_listing(server, session, data):
    server.core.faults = CoreFaults(malformed=True)
    rep_id = min(v["creator_id"] for v in data.core_visits().values())
    body = session.get(
        f"{server.url}/v2/visits", params={"creator_id": rep_id, "per_page": 100, "page": 1}, timeout=5
    ).json()
    assert all(isinstance(item, dict) and isinstance(item["data"]["id"], int) for item in body["items"])
    raw, url, query = [], f"{server.url}/v2/visits", {"creator_id": rep_id, "per_page": 100}
    while url:
        page = session.get(url, params=query, timeout=5).json()
        raw += page["items"]
        url, query = page["meta"]["links"].get("next_page"), None
    bad = [
        item
        for item in raw
        if not (isinstance(item, dict) and isinstance(item.get("data"), dict) and type(item["data"].get("id")) is int)
    ]
    assert len(bad) == 3  # the dict ones carry the rep's id; the others appear only with no filter


def test_a_dropped_connection_gets_no_answer(server):
    server.core.faults = CoreFaults(drop_connection=1.0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/v2/users", headers=AUTH, timeout=5)
    assert server.requests[-1].status is None


@pytest.mark.parametrize(("knob", "status"), [("server_errors", {500, 503}), ("rate_limit", {429})])
def test_failure_knobs(server, session, knob, status):
    server.core.faults = CoreFaults(**{knob: 1.0})
    response = session.get(f"{server.url}/v2/users", timeout=5)
    assert response.status_code in status
    assert response.json()["errors"][0]["error"]["code"]


def test_core_requests_are_in_the_request_log(server, session):
    listing(session, server, "/v2/users", per_page=5)
    session.get(f"{server.url}/v2/visits", params={"page": 0}, timeout=5)
    records = [r for r in server.requests if r.path.startswith("/v2/")]
    assert [(r.path, r.status) for r in records] == [("/v2/users", 200), ("/v2/visits", 400)]
    assert records[0].query == {"per_page": "5"} and records[0].at <= records[1].at

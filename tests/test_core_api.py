"""The Core API client against the demo's Core API: pages until the end or the 100-page cap and
says which, retries 429s and 5xx, names a 403 as the plan's missing feature (not a refused
token), and hands malformed items back as rejects without stopping."""

from collections import Counter
from datetime import UTC, datetime

import pytest

from visits.demo.core_api import CoreFaults
from visits.demo.generator import HEAVY_REP_ID, team_generate
from visits.sell import core, firehose
from visits.sell.core import CoreClient, CoreReject, FeatureUnavailable

from .conftest import TOKEN

NOW = datetime(2025, 3, 14, 16, 0, tzinfo=UTC)
LEAF = {"creator_id": HEAVY_REP_ID, "rep_location_verification_status": "verified", "outcome_id": 4101}


@pytest.fixture(scope="module")
def history_team():
    return team_generate(seed=11, reps=6, weeks=1, now=NOW, history_weeks=3, heavy_rep_visits=12_000)


def ids_of(listing) -> list[int]:
    return [item["id"] for item in listing.items()]


def test_visits_iter_pages_until_the_last_page(serve, history_team):
    serve(history_team)
    client = CoreClient()
    rep_id = min(history_team.suspicious)
    listing = client.visits_iter({"creator_id": rep_id})
    got = ids_of(listing)
    expected = sorted(vid for vid, v in history_team.core_visits().items() if v["creator_id"] == rep_id)
    assert got == expected
    assert not listing.capped
    assert listing.pages == -(-len(expected) // 100)


def test_a_query_over_the_cap_says_so_and_both_orders_reach_the_leaf(serve, history_team):
    server = serve(history_team)
    client = CoreClient()
    params = {**LEAF, "resource_type": "lead"}
    leaf = {vid for vid, v in history_team.core_visits().items() if all(v[k] == val for k, val in params.items())}
    assert len(leaf) > 10_000
    ascending = client.visits_iter(params, sort_by="id")
    first = ids_of(ascending)
    assert ascending.capped and ascending.pages == 100 and len(first) == 10_000
    descending = client.visits_iter(params, sort_by="id:desc")
    last = ids_of(descending)
    assert descending.capped
    assert set(first) | set(last) == leaf
    assert not [r for r in server.requests if r.query.get("page") == "101"]  # never asks past the cap


def test_users_and_outcomes_are_read_whole(serve, history_team):
    serve(history_team)
    client = CoreClient()
    users = list(client.users_all().items())
    assert {u["id"] for u in users} == set(history_team.core_users())
    outcomes = {o["id"]: o["name"] for o in client.outcomes_all().items()}
    assert outcomes == history_team.core_outcomes()


def test_429_and_5xx_are_retried_with_backoff(serve, history_team):
    server = serve(history_team, core_faults=CoreFaults(rate_limit=0.3, server_errors=0.3, seed=5))
    retries = []
    client = CoreClient(on_retry=lambda problem, delay: retries.append((problem, delay)))
    rep_id = min(history_team.suspicious)
    got = ids_of(client.visits_iter({"creator_id": rep_id}, sort_by="visited_at", per_page=5))
    assert sorted(got) == sorted(vid for vid, v in history_team.core_visits().items() if v["creator_id"] == rep_id)
    problems = Counter(problem.split(":")[0] for problem, _ in retries)
    assert problems["HTTP 429"] and (problems["HTTP 500"] or problems["HTTP 503"])
    assert all(0 < delay <= 0.01 for _, delay in retries)  # SELL_BACKOFF_CAP of the tests
    statuses = Counter(r.status for r in server.requests)
    assert statuses[429] + statuses[500] + statuses[503] == len(retries)


def test_requests_carry_the_token_accept_and_user_agent(serve, history_team):
    server = serve(history_team)
    CoreClient().list_page("/v2/users", {}, page=1)
    headers = server.requests[-1].headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("visitsdash/")
    assert server.requests[-1].query == {"page": "1", "per_page": "100"}


@pytest.mark.parametrize(
    ("feature", "path"), [("users", "/v2/users"), ("outcomes", "/v2/visit_outcomes"), ("visits", "/v2/visits")]
)
def test_403_is_a_missing_feature_not_a_refused_token(serve, history_team, feature, path):
    serve(history_team, core_faults=CoreFaults(forbidden=frozenset({feature})))
    client = CoreClient()
    with pytest.raises(FeatureUnavailable, match=f"this account's plan has no Core API {feature} \\(HTTP 403"):
        client.list_page(path, {}, page=1)
    assert not issubclass(FeatureUnavailable, firehose.TokenRefused)
    assert core.FEATURES[path] == feature


def test_401_is_a_refused_token(serve, history_team):
    server = serve(history_team)
    client = CoreClient(base_url=server.url, token="wrong")
    with pytest.raises(firehose.TokenRefused, match="the access token was refused \\(HTTP 401"):
        list(client.users_all())


def test_a_bad_query_is_rejected_without_retrying(serve, history_team):
    server = serve(history_team)
    client = CoreClient()
    with pytest.raises(core.RequestRejected, match="resource_id needs resource_type"):
        list(client.visits_iter({"resource_id": 1}))
    assert len(server.requests) == 1


def test_no_token_is_said_before_any_request(settings):
    settings.SELL_ACCESS_TOKEN = ""
    with pytest.raises(core.NoToken, match="SELL_ACCESS_TOKEN"):
        CoreClient().list_page("/v2/users", {}, page=1)


def test_malformed_items_come_back_as_rejects_and_the_walk_goes_on(serve, history_team):
    serve(history_team, core_faults=CoreFaults(malformed=True))
    client = CoreClient()
    rejects, good = [], []
    rep_id = min(v["creator_id"] for v in history_team.core_visits().values())
    for page in client.visits_iter({"creator_id": rep_id}):
        rejects += page.rejects
        good += page.items
        assert len(page.items) + len(page.rejects) == len(page.raw_items)
    assert len(rejects) == 3  # the malformed items that carry the rep's id; the others match no filter
    assert all(isinstance(r, CoreReject) and r.reason for r in rejects)
    assert {r.reason for r in rejects} == {"the item's data has no integer id"}
    assert sorted(v["id"] for v in good) == sorted(
        vid for vid, v in history_team.core_visits().items() if v["creator_id"] == rep_id
    )
    everything = core.CoreListing(client, path="/v2/visits", params={"creator_id": rep_id, "summary": "x"}, per_page=50)
    assert list(everything)  # an unknown parameter is ignored, as Sell does


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (["a list"], "the item is a list, not an object"),
        ({"data": None}, "the item has no data object"),
        ({"data": {"id": 1.5}}, "the item's data has no integer id"),
        ({"data": {"id": False}}, "the item's data has no integer id"),
        ({"data": {"id": -3}}, "the item's id -3 is out of range"),
        ({"data": {"id": 2**64}}, "out of range"),
    ],
)
def test_item_check_names_what_is_wrong(raw, reason):
    checked = core.item_check(raw)
    assert isinstance(checked, CoreReject) and reason in checked.reason and checked.raw == raw


@pytest.mark.parametrize("body", [b"", b"[]", b'{"items": {}}', b'{"items": [], "meta": []}', b"<html>"])
def test_a_body_that_is_not_a_page_is_none(body):
    assert core.page_parse(body) is None


def test_dropped_connections_are_retried(serve, history_team):
    server = serve(history_team, core_faults=CoreFaults(drop_connection=0.4, seed=2))
    retries = []
    client = CoreClient(on_retry=lambda problem, delay: retries.append(problem))
    got = list(core.CoreListing(client, path="/v2/users", params={}, per_page=3).items())
    assert sorted(u["id"] for u in got) == sorted(history_team.core_users())
    assert retries and all("ConnectionError" in problem for problem in retries)
    assert [r.status for r in server.requests].count(None) == len(retries)

"""The Core API's users and outcomes in the database: team fields on every rep, reps for users
the Firehose never named, every outcome's name, hourly unless forced, a 403 switching the
feature off (and the status page saying so), and no Core API failure stopping a Firehose sync."""

import html
import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from visits import tasks
from visits.demo.core_api import CoreFaults
from visits.demo.generator import CORE_UNUSED_OUTCOMES, HEAVY_REP_ID, team_generate
from visits.ingest import core as ingest_core
from visits.ingest.pull import visits_pull
from visits.ingest.sync import streams_sync
from visits.models import CoreApiState, Outcome, RejectedItem, Rep
from visits.sell import core, events

from .conftest import assert_db_matches

pytestmark = pytest.mark.django_db
NOW = datetime(2025, 3, 14, 16, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def team():
    """A small team with a heavy rep (a Core API user only) and its managers."""
    return team_generate(seed=11, reps=6, weeks=1, now=NOW, heavy_rep_visits=50)


@pytest.fixture(autouse=True)
def loggers_kept():
    """sync_visits quietens the sync's and this module's loggers for its own process; put them back."""
    loggers = [logging.getLogger(name) for name in ("visits.ingest.sync", "visits.ingest.core")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture
def staff(client, cast):
    client.force_login(cast.superuser)
    return client


def core_requests(server, path):
    return [r for r in server.requests if r.path == path]


def test_users_refresh_stores_team_fields_and_creates_reps_for_unnamed_users(serve, team):
    serve(team)
    streams_sync()
    before = set(Rep.objects.values_list("id", flat=True))
    result = ingest_core.users_refresh()
    users = team.core_users()
    assert result.ran and not result.error and result.items == len(users)
    assert result.created == len(set(users) - before) > 0
    assert {HEAVY_REP_ID, *(set(users) - before)} <= set(Rep.objects.values_list("id", flat=True))
    for user_id, user in users.items():
        rep = Rep.objects.get(id=user_id)
        group = user["group"] or {}
        got = (rep.team_name, rep.group_id, rep.group_name, rep.reports_to, rep.timezone)
        assert got == (user["team_name"], group.get("id"), group.get("name", ""), user["reports_to"], user["timezone"])
        assert rep.core_synced_at is not None
    director = Rep.objects.get(reports_to__isnull=True)
    assert director.group_id is None and director.group_name == ""
    assert_db_matches(team)  # names: the Firehose's where it named the rep, the Core API's elsewhere


def test_the_firehose_keeps_the_names_it_gave_and_the_core_api_names_the_rest(serve, team):
    serve(team)
    streams_sync()
    named = Rep.objects.filter(sequence__gt=0).first()
    Rep.objects.filter(id=named.id).update(name="Named by the users stream", email="stream@example.com")
    unnamed = Rep.objects.filter(sequence=0, name="").first()
    assert unnamed is not None, "the team has a rep the users stream never described"
    ingest_core.users_refresh()
    named.refresh_from_db()
    unnamed.refresh_from_db()
    assert (named.name, named.email) == ("Named by the users stream", "stream@example.com")
    assert named.team_name == team.core_users()[named.id]["team_name"]
    assert unnamed.name == team.core_users()[unnamed.id]["name"] != ""


def test_refresh_is_hourly_unless_forced(serve, team):
    server = serve(team)
    assert ingest_core.users_refresh().ran
    second = ingest_core.users_refresh()
    assert not second.ran and second.skipped == "refreshed within the hour"
    assert len(core_requests(server, "/v2/users")) == 1
    assert ingest_core.users_refresh(force=True).ran
    assert len(core_requests(server, "/v2/users")) == 2
    CoreApiState.objects.filter(feature="users").update(last_success_at=timezone.now() - timedelta(hours=1, minutes=1))
    assert ingest_core.users_refresh().ran
    assert len(core_requests(server, "/v2/users")) == 3


def test_visits_pull_refreshes_hourly_and_sync_visits_every_run(serve, team):
    server = serve(team)
    visits_pull()
    visits_pull()
    assert len(core_requests(server, "/v2/users")) == 1
    assert len(core_requests(server, "/v2/visit_outcomes")) == 1
    call_command("sync_visits", "--quiet")
    assert len(core_requests(server, "/v2/users")) == 2
    assert len(core_requests(server, "/v2/visit_outcomes")) == 2


def test_a_403_switches_the_feature_off_and_the_status_page_says_so(serve, team, staff):
    server = serve(team, core_faults=CoreFaults(forbidden=frozenset({"users"})))
    result = ingest_core.users_refresh()
    assert result.error.startswith("this account's plan has no Core API users (HTTP 403")
    state = CoreApiState.objects.get(feature="users")
    assert not state.available and state.refused_at and "HTTP 403" in state.refused_message
    server.core.faults = CoreFaults()  # even once Sell would answer, nothing is asked until switched on
    again = ingest_core.users_refresh(force=True)
    assert not again.ran and again.skipped.startswith("switched off since")
    assert len(core_requests(server, "/v2/users")) == 1
    assert ingest_core.outcomes_refresh().ran  # the other features carry on
    body = html.unescape(staff.get("/status/").content.decode())
    assert "This account's plan has no Core API users: reps' teams, groups and managers are not refreshed." in body
    assert "HTTP 403" in body


def test_status_page_says_the_backfill_is_off_without_core_api_visits(staff):
    CoreApiState.objects.create(
        feature="visits", available=False, refused_at=timezone.now(), refused_message="HTTP 403"
    )
    body = html.unescape(staff.get("/status/").content.decode())
    assert "This account's plan has no Core API visits: the history backfill is off." in body
    assert "Available; not asked yet." in body  # users and outcomes, never asked


def test_an_admin_switches_a_feature_back_on(serve, team, staff):
    server = serve(team, core_faults=CoreFaults(forbidden=frozenset({"outcomes"})))
    ingest_core.outcomes_refresh()
    state = CoreApiState.objects.get(feature="outcomes")
    assert not state.available
    server.core.faults = CoreFaults()
    response = staff.post(
        "/admin/visits/coreapistate/", {"action": "switch_on", "_selected_action": [state.pk]}, follow=True
    )
    assert "1 Core API feature(s) switched back on." in response.content.decode()
    state.refresh_from_db()
    assert state.available and state.refused_message == ""
    assert ingest_core.outcomes_refresh(force=True).ran
    assert set(CORE_UNUSED_OUTCOMES) <= set(Outcome.objects.values_list("id", flat=True))


def test_a_staff_member_who_is_not_superuser_cannot_switch_it_on(client, cast):
    cast.manager.is_staff = True
    cast.manager.save()
    state = CoreApiState.objects.create(feature="users", available=False, refused_message="HTTP 403")
    client.force_login(cast.manager)
    client.post("/admin/visits/coreapistate/", {"action": "switch_on", "_selected_action": [state.pk]})
    state.refresh_from_db()
    assert not state.available


def test_other_failures_are_recorded_and_the_feature_stays_on(serve, team, settings):
    server = serve(team, core_faults=CoreFaults(server_errors=1.0))
    settings.SELL_MAX_RETRIES = 2
    result = ingest_core.users_refresh()
    assert "stayed unreachable after 2 retries" in result.error
    state = CoreApiState.objects.get(feature="users")
    assert state.available and state.last_error == result.error and state.last_error_at and not state.last_success_at
    assert not ingest_core.users_refresh().ran  # a failure also waits the hour
    assert Rep.objects.count() == 0  # nothing half-stored
    server.core.faults = CoreFaults()
    assert ingest_core.users_refresh(force=True).ran
    state.refresh_from_db()
    assert state.last_error == "" and state.last_success_at > state.last_error_at


def test_a_core_api_failure_never_stops_the_firehose_sync(serve, team, settings, capsys):
    serve(team, core_faults=CoreFaults(server_errors=1.0))
    settings.SELL_MAX_RETRIES = 1
    call_command("sync_visits")
    out = capsys.readouterr().out
    assert "sync complete" in out and "Core API users: the Sell API stayed unreachable" in out
    assert_db_matches(team)  # no Core API data arrived, and the Firehose's all did


def test_outcomes_include_unused_ones_and_keep_their_current_name(serve, team):
    serve(team)
    result = ingest_core.outcomes_refresh()
    assert result.items == len(team.core_outcomes())
    assert dict(Outcome.objects.values_list("id", "name")) == team.core_outcomes()
    streams_sync()  # older visit events do not rename them back
    assert dict(Outcome.objects.values_list("id", "name")) == team.core_outcomes()
    assert_db_matches(team)


def test_hostile_strings_are_stored_as_text_and_shown_escaped(serve, team, client, cast):
    serve(team)
    streams_sync()
    ingest_core.core_refresh(force=True)
    hostile_team = next(u["team_name"] for u in team.core_users().values() if "<b" in u["team_name"])
    assert Rep.objects.filter(team_name=hostile_team).exists()
    hostile_outcome = CORE_UNUSED_OUTCOMES[4110]
    assert Outcome.objects.get(id=4110).name == hostile_outcome
    client.force_login(cast.manager)
    body = client.get("/visits/").content.decode()
    assert html.escape(hostile_outcome) in body and hostile_outcome not in body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"id": 5, "group": "East"}, "group is not an object"),
        ({"id": 5, "team_name": ["a"]}, "team_name is not text"),
        ({"id": 5, "name": "Pat \ud800"}, "lone surrogate"),
        ({"id": 5, "reports_to": "boss"}, "reports_to is not a whole number"),
        ({"id": 5, "group": {"id": True, "name": "x"}}, "group.id is not a whole number"),
    ],
)
def test_a_malformed_user_is_rejected_with_its_reason(data, reason):
    with pytest.raises(events.Rejected, match=reason):
        core.user_parse(data)


def test_malformed_users_become_rejected_items_and_the_rest_is_stored(serve, team, monkeypatch):
    serve(team)
    real = core.page_parse

    def with_bad_users(body):
        page = real(body)
        if page is not None and page.items and "team_name" in page.items[0]:
            page.items.append({"id": 9_999_001, "name": "Pat", "group": "not an object"})
            page.rejects.append(core.CoreReject("not a user", "the item is a str, not an object"))
        return page

    monkeypatch.setattr(core, "page_parse", with_bad_users)
    result = ingest_core.users_refresh()
    assert result.items == len(team.core_users()) and result.rejected == 2
    reasons = set(RejectedItem.objects.values_list("reason", flat=True))
    assert reasons == {
        "Core API /v2/users: group is not an object: 'not an object'",
        "Core API /v2/users: the item is a str, not an object",
    }
    assert not Rep.objects.filter(id=9_999_001).exists()


def test_sells_refusal_message_is_shown_as_text(staff):
    hostile = '<script>alert("refused")</script><img src=x onerror=alert(1)>'
    CoreApiState.objects.create(
        feature="users", available=False, refused_at=timezone.now(), refused_message=hostile, last_error=hostile,
        last_error_at=timezone.now(),
    )  # fmt: skip
    body = staff.get("/status/").content.decode()
    assert hostile not in body and html.escape(hostile) in body


def test_a_capped_user_list_says_so(serve, team, monkeypatch):
    serve(team)
    monkeypatch.setattr(core, "MAX_PAGES", 2)  # two pages of five stand for Sell's 100 of 100
    monkeypatch.setattr(
        core.CoreClient, "users_all", lambda self: core.CoreListing(self, path="/v2/users", params={}, per_page=5)
    )
    result = ingest_core.users_refresh()
    assert result.capped and result.items == 10
    assert "only the first 10,000" in result.summary()


def test_a_user_sell_deleted_is_a_deleted_rep():
    user = core.user_parse({"id": 7, "name": "Gone", "status": "active", "deleted_at": "2026-01-02T03:04:05.000Z"})
    assert user["status"] == "deleted"
    assert core.user_parse({"id": 7, "status": "active", "deleted_at": None})["status"] == "active"


def test_the_workers_task_result_names_a_core_api_failure(serve, team):
    serve(team, core_faults=CoreFaults(forbidden=frozenset({"outcomes"})))
    summary = tasks.sync_streams_task(session_seconds=0)
    assert summary.endswith("; Core API outcomes: this account's plan has no Core API outcomes (HTTP 403: "
                            "forbidden: Your account's plan does not include access to this resource.)")  # fmt: skip
    assert "Core API users" not in summary  # it worked: nothing to say

"""/healthz for monitors (no login; ok, stale or failing with 200 or 503; nothing else leaks) and
`manage.py ingestion_check`'s one line and exit code, against real syncs of the demo Firehose."""

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from visits.ingest.sync import streams_sync
from visits.models import Gap, Rep, SyncState, Visit

from .conftest import command_env

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"status", "mode", "last_success_at", "lag_seconds", "open_gaps"}


def healthz(client) -> tuple[int, dict]:
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    return response.status_code, json.loads(response.content)


def synced(serve, data) -> None:
    serve(data)
    results = streams_sync()
    assert [r.error for r in results] == ["", ""], results


def success_moved_back(hours: float) -> None:
    """The visits stream's last success (and what it had caught up to) `hours` earlier."""
    state = SyncState.objects.get(stream="visits")
    back = timedelta(hours=hours)
    SyncState.objects.filter(stream="visits").update(
        last_success_at=state.last_success_at - back,
        caught_up_at=state.caught_up_at - back,
        newest_event_time=state.newest_event_time - back,
    )


def test_healthz_is_ok_after_a_sync_without_signing_in(client, serve, small_team):
    synced(serve, small_team)
    status, body = healthz(client)
    state = SyncState.objects.get(stream="visits")
    assert status == 200 and set(body) == KEYS
    assert body["status"] == "ok" and body["mode"] == "sync" and body["open_gaps"] == 0
    assert body["last_success_at"].endswith("Z")
    assert abs(parse_datetime(body["last_success_at"]) - state.last_success_at) < timedelta(seconds=1)
    # Caught up just now: the copy is at most seconds behind Sell.
    assert isinstance(body["lag_seconds"], int) and 0 <= body["lag_seconds"] < 60


def test_healthz_before_any_sync_is_stale_with_nulls(client, settings):
    settings.SELL_ACCESS_TOKEN = "a-token"
    status, body = healthz(client)
    assert (status, body) == (
        503,
        {"status": "stale", "mode": "sync", "last_success_at": None, "lag_seconds": None, "open_gaps": 0},
    )


def test_healthz_is_stale_past_alert_stale_hours_only(client, serve, small_team, settings):
    synced(serve, small_team)
    success_moved_back(5.9)
    assert healthz(client)[1]["status"] == "ok"
    success_moved_back(0.2)  # now 6.1 hours ago
    status, body = healthz(client)
    assert status == 503 and body["status"] == "stale"
    assert body["lag_seconds"] >= 6 * 3600
    settings.ALERT_STALE_HOURS = 7
    status, body = healthz(client)
    assert status == 200 and body["status"] == "ok"


def test_healthz_is_failing_when_sell_refuses_the_token_and_says_no_more(client, serve, small_team, settings):
    synced(serve, small_team)
    settings.SELL_ACCESS_TOKEN = "wrong"
    users, *rest = streams_sync()
    assert users.error_kind == "token" and not rest  # the users stream stops the pull
    assert SyncState.objects.get(stream="users").last_error_kind == "token"
    response = client.get("/healthz")
    body = json.loads(response.content)
    assert response.status_code == 503 and body["status"] == "failing"
    assert body["last_success_at"] is not None  # the visits stream's last success is still known
    assert b"refused" not in response.content and b"401" not in response.content


def test_healthz_is_failing_when_sell_is_unreachable(client, serve, small_team, settings):
    synced(serve, small_team)
    settings.SELL_API_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    settings.SELL_MAX_RETRIES = 1
    assert streams_sync()[0].error_kind == "unreachable"
    status, body = healthz(client)
    assert status == 503 and body["status"] == "failing"


def test_failing_beats_stale_and_a_success_ends_both(client, serve, small_team, settings):
    synced(serve, small_team)
    success_moved_back(10)
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    assert healthz(client)[1]["status"] == "failing"
    settings.SELL_ACCESS_TOKEN = "test-token"
    streams_sync()
    assert healthz(client)[0] == 200
    assert SyncState.objects.get(stream="users").last_error_kind == ""  # a success clears the kind


def test_archive_mode_is_ok_whatever_the_stored_state(client, serve, small_team, settings):
    synced(serve, small_team)
    success_moved_back(100)
    SyncState.objects.filter(stream="users").update(last_error="the access token was refused", last_error_kind="token")
    settings.SELL_ACCESS_TOKEN = ""
    status, body = healthz(client)
    assert status == 200 and body["status"] == "ok" and body["mode"] == "archive"
    assert body["last_success_at"] is not None and body["lag_seconds"] >= 100 * 3600


def test_open_gaps_count_a_real_410_until_filled(client, serve, small_team):
    server = serve(small_team)
    streams_sync()
    server.expire_positions()
    streams_sync()
    assert set(Gap.objects.values_list("stream", flat=True)) == {"users", "visits"}  # one per stream
    status, body = healthz(client)
    assert body["open_gaps"] == 2 and status == 200  # a gap alone is an incident, not a failure
    Gap.objects.filter(stream="visits").update(filled_at=timezone.now(), filled_visits=3)
    assert healthz(client)[1]["open_gaps"] == 1
    Gap.objects.update(filled_at=timezone.now())
    assert healthz(client)[1]["open_gaps"] == 0


def test_healthz_leaks_no_names_counts_or_errors(client, serve, small_team, settings):
    synced(serve, small_team)
    Rep.objects.filter(id=Rep.objects.order_by("id").first().id).update(name="Zelda Quux-Secret")
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    text = client.get("/healthz").content.decode()
    assert set(json.loads(text)) == KEYS
    for name in Rep.objects.exclude(name="").values_list("name", flat=True):
        assert name not in text
    # Five keys whose values are all determined: no room for a count of visits or an error text.
    body = json.loads(text)
    assert body["status"] == "failing" and body["mode"] == "sync" and body["open_gaps"] == 0
    assert parse_datetime(body["last_success_at"]) is not None and isinstance(body["lag_seconds"], int)
    assert "token" not in text and "Unauthorized" not in text and str(Visit.objects.count()) not in text


def test_healthz_is_two_queries(client, serve, small_team, django_assert_max_num_queries):
    synced(serve, small_team)
    with django_assert_max_num_queries(2):
        client.get("/healthz")


def test_healthz_answers_plain_http_when_the_rest_redirects_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/status/").status_code == 301
    assert client.get("/healthz").status_code in (200, 503)


def test_healthz_is_failing_not_a_500_when_the_database_cannot_be_read(client, settings):
    from django.db import connection

    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE visits_syncstate RENAME TO visits_syncstate_away")
    settings.SELL_ACCESS_TOKEN = "a-token"
    status_code, body = healthz(client)
    assert status_code == 503 and set(body) == KEYS
    assert body == {
        "status": "failing",
        "mode": "sync",
        "last_success_at": None,
        "lag_seconds": None,
        "open_gaps": None,
    }


def test_healthz_refuses_a_post(client):
    assert client.post("/healthz").status_code == 405


def test_a_503_from_healthz_is_not_logged_as_an_error(client, settings, caplog):
    settings.SELL_ACCESS_TOKEN = "a-token"
    with caplog.at_level("WARNING", logger="django.request"):
        assert client.get("/healthz").status_code == 503
    assert not [r for r in caplog.records if r.name == "django.request"]  # a monitor polls it every minute


# --- manage.py ingestion_check -----------------------------------------------------------------


def check_line(capsys) -> tuple[int, str]:
    try:
        call_command("ingestion_check")
        code = 0
    except SystemExit as exit:
        code = exit.code
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return code, out.strip()


def test_check_prints_one_line_and_passes_when_healthy(serve, small_team, capsys):
    synced(serve, small_team)
    code, line = check_line(capsys)
    fields = dict(part.split("=", 1) for part in line.split())
    assert code == 0 and fields["status"] == "ok" and fields["mode"] == "sync"
    assert fields["open_gaps"] == "0" and fields["incidents"] == "none"
    assert parse_datetime(fields["last_success_at"]) == SyncState.objects.get(stream="visits").last_success_at.replace(
        microsecond=0
    )
    assert int(fields["lag_seconds"]) < 60


def test_check_fails_when_the_token_is_refused(serve, small_team, settings, capsys):
    synced(serve, small_team)
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    code, line = check_line(capsys)
    assert code == 1 and "status=failing" in line and "incidents=token" in line
    assert line.endswith(
        'error="the access token was refused (HTTP 401: unauthorized: Required access token is '
        'missing, malformed, expired, or invalid.)"'
    )


def test_check_before_any_sync_is_stale(settings, capsys):
    settings.SELL_ACCESS_TOKEN = "a-token"
    code, line = check_line(capsys)
    assert code == 1
    assert "status=stale" in line and "last_success_at=never" in line and "lag_seconds=none" in line


@pytest.mark.slow
def test_check_command_exit_codes_in_a_real_process(serve, small_team, transactional_db):
    server = serve(small_team)
    streams_sync()

    def run(**env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "ingestion_check"],
            cwd=ROOT, env=command_env(server.url, **env), capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    healthy = run()
    assert healthy.returncode == 0 and healthy.stdout.startswith("status=ok "), healthy.stderr
    assert len(healthy.stdout.splitlines()) == 1
    success_moved_back(7)
    stale = run()
    assert stale.returncode == 1 and stale.stdout.startswith("status=stale "), stale.stderr
    archive = run(SELL_ACCESS_TOKEN="")
    assert archive.returncode == 0 and "status=ok mode=archive" in archive.stdout, archive.stderr

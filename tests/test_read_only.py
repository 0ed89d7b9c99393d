"""With no SELL_ACCESS_TOKEN visitsdash is a read-only archive: nothing syncs, no request
reaches Sell, nothing is recorded as an error, the status page says so and every page works."""

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from visits.ingest.pull import visits_pull
from visits.ingest.sync import READ_ONLY_MESSAGE, stream_sync, streams_sync
from visits.models import Gap, SyncState, Visit
from visits.tasks import sync_streams_task

from .conftest import command_env

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def archived(serve, small_team, settings):
    """The small team synced while the token was set, then the token removed: an archive.
    Returns the demo server, still listening, to show that nothing asks it anything."""
    server = serve(small_team)
    results = streams_sync()
    assert [r.error for r in results] == ["", ""] and Visit.objects.exists()
    server.reset_requests()
    settings.SELL_ACCESS_TOKEN = ""
    return server


def test_no_sync_runs_no_request_is_sent_and_nothing_is_recorded(archived):
    before = list(SyncState.objects.order_by("stream").values())
    pull = visits_pull()
    assert pull.read_only and pull.results == [] and pull.errors == [] and pull.polls == 0
    assert streams_sync() == []
    direct = stream_sync(stream="visits")
    assert direct.read_only and not direct.error and not direct.error_kind and direct.pages == 0
    assert archived.requests == []
    assert list(SyncState.objects.order_by("stream").values()) == before  # no error, no poll time, no lease


def test_a_fresh_install_without_a_token_records_no_token_error(serve, small_team, settings):
    server = serve(small_team)
    settings.SELL_ACCESS_TOKEN = ""
    assert visits_pull().read_only
    assert server.requests == [] and not SyncState.objects.exists() and not Gap.objects.exists()


def test_a_fresh_archive_install_says_so_instead_of_waiting_for_a_first_poll(client, cast, settings):
    settings.SELL_ACCESS_TOKEN = ""
    client.force_login(cast.superuser)
    status = client.get("/status/").content.decode()
    assert "Read-only archive:" in status and "not polled yet" not in status and "No gaps" in status
    home = client.get("/").content.decode()
    assert "Read-only archive</span>" in home and "No data pulled from Sell yet" not in home


def test_the_scheduled_task_says_it_is_a_read_only_archive(archived):
    assert sync_streams_task(session_seconds=1) == READ_ONLY_MESSAGE
    assert archived.requests == []


def test_status_page_says_read_only_archive_at_the_top(archived, client, cast):
    client.force_login(cast.superuser)
    body = client.get("/status/").content.decode()
    notice = body.index("Read-only archive:")
    assert notice < body.index('class="totals"') and notice < body.index('data-stream="users"')
    text = re.sub(r"<[^>]+>", "", body[notice : body.index("</p>", notice)])
    assert text == (
        "Read-only archive: no Sell access token is set (SELL_ACCESS_TOKEN), so nothing is synced; "
        "the data shown is what was archived."
    )
    cards = re.findall(r'data-stream="(\w+)">(.*?)</section>', body, re.S)
    assert len(cards) == 2
    for _, card in cards:
        assert "not synced" in card and "Not synced: a read-only archive." in card and "failing" not in card
    held = Visit.objects.filter(deleted_at__isnull=True).count()
    assert f'<span class="num">{held:,}</span><span class="label">visits held' in body  # the archive's figures
    assert archived.requests == []


def test_status_page_does_not_say_so_with_a_token(serve, small_team, client, cast):
    serve(small_team)
    streams_sync()
    client.force_login(cast.superuser)
    assert "Read-only archive" not in client.get("/status/").content.decode()


def test_an_error_recorded_before_the_token_was_removed_is_not_shown_as_failing(archived, client, cast, settings):
    settings.SELL_ACCESS_TOKEN = "wrong"
    stream_sync(stream="users")
    assert SyncState.objects.get(stream="users").last_error  # the refused token, recorded
    settings.SELL_ACCESS_TOKEN = ""
    client.force_login(cast.superuser)
    body = client.get("/status/").content.decode()
    assert "Read-only archive:" in body and "failing" not in body and "the access token was refused" not in body


@pytest.mark.parametrize(
    "url", ["/", "/reports/reps/", "/reports/outcomes/", "/reports/matrix/", "/visits/", "/review/", "/map/"]
)
def test_the_pages_keep_working_and_say_read_only_archive(archived, client, cast, url):
    client.force_login(cast.manager)
    response = client.get(url)
    assert response.status_code == 200
    badge = re.search(r'<span class="badge badge-(\w+) freshness">([^<]*)</span>', response.content.decode())
    assert badge and badge[1] == "archive" and badge[2].startswith("Read-only archive, last synced 20")
    assert archived.requests == []


def test_the_exports_keep_working(archived, client, cast):
    client.force_login(cast.manager)
    response = client.get("/visits.csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows[0][0] == "id" and len(rows) - 1 == Visit.objects.filter(deleted_at__isnull=True).count()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sync_visits_says_read_only_archive_in_one_line_and_exits_0(serve, small_team):
    server = serve(small_team)
    done = subprocess.run(
        [sys.executable, "manage.py", "sync_visits"], cwd=ROOT, env=command_env(server.url, SELL_ACCESS_TOKEN=""),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [READ_ONLY_MESSAGE] and done.stderr == ""
    assert server.requests == [] and not SyncState.objects.exists()

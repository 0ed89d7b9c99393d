"""The access log (visits/security/access_log.py): an entry for each page that shows a visit's
position or a rep and for each CSV, with its filters and exact rows (also when the client leaves
midway), none for the other pages; append-only in the database; purged after ACCESS_LOG_DAYS;
read by superusers only, as CSV (formulas escaped) and in the admin. And the privacy notice in
every page's footer."""

import csv
import io
import socket
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.signals import request_finished
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.test import RequestFactory
from django.utils import timezone
from django.views import defaults

from tests.conftest import user_make
from tests.test_access import POST_ONLY, app_patterns, patterns_walk, url_for, visit_row, world  # noqa: F401 (the URL walk's ids)
from visits.ingest.pages import visits_upsert
from visits.models import AccessKind, AccessLogEntry, Rep, SellLink, Visit
from visits.security import access_log
from visits.tasks import ACCESS_LOG_SCHEDULE_NAME, schedules_setup
from visits.views import exports

pytestmark = pytest.mark.django_db

# What the access log's docstring and docs/PRIVACY.md say is logged, and as what.
LOGGED = {
    "visits:visit": AccessKind.VISIT, "visits:visit_map": AccessKind.VISIT, "visits:rep": AccessKind.REP,
    "visits:map_frame": AccessKind.MAP, "visits:map_clusters": AccessKind.MAP, "visits:map_points": AccessKind.MAP,
}  # fmt: skip


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def csv_rows(response) -> list[list[str]]:
    """A CSV's data rows (without the byte-order mark and the header)."""
    return list(csv.reader(io.StringIO(body_of(response).decode("utf-8").removeprefix("\ufeff"))))[1:]


def entries() -> list[AccessLogEntry]:
    return list(AccessLogEntry.objects.order_by("id"))


# --- What is logged ------------------------------------------------------------------------


def test_every_csv_url_is_logged_as_a_csv():
    """A new CSV (teams.csv, say) cannot be added without its entry."""
    csvs = [(key, pattern) for key, route, _, pattern in patterns_walk() if route.endswith(".csv")]
    assert len(csvs) >= 7
    unlogged = [key for key, pattern in csvs if getattr(pattern.callback, "access_log_kind", None) != AccessKind.CSV]
    assert not unlogged, f"CSV views must wear access_log.access_logged(AccessKind.CSV): {unlogged}"


def test_each_page_with_positions_or_a_rep_writes_one_entry_and_no_other_page_writes_any(client, cast, world):  # noqa: F811
    client.force_login(cast.superuser)
    logged = {}
    for key, pattern in app_patterns():
        if key in POST_ONLY:
            continue
        url = url_for(key, pattern, world)
        before = AccessLogEntry.objects.count()
        response = client.get(url)
        body_of(response)  # a CSV's entry is written when its stream ends
        assert response.status_code == 200, (key, response)
        new = list(AccessLogEntry.objects.order_by("id")[before:])
        assert len(new) == (1 if getattr(pattern.callback, "access_log_kind", None) else 0), (key, new)
        if new:
            (entry,) = new
            path, _, query = url.partition("?")  # the map's JSON: its box and zoom are its filters
            assert (entry.user, entry.username, entry.path, entry.filters) == (cast.superuser, "root", path, query), key
            logged[key] = entry
    csvs = {key for key, route, _, _ in patterns_walk() if route.endswith(".csv")}
    assert {key: entry.kind for key, entry in logged.items()} == {**LOGGED, **dict.fromkeys(csvs, AccessKind.CSV)}
    assert logged["visits:visit"].object_id == logged["visits:visit_map"].object_id == world["visit_id"]
    assert logged["visits:rep"].object_id == world["rep_id"]
    assert logged["visits:map_frame"].object_id is None and logged["visits:visits_csv"].rows == 1


def test_pages_write_their_filters_and_a_refused_or_missing_page_writes_nothing(client, cast, world):  # noqa: F811
    client.force_login(cast.manager)
    assert client.get("/reports/reps/31/?start=2026-03-01&end=2026-03-31").status_code == 200
    assert client.get("/map/frame/?rep=31&status=verified").status_code == 200
    assert client.get("/map/?rep=31").status_code == 200  # the page: counts; its frame is logged
    assert [(e.kind, e.path, e.filters, e.object_id, e.rows) for e in entries()] == [
        ("rep", "/reports/reps/31/", "start=2026-03-01&end=2026-03-31", 31, None),
        ("map", "/map/frame/", "rep=31&status=verified", None, None),
    ]
    assert client.get("/visits/3199/").status_code == 404  # no such visit
    assert client.get("/visits/3199/map/").status_code == 404
    assert client.get("/reports/reps/99/").status_code == 404
    assert client.get("/visits.csv?rep=99").status_code == 400  # a bad filter
    assert client.get("/visits.csv?start=soon").status_code == 400
    client.force_login(cast.outsider)
    assert client.get("/visits/3100/").status_code == 403
    assert client.get("/visits.csv").status_code == 403
    client.logout()
    assert client.get("/visits/3100/").status_code == 302
    assert len(entries()) == 2


def test_the_admins_lists_and_pages_of_visits_are_logged_too(client, cast, world):  # noqa: F811
    Visit.objects.filter(id=3100).update(flagged=True)  # as its flag's refresh would
    client.force_login(cast.superuser)
    urls = ["/admin/visits/visit/?in_sell=deleted", "/admin/visits/visit/3100/change/",
            "/admin/visits/flaggedvisit/", "/admin/visits/flaggedvisit/3100/change/"]  # fmt: skip
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert client.get("/admin/visits/visit/3199/change/").status_code == 302  # no such visit: back to the list
    assert client.get("/admin/visits/rep/").status_code == 200  # no positions
    assert [(e.kind, e.path, e.filters, e.object_id) for e in entries()] == [
        ("visit", "/admin/visits/visit/", "in_sell=deleted", None),
        ("visit", "/admin/visits/visit/3100/change/", "", 3100),
        ("visit", "/admin/visits/flaggedvisit/", "", None),
        ("visit", "/admin/visits/flaggedvisit/3100/change/", "", 3100),
    ]  # fmt: skip


# --- CSVs: filters and rows ----------------------------------------------------------------

AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, tzinfo=UTC)  # (no visit within a day of it: the display time zone cannot move one)


@pytest.fixture
def visits_of_two_reps(db) -> dict[int, int]:
    """Rep 31 with 7 visits (5 in March), rep 32 with 4: {rep: visits}."""
    Rep.objects.create(id=31, name="Walker")
    Rep.objects.create(id=32, name="Rider")
    rows = {3100 + i: visit_row(visited_at=AT + timedelta(days=6 * i), rep_id=31, outcome_id=None) for i in range(7)}
    rows |= {3200 + i: visit_row(visited_at=AT + timedelta(days=i), rep_id=32, outcome_id=None) for i in range(4)}
    with transaction.atomic():
        visits_upsert(rows=rows)
    return {31: 7, 32: 4}


def test_a_csv_entry_keeps_its_query_string_and_its_exact_row_count(client, cast, visits_of_two_reps):
    client.force_login(cast.manager)
    cases = [
        ("/visits.csv", "rep=31", 7),  # a rep's CSV
        ("/visits.csv", "rep=31&start=2026-03-01&end=2026-03-31", 5),
        ("/visits.csv", "rep=32&status=verified", 0),
        ("/visits.csv", "", 11),
        ("/reports/reps.csv", "", 2),
        ("/review.csv", "review=all", 0),
    ]
    for path, query, expected in cases:
        response = client.get(f"{path}?{query}" if query else path)
        rows = csv_rows(response)
        entry = AccessLogEntry.objects.latest("id")
        assert (entry.kind, entry.path, entry.filters, entry.rows) == ("csv", path, query, len(rows)), path
        assert len(rows) == expected, (path, query)
        if path == "/visits.csv" and query.startswith("rep=31"):  # an oracle beside the CSV's own rows
            visits = Visit.objects.filter(rep_id=31)
            if "start" in query:
                visits = visits.filter(visited_at__gte=datetime(2026, 3, 1, tzinfo=UTC), visited_at__lt=APRIL)
            assert entry.rows == visits.count()
    assert AccessLogEntry.objects.filter(user=cast.manager, kind="csv").count() == len(cases)


def test_a_managers_csv_counts_the_rows_of_their_own_scope(client, visits_of_two_reps):
    manager = user_make("lead-32", group="Managers")
    SellLink.objects.create(user=manager, rep_id=32, via="admin")  # rep 32 reports to nobody: their own visits
    client.force_login(manager)
    rows = csv_rows(client.get("/visits.csv"))
    assert {row[3] for row in rows} == {"32"} and len(rows) == visits_of_two_reps[32]
    entry = AccessLogEntry.objects.get(user=manager)
    assert (entry.kind, entry.filters, entry.rows) == ("csv", "", 4)


def test_a_csv_left_midway_by_its_client_logs_the_rows_handed_out(cast, visits_of_two_reps):
    """As a WSGI server runs it (the test client would read it to the end): a few lines read, then
    the response closed, as the server does when writing to a client that has gone fails."""
    request = RequestFactory().get("/visits.csv?rep=31")
    request.user = cast.manager
    response = exports.visits_csv(request)
    lines = iter(response)
    header, first, second = next(lines), next(lines), next(lines)
    assert header.startswith("\ufeffid,".encode()) and first.startswith(b"3100,") and second.startswith(b"3101,")
    assert not AccessLogEntry.objects.exists()  # not before the stream ends
    request_finished.disconnect(close_old_connections)  # it would close the test's connection
    try:
        response.close()
        response.close()  # once only
    finally:
        request_finished.connect(close_old_connections)
    (entry,) = entries()
    assert (entry.kind, entry.path, entry.filters, entry.rows) == ("csv", "/visits.csv", "rep=31", 2)


def test_a_client_that_hangs_up_on_a_real_server_is_logged_with_what_was_sent(live_server, cast, client, settings):
    """Over a socket to the live server: a big CSV, a few kilobytes read, the connection reset.
    The entry counts fewer rows than the CSV holds, and at least those the client received."""
    total = 20_000
    AccessLogEntry.objects.bulk_create(
        AccessLogEntry(at=timezone.now(), username=f"user-{n}", kind="map", path="/map/frame/", filters="x" * 600)
        for n in range(total)
    )  # some 13 MB of CSV: far more than the sockets' buffers hold
    client.force_login(cast.superuser)
    cookie = settings.SESSION_COOKIE_NAME
    host, port = urlsplit(live_server.url).hostname, urlsplit(live_server.url).port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.sendall(
        f"GET /access_log.csv?kind=map HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Cookie: {cookie}={client.cookies[cookie].value}\r\n\r\n".encode()
    )
    received = b""
    while received.count(b"\n") < 60:
        chunk = sock.recv(4096)
        assert chunk, received[:300]
        received += chunk
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset, not close
    sock.close()
    assert b"200 OK" in received.split(b"\r\n", 1)[0]
    rows_received = received.split(b"\r\n\r\n", 1)[1].count(b"\n") - 1  # whole lines, less the header
    deadline = time.monotonic() + 60
    while not (found := AccessLogEntry.objects.filter(path="/access_log.csv").first()):
        assert time.monotonic() < deadline, "the server never logged the interrupted download"
        time.sleep(0.1)
    assert found.filters == "kind=map" and found.user_id == cast.superuser.id
    assert rows_received <= found.rows < total


# --- Append-only ---------------------------------------------------------------------------


def entry_make(*, days_ago: float = 0, user=None, username: str = "someone") -> AccessLogEntry:
    return AccessLogEntry.objects.create(
        at=timezone.now() - timedelta(days=days_ago), user=user, username=username, kind="visit",
        path="/visits/1/", object_id=1,
    )  # fmt: skip


def test_entries_cannot_be_edited_or_deleted_young_or_truncated_but_outlive_their_account(cast):
    entry = entry_make(user=cast.manager, username="manager")
    edits = [{"path": "/elsewhere/"}, {"username": "someone-else"}, {"rows": 3}, {"object_id": None},
             {"at": timezone.now() - timedelta(days=1000)}, {"user": cast.reviewer}]  # fmt: skip
    for edit in edits:
        with pytest.raises(DatabaseError, match="never edited"), transaction.atomic():
            AccessLogEntry.objects.filter(id=entry.id).update(**edit)
    entry.filters = "tampered"
    with pytest.raises(DatabaseError, match="never edited"), transaction.atomic():
        entry.save()
    with pytest.raises(DatabaseError, match="only by the purge"), transaction.atomic():
        AccessLogEntry.objects.filter(id=entry.id).delete()
    with pytest.raises(DatabaseError, match="only by the purge"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {access_log.TABLE}")
    if connection.vendor == "postgresql":
        with pytest.raises(DatabaseError, match="only by the purge"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's deferred checks, refused first
                cursor.execute(f"TRUNCATE {access_log.TABLE}")
    cast.manager.delete()  # Django's SET_NULL: the one change allowed
    kept = AccessLogEntry.objects.get(id=entry.id)
    assert (kept.user_id, kept.username, kept.path, kept.filters) == (None, "manager", "/visits/1/", "")
    with pytest.raises(DatabaseError, match="never edited"), transaction.atomic():
        AccessLogEntry.objects.filter(id=entry.id).update(user=cast.reviewer)  # nor given to someone else


def test_the_triggers_are_installed_and_checked_like_every_trigger_set():
    from visits import triggers

    assert "visits.security.access_log" in triggers.MODULES
    installed = triggers.triggers_on(connection=connection, table=access_log.TABLE)
    assert set(access_log.names(vendor=connection.vendor)) <= installed
    access_log.access_log_triggers_drop()
    assert {name for _, name in triggers.triggers_missing(connection=connection)} >= {access_log.IMMUTABLE}
    triggers.trigger_sets_install(connection=connection)  # what every `migrate` runs after
    assert not triggers.triggers_missing(connection=connection)


# --- The purge -----------------------------------------------------------------------------


def test_the_purge_removes_only_entries_older_than_access_log_days(settings, capsys):
    settings.ACCESS_LOG_DAYS = 400
    old, edge, young, new = (entry_make(days_ago=d) for d in (401, 399.9, 30, 0))
    call_command("access_log_purge")
    assert "1 access log entries older than 400 days deleted" in capsys.readouterr().out
    assert [e.id for e in entries()] == [edge.id, young.id, new.id] and old.id not in {e.id for e in entries()}
    settings.ACCESS_LOG_DAYS = 10  # lowered: the purge moves the triggers' bound with it
    assert access_log.access_log_purge() == 2
    assert [e.id for e in entries()] == [new.id]
    with pytest.raises(DatabaseError, match="only by the purge"), transaction.atomic():
        AccessLogEntry.objects.filter(id=new.id).delete()
    assert access_log.access_log_purge() == 0


def test_the_purge_runs_daily_from_setup_schedules():
    named = {name: (created, every) for name, created, every in schedules_setup()}
    assert named[ACCESS_LOG_SCHEDULE_NAME] == (True, "daily")
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name=ACCESS_LOG_SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type) == ("visits.tasks.access_log_purge_task", Schedule.DAILY)
    assert schedules_setup() and Schedule.objects.filter(name=ACCESS_LOG_SCHEDULE_NAME).count() == 1


# --- Reading the log: superusers only ------------------------------------------------------


HOSTILE_NAME = '=HYPERLINK("http://evil.example/","x")'


def test_superusers_download_the_log_filtered_with_formulas_escaped(client, cast, visits_of_two_reps):
    hostile = user_make(HOSTILE_NAME, group="Directors")
    client.force_login(hostile)
    client.get("/visits/3100/")
    body_of(client.get("/visits.csv?@SUM(1)&rep=32"))  # a query string anyone can write
    body_of(client.get("/visits.csv?-2+3"))
    client.force_login(cast.manager)
    client.get("/reports/reps/32/")
    entry_make(days_ago=40, username="old-timer")
    client.force_login(cast.superuser)

    rows = csv_rows(client.get("/access_log.csv"))  # oldest first
    assert [row[1:8] for row in rows] == [
        ["old-timer", "", "visit", "/visits/1/", "", "1", ""],
        ["'" + HOSTILE_NAME, str(hostile.id), "visit", "/visits/3100/", "", "3100", ""],
        ["'" + HOSTILE_NAME, str(hostile.id), "csv", "/visits.csv", "'@SUM(1)&rep=32", "", "4"],
        ["'" + HOSTILE_NAME, str(hostile.id), "csv", "/visits.csv", "'-2+3", "", "11"],
        ["manager", str(cast.manager.id), "rep", "/reports/reps/32/", "", "32", ""],
    ]
    assert rows[0][0] < rows[1][0] and rows[1][0].endswith("Z")  # ISO 8601, UTC
    by_user = csv_rows(client.get("/access_log.csv", {"user": HOSTILE_NAME}))
    assert [(row[3], row[5], row[7]) for row in by_user] == [
        ("visit", "", ""), ("csv", "'@SUM(1)&rep=32", "4"), ("csv", "'-2+3", "11"),
    ]  # fmt: skip
    assert all(row[1] == "'" + HOSTILE_NAME for row in by_user)
    today = timezone.localdate().isoformat()
    recent = csv_rows(client.get("/access_log.csv", {"start": today, "end": today, "kind": "rep"}))
    assert [(row[1], row[6]) for row in recent] == [("manager", "32")]
    old = csv_rows(client.get("/access_log.csv", {"end": (timezone.localdate() - timedelta(days=30)).isoformat()}))
    assert [row[1] for row in old] == ["old-timer"]
    assert AccessLogEntry.objects.filter(user=cast.superuser, path="/access_log.csv").count() == 4  # logged too
    assert client.get("/access_log.csv", {"start": "2026-13-01"}).status_code == 400
    assert client.get("/access_log.csv", {"kind": "everything"}).status_code == 400


def test_only_superusers_read_the_log_as_csv_or_in_the_admin(client, cast):
    entry_make(username="watched")
    staff = user_make("staff", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__endswith="accesslogentry"))
    for user in (cast.manager, cast.reviewer, staff):
        client.force_login(user)
        response = client.get("/access_log.csv")
        assert response.status_code == 403 and b"Only superusers can read the access log." in response.content
    client.force_login(staff)
    assert client.get("/admin/visits/accesslogentry/").status_code == 403
    assert b"accesslogentry" not in client.get("/admin/").content
    client.logout()
    assert client.get("/access_log.csv")["Location"].startswith("/accounts/login/?next=")
    client.force_login(cast.superuser)
    page = client.get("/admin/visits/accesslogentry/?kind__exact=visit")
    assert page.status_code == 200 and b"watched" in page.content and b'action="/access_log.csv"' in page.content
    assert b"/admin/visits/accesslogentry/add/" not in page.content
    entry = AccessLogEntry.objects.get(username="watched")
    assert client.get("/admin/visits/accesslogentry/add/").status_code == 403
    assert client.get(f"/admin/visits/accesslogentry/{entry.id}/delete/").status_code == 403
    assert client.post(f"/admin/visits/accesslogentry/{entry.id}/change/", {"path": "/x/"}).status_code == 403
    assert AccessLogEntry.objects.get(id=entry.id).path == "/visits/1/"


# --- The privacy notice --------------------------------------------------------------------


def test_every_page_shows_the_privacy_notice_escaped(client, cast, world, settings):  # noqa: F811
    settings.PRIVACY_NOTICE = "Positions are kept 30 days <script>alert(1)</script> & checked."
    shown = b"Positions are kept 30 days &lt;script&gt;alert(1)&lt;/script&gt; &amp; checked."
    pages = {"/accounts/login/": None, "/admin/login/": None}
    for url in pages:
        assert shown in client.get(url).content, url
    client.force_login(cast.outsider)
    assert shown in client.get("/").content  # the no-access page
    client.force_login(cast.manager)
    for url in ("/", "/reports/reps/31/", "/visits/3100/", "/map/", "/review/", "/accounts/password/"):
        response = client.get(url)
        assert response.status_code == 200 and shown in response.content, url
        assert b"<script>alert(1)" not in response.content, url
    missing = client.get("/visits/3199/")
    assert missing.status_code == 404 and shown in missing.content
    client.force_login(cast.superuser)
    assert shown in client.get("/admin/").content and shown in client.get("/admin/visits/visit/").content
    request = RequestFactory().get("/")
    assert shown in defaults.server_error(request).content  # rendered without a request context
    assert shown in defaults.bad_request(request, exception=None).content

"""Reports, filters, CSV exports and access, against data pulled from the demo Firehose."""

import csv
import io
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils.html import escape

from visits.ingest.sync import streams_sync
from visits.models import Outcome, Rep, VerificationStatus, Visit

pytestmark = pytest.mark.django_db

STATUSES = VerificationStatus.values


@pytest.fixture
def team(serve, small_team):
    server = serve(small_team)
    streams_sync()
    # Deleted visits must stay out of every count: make sure there are some, whatever the
    # generator's dice gave, by deleting a few more through the stream.
    for visit in Visit.objects.filter(deleted_at__isnull=True).order_by("id")[:3]:
        server.append("visits", [{
            "data": {"id": visit.id},
            "meta": {"type": "visit", "event_type": "deleted", "sequence": visit.sequence + 1,
                     "event_time": "2026-01-01T00:00:00Z", "event_id": f"report-test-delete-{visit.id}"},
        }])  # fmt: skip
    streams_sync()
    assert Visit.objects.filter(deleted_at__isnull=False).count() >= 3
    return small_team


@pytest.fixture
def manager_client(client, cast):
    client.force_login(cast.manager)
    return client


def live_visits():
    return list(Visit.objects.filter(deleted_at__isnull=True))


def csv_rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(body[1:])))


PAGES = ["/", "/reports/reps/", "/reports/outcomes/", "/reports/matrix/", "/visits/", "/reports/reps.csv",
         "/reports/outcomes.csv", "/reports/matrix.csv", "/visits.csv"]  # fmt: skip


@pytest.mark.parametrize("url", PAGES)
def test_access_by_role(client, cast, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(cast.outsider)
    response = client.get(url)
    assert response.status_code == 403 and b"neither the" in response.content
    for role in ("manager", "reviewer"):
        client.force_login(getattr(cast, role))
        assert client.get(url).status_code == 200


def test_login_page_signs_in_and_out(client, cast):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b"Sign in" in page.content
    response = client.post("/accounts/login/", {"username": "manager", "password": "pw-manager-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302


def test_rep_report_matches_direct_counts(manager_client, team):
    expected = {}
    for visit in live_visits():
        expected.setdefault(visit.rep_id, Counter())[visit.verification_status] += 1
    rows = csv_rows(manager_client.get("/reports/reps.csv"))
    assert {int(r["rep_id"]) for r in rows} == set(expected)
    names = dict(Rep.objects.values_list("id", "name"))
    for row in rows:
        counts = expected[int(row["rep_id"])]
        total = sum(counts.values())
        assert int(row["visits"]) == total
        assert [int(row[s]) for s in STATUSES] == [counts[s] for s in STATUSES]
        assert row["verified_rate"] == f"{counts['verified'] / total:.4f}"
        assert row["too_far_rate"] == f"{counts['resource_location_too_far'] / total:.4f}"
        assert row["rep_name"] == (names[int(row["rep_id"])] or f"Rep {row['rep_id']}")
    page = manager_client.get("/reports/reps/?sort=-too_far_rate").content.decode()
    worst = max(rows, key=lambda r: float(r["too_far_rate"]))
    assert page.index(f"/reports/reps/{worst['rep_id']}/") < min(
        page.index(f"/reports/reps/{r['rep_id']}/") for r in rows if r is not worst
    )
    # Each row's links keep the filters: its rep page, and its flagged visits in the queue.
    some = rows[0]["rep_id"]
    page = manager_client.get("/reports/reps/?start=2000-01-01&sort=name&resource_type=lead").content.decode()
    assert f'href="/reports/reps/{some}/?start=2000-01-01&amp;sort=name&amp;resource_type=lead"' in page
    assert f'href="/review/?start=2000-01-01&amp;resource_type=lead&amp;rep={some}&amp;review=all"' in page


def test_outcome_report_and_matrix_match_direct_counts(manager_client, team):
    by_outcome, by_cell = {}, {}
    for visit in live_visits():
        by_outcome.setdefault(visit.outcome_id, Counter())[visit.verification_status] += 1
        by_cell.setdefault((visit.rep_id, visit.outcome_id), Counter())[visit.verification_status] += 1
    rows = csv_rows(manager_client.get("/reports/outcomes.csv"))
    assert {int(r["outcome_id"]) if r["outcome_id"] else None: int(r["visits"]) for r in rows} == {
        k: sum(v.values()) for k, v in by_outcome.items()
    }
    names = dict(Outcome.objects.values_list("id", "name"))
    assert all(r["outcome_name"] == names[int(r["outcome_id"])] for r in rows if r["outcome_id"])
    cells = csv_rows(manager_client.get("/reports/matrix.csv"))
    assert list(cells[0]) == ["rep_id", "rep_name", "outcome_id", "outcome_name", "visits",
                              "resource_location_too_far", "too_far_rate", "too_far_median_m", "too_far_p90_m",
                              "far_visits"]  # fmt: skip
    got = {
        (int(c["rep_id"]), int(c["outcome_id"]) if c["outcome_id"] else None): (
            int(c["visits"]),
            int(c["resource_location_too_far"]),
        )
        for c in cells
    }
    assert got == {k: (sum(v.values()), v["resource_location_too_far"]) for k, v in by_cell.items()}


def test_overview_totals(manager_client, team):
    visits = live_visits()
    body = manager_client.get("/").content.decode()
    assert f'<span class="num">{len(visits):,}</span>' in body
    too_far = sum(v.verification_status == "resource_location_too_far" for v in visits) / len(visits)
    assert f"{too_far * 100:.1f}%" in body
    assert "at least 20 visits" in body


def test_filters_narrow_every_report(manager_client, team, settings):
    zone = ZoneInfo(settings.DISPLAY_TIME_ZONE)
    visits = live_visits()
    some = visits[len(visits) // 2]
    day = some.visited_at.astimezone(zone).date()
    start, end = day - timedelta(days=2), day
    rep_ids = sorted({v.rep_id for v in visits})[:2]
    query = (
        f"start={start}&end={end}&rep={rep_ids[0]}&rep={rep_ids[1]}&status=verified&status=resource_location_too_far"
    )
    lower = datetime.combine(start, datetime.min.time(), tzinfo=zone)
    upper = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    wanted = {
        v.id for v in visits
        if lower <= v.visited_at < upper and v.rep_id in rep_ids
        and v.verification_status in ("verified", "resource_location_too_far")
    }  # fmt: skip
    rows = csv_rows(manager_client.get(f"/visits.csv?{query}"))
    assert {int(r["id"]) for r in rows} == wanted
    reps = csv_rows(manager_client.get(f"/reports/reps.csv?{query}"))
    assert sum(int(r["visits"]) for r in reps) == len(wanted)
    outcome = some.outcome_id
    only = csv_rows(manager_client.get(f"/visits.csv?outcome={outcome}&resource_type={some.resource_type}"))
    assert {int(r["id"]) for r in only} == {
        v.id for v in visits if v.outcome_id == outcome and v.resource_type == some.resource_type
    }


@pytest.mark.parametrize(
    "query, message",
    [
        ("start=2026-02-31", "start: must be a date written YYYY-MM-DD"),
        ("end=yesterday", "end: must be a date written YYYY-MM-DD"),
        ("start=2026-05-02&end=2026-05-01", "start must not be after end"),
        ("rep=abc", "rep: abc is not a known rep id"),
        ("rep=999999", "rep: 999999 is not a known rep id"),
        ("outcome=1.5", "outcome: 1.5 is not a known outcome id"),
        ("status=teleported", "status: teleported is not one of"),
        ("sort=bogus", "sort: must be one of"),
    ],
)
def test_bad_filters_are_a_400_that_says_why(manager_client, team, query, message):
    for url in ("/reports/reps/", "/reports/reps.csv", "/visits/"):
        if "sort" in query and url.endswith(".csv"):
            continue
        response = manager_client.get(f"{url}?{query}")
        assert response.status_code == 400, url
        assert message in response.content.decode()


def test_csv_escapes_formulas_and_keeps_awkward_text(manager_client, team):
    rep = Visit.objects.filter(deleted_at__isnull=True).first().rep
    rep.name = '=HYPERLINK("http://x")'
    rep.save()
    visit = Visit.objects.filter(deleted_at__isnull=True, rep=rep).first()
    visit.summary = 'Said "maybe", then left,\nsee notes'
    visit.save()
    reps = csv_rows(manager_client.get("/reports/reps.csv"))
    assert next(r for r in reps if int(r["rep_id"]) == rep.id)["rep_name"] == '\'=HYPERLINK("http://x")'
    rows = csv_rows(manager_client.get("/visits.csv"))
    row = next(r for r in rows if int(r["id"]) == visit.id)
    assert row["summary"] == 'Said "maybe", then left,\nsee notes'
    assert row["rep_name"].startswith("'=")
    assert row["visited_at"].endswith("Z") and "T" in row["visited_at"]
    negative = [r for r in rows if r["longitude"].startswith("-")]
    assert negative, "numbers (negative longitudes) are left alone"
    assert not any(
        int(r["id"]) in set(Visit.objects.filter(deleted_at__isnull=False).values_list("id", flat=True)) for r in rows
    )


def test_names_written_by_the_views_are_escaped_in_rows_cells_and_filter_options(manager_client, team):
    """The report rows, the matrix rows and the filter bar's options are written in Python, not by
    the template: hostile rep and outcome names come out as text there, and a chosen rep stays
    selected."""
    visit = Visit.objects.filter(deleted_at__isnull=True, outcome__isnull=False).select_related("rep", "outcome")[0]
    rep_name, outcome_name = '<script>alert("rep")</script>&\'"', '<img src=x onerror=alert(1)>"'
    Rep.objects.filter(id=visit.rep_id).update(name=rep_name)
    Outcome.objects.filter(id=visit.outcome_id).update(name=outcome_name)
    for url in ("/reports/reps/", "/reports/outcomes/", "/reports/matrix/", f"/reports/reps/?rep={visit.rep_id}"):
        page = manager_client.get(url).content.decode()
        assert "<script>alert" not in page and "<img src=x" not in page, url
        assert escape(rep_name) in page and escape(outcome_name) in page, url  # options, rows, columns
    page = manager_client.get(f"/reports/reps/?rep={visit.rep_id}").content.decode()
    assert f'<option value="{visit.rep_id}" selected>{escape(rep_name)}</option>' in page
    assert f'<a href="/reports/reps/{visit.rep_id}/?rep={visit.rep_id}">{escape(rep_name)}</a>' in page
    page = manager_client.get("/reports/matrix/").content.decode()
    assert f'<th class="num">{escape(outcome_name)}</th>' in page
    assert f'<th><a href="/reports/reps/{visit.rep_id}/?">{escape(rep_name)}</a></th>' in page


def test_csv_is_streamed_with_a_named_file(manager_client, team):
    response = manager_client.get("/visits.csv?start=2026-01-01&end=2026-12-31")
    assert response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="visits_2026-01-01_to_2026-12-31.csv"'
    assert response["Content-Type"].startswith("text/csv")


def test_rep_page_and_visit_page(manager_client, team):
    visit = Visit.objects.filter(deleted_at__isnull=True).first()
    page = manager_client.get(f"/reports/reps/{visit.rep_id}/").content.decode()
    assert "By outcome" in page and f"/visits/{visit.id}/" in page or "Latest visits" in page
    detail = manager_client.get(f"/visits/{visit.id}/").content.decode()
    assert str(visit.id) in detail and visit.get_verification_status_display() in detail
    assert manager_client.get("/reports/reps/1/").status_code == 404


def test_empty_state(manager_client, cast, settings):
    settings.SELL_ACCESS_TOKEN = "x"  # an install that syncs; without a token it is a read-only archive
    body = manager_client.get("/").content.decode()
    assert "No visits match these filters" in body
    assert "No data pulled from Sell yet" in body


def test_last_month_preset_links_keep_other_filters(manager_client, team):
    from django.utils import timezone

    today = timezone.localdate()
    last_end = today.replace(day=1) - timedelta(days=1)
    body = manager_client.get("/reports/matrix/?status=verified").content.decode()
    link = f"?status=verified&amp;start={last_end.replace(day=1)}&amp;end={last_end}"
    assert f'href="{link}">Last month</a>' in body

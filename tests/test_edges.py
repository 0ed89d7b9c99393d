"""Pages never trust the data or the query string: visits stored at the ends of the calendar,
dates at the ends of the calendar in filters, ids too large for the database. Each is a page
or a 400 with a message, never a 500."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group
from django.db import transaction

from visits.ingest.pages import visits_upsert
from visits.models import Decision, Flag, Rep, Visit
from visits.review.flags import flags_rebuild

pytestmark = pytest.mark.django_db

EDGES = [datetime(1, 1, 1, 0, 0, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)]
HUGE = "99999999999999999999999"


def edge_visits_make() -> list[int]:
    """Visits at the first and the last instant a datetime can hold, too far and flagged."""
    Rep.objects.create(id=77, name="Edge rep")
    rows = {}
    for i, at in enumerate(EDGES):
        for j in range(2):
            rows[800 + 10 * i + j] = {
                "rep_id": 77, "resource_type": "lead", "resource_id": 5, "visited_at": at, "created_at": at,
                "summary": "at the edge", "outcome_id": None, "latitude": 10.0 + j, "longitude": 20.0 + j,
                "verification_status": "resource_location_too_far", "sequence": 1, "event_time": at, "deleted_at": None,
            }  # fmt: skip
    with transaction.atomic():
        visits_upsert(rows=rows)
    return sorted(rows)


@pytest.fixture
def reviewer(client, cast):
    """The test client as the cast's superuser (also a Reviewer): every page, the admin too."""
    cast.superuser.groups.add(Group.objects.get(name="Reviewers"))
    client.force_login(cast.superuser)
    return client


PAGES = [
    "/", "/reports/reps/", "/reports/reps/77/", "/reports/outcomes/", "/reports/matrix/", "/visits/",
    "/visits/?sort=-visited_at", "/visits/?sort=visited_at", "/review/", "/review/?review=all", "/map/",
    "/map/frame/", "/reports/reps.csv", "/reports/outcomes.csv", "/reports/matrix.csv", "/visits.csv",
    "/status/", "/admin/visits/flaggedvisit/", "/admin/visits/visit/",
]  # fmt: skip


def test_visits_at_the_ends_of_the_calendar_break_no_page(reviewer):
    ids = edge_visits_make()
    flags_rebuild()  # the rules too must cope with such times
    assert Flag.objects.filter(visit_id__in=ids).exists()
    for url in PAGES + [f"/visits/{i}/" for i in ids] + [f"/visits/{i}/map/" for i in ids]:
        response = reviewer.get(url)
        assert response.status_code == 200, url
    review = reviewer.get("/review/?review=all").content.decode()
    assert all(f'id="visit-{i}"' in review for i in ids)


@pytest.mark.parametrize(
    "query",
    [
        "end=9999-12-31", "start=9999-12-01", "end=0001-01-01", "start=0001-01-01", "start=0001-01-01&end=9999-12-31",
        "start=1900-01-01", "end=2999-01-01", f"rep={HUGE}", f"outcome={HUGE}", "rep=-1", f"page={HUGE}",
    ],
)  # fmt: skip
def test_dates_and_ids_out_of_range_are_a_400_with_a_message(reviewer, query):
    edge_visits_make()
    for path in ("/", "/reports/reps/", "/reports/matrix/", "/visits/", "/visits.csv", "/map/frame/", "/review/"):
        response = reviewer.get(f"{path}?{query}")
        if query.startswith("page="):
            assert response.status_code == 200, path  # a page past the end shows the last one
            continue
        assert response.status_code == 400, (path, query)
        body = response.content.decode()
        assert "must be" in body or "is not a known" in body, (path, query, body[:300])


def test_dates_inside_the_bounds_still_work_and_follow_the_settings(reviewer, settings):
    edge_visits_make()
    assert reviewer.get("/reports/reps/?start=1990-01-01&end=2100-12-31").status_code == 200
    settings.SELL_TIME_MIN_YEAR, settings.SELL_TIME_MAX_YEAR = 1995, 2050
    response = reviewer.get("/reports/reps/?start=1990-01-01")
    assert response.status_code == 400 and "must be between 1995-01-01 and 2050-12-31" in response.content.decode()


@pytest.mark.parametrize("url", [f"/visits/{HUGE}/", f"/visits/{HUGE}/map/", f"/visits/{HUGE}/summary.json",
                                 f"/reports/reps/{HUGE}/", "/visits/9223372036854775808/"])  # fmt: skip
def test_ids_too_large_for_the_database_are_a_404(reviewer, url):
    assert reviewer.get(url).status_code == 404


@pytest.mark.parametrize("visit", [HUGE, "9223372036854775808", "0", "-5", "abc", ""])
def test_a_decision_on_an_impossible_visit_id_is_a_400(reviewer, visit):
    response = reviewer.post("/review/decide/", {"visit": [visit], "kind": "accept", "reason": "gps_noise", "note": ""})
    assert response.status_code == 400
    assert "visit" in response.content.decode()
    assert not Decision.objects.exists()
    assert Visit.objects.count() == 0

"""The ingestion status page and the rejected-items list, for staff only."""

import pytest
from django.contrib.auth.models import User

from visits.ingest.sync import streams_sync
from visits.models import RejectedItem, SyncState

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = User.objects.create_user("admin", password="pw-for-tests", is_staff=True)
    client.force_login(user)
    return client


def test_anonymous_and_non_staff_are_sent_to_login(client):
    assert client.get("/status/").status_code == 302
    client.force_login(User.objects.create_user("rep", password="x"))
    response = client.get("/status/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_empty_state_before_the_first_poll(staff):
    body = staff.get("/status/").content.decode()
    assert "not polled yet" in body and "No gaps" in body


def test_status_shows_figures_after_a_sync(staff, serve, small_team):
    serve(small_team)
    streams_sync()
    body = staff.get("/status/").content.decode()
    state = SyncState.objects.get(stream="visits")
    assert "caught up" in body
    assert f"<dd>{state.events_applied:,}</dd>" in body
    assert f">{state.items_rejected:,}</a>" in body
    assert "Lag" in body and "newest event" in body


def test_status_shows_the_last_error(staff, serve, small_team, settings):
    serve(small_team)
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    body = staff.get("/status/").content.decode()
    assert "failing" in body and "the access token was refused" in body


def test_rejected_items_are_listed_escaped(staff):
    RejectedItem.objects.create(
        stream="visits", digest="d1", raw='{"summary": "<script>alert(1)</script>"}', reason="data is not an object"
    )
    body = staff.get("/status/rejected/?stream=visits").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert(1)" not in body
    assert "data is not an object" in body
    assert "Nothing rejected" in staff.get("/status/rejected/?stream=users").content.decode()


def test_rejected_bad_stream_filter_is_a_400(staff):
    response = staff.get("/status/rejected/?stream=deals")
    assert response.status_code == 400 and b"stream must be one of" in response.content


def test_admin_index_links_to_status(staff):
    assert b'href="/status/"' in staff.get("/admin/").content


def test_status_shows_the_flags_and_tallies_the_worker_derives(staff, serve, small_team, settings):
    from visits.models import DirtyRep, Flag
    from visits.review.flags import flags_refresh

    serve(small_team)
    streams_sync()
    pending = DirtyRep.objects.count()
    assert pending > 0
    body = staff.get("/status/").content.decode()
    assert f"{pending:,}: the worker recomputes them" in body and "current, by the days of UTC" in body
    flags_refresh()
    flagged = Flag.objects.values("visit").distinct().count()
    body = staff.get("/status/").content.decode()
    assert "none: every flag is current" in body and f"<dd>{flagged:,} (" in body
    settings.DISPLAY_TIME_ZONE = "Europe/Paris"
    body = staff.get("/status/").content.decode()
    assert "stale" in body and "not Europe/Paris" in body

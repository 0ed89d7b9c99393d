"""The ingestion status page and the rejected-items list, for staff only."""

import html
import re
from datetime import UTC, datetime

import pytest

from visits.ingest.sync import stream_sync, streams_sync
from visits.models import Outcome, RejectedItem, Rep, SyncState, Visit

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, cast):
    """The test client as the cast's superuser (staff: the status pages are for staff only)."""
    client.force_login(cast.superuser)
    return client


def test_anonymous_and_non_staff_are_sent_to_login(client, cast):
    assert client.get("/status/").status_code == 302
    client.force_login(cast.outsider)
    response = client.get("/status/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_empty_state_before_the_first_poll(staff, settings):
    settings.SELL_ACCESS_TOKEN = "x"  # an install that syncs; without a token it is a read-only archive
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


def status_figures(body: str) -> dict:
    """What the status page shows, read by its labels: the totals ("visits held" -> 1234), and
    per stream card its message and each <dt> label -> the text of its <dd>."""
    text = lambda fragment: re.sub(r"<[^>]+>", "", fragment).strip()  # noqa: E731
    totals = {
        text(label): int(num.replace(",", ""))
        for num, label in re.findall(r'<span class="num">([^<]*)</span><span class="label">(.*?)</span>', body)
    }
    streams = {}
    for stream, card in re.findall(r'data-stream="(\w+)">(.*?)</section>', body, re.S):
        streams[stream] = {text(dt): text(dd) for dt, dd in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", card, re.S)}
        streams[stream]["message"] = html.unescape(text(re.search(r'<p class="message">(.*?)</p>', card, re.S)[1]))
    return {"totals": totals, "streams": streams}


def number(shown: str) -> int:
    return int(shown.replace(",", ""))


def test_the_status_figures_are_the_databases(staff, serve, small_team, settings):
    """Every figure on the page is counted here from the tables (and the generator's truth),
    after a sync with deletes, rejected items, an unnamed rep and a failing stream."""
    server = serve(small_team)
    streams_sync()
    deleted = list(Visit.objects.filter(deleted_at__isnull=True).order_by("id")[:2])
    server.append("visits", [{
        "data": {"id": v.id},
        "meta": {"type": "visit", "event_type": "deleted", "sequence": v.sequence + 1,
                 "event_time": "2026-01-20T16:00:00Z", "event_id": f"status-test-delete-{v.id}"},
    } for v in deleted])  # fmt: skip
    streams_sync()
    settings.SELL_ACCESS_TOKEN = "wrong"
    stream_sync(stream="users")  # the users stream now fails; the visits one stays caught up

    shown = status_figures(staff.get("/status/").content.decode())
    live = Visit.objects.filter(deleted_at__isnull=True).count()
    gone = Visit.objects.filter(deleted_at__isnull=False).count()
    unnamed = Rep.objects.filter(name="").count()
    assert gone >= 2 and unnamed >= 1 and RejectedItem.objects.count() > 0  # every figure is worth reading
    assert shown["totals"] == {
        "visits held": live,
        "deleted in Sell (kept for audit)": gone,
        f"reps ({unnamed} not yet named)": Rep.objects.count(),
        "outcomes": Outcome.objects.count(),
    }
    assert live + gone == len({v for v, want in small_team.expected_visits().items() if want["snapshot"]})
    for stream in ("visits", "users"):
        state, card = SyncState.objects.get(stream=stream), shown["streams"][stream]
        rejected = RejectedItem.objects.filter(stream=stream).count()
        assert rejected == small_team.malformed_count[stream], stream
        assert number(card["Rejected items"]) == rejected == state.items_rejected, stream
        assert number(card["Events applied"]) == state.events_applied > 0, stream
        assert number(card["Pages read"]) == state.pages > 0, stream
        assert number(card["Duplicates and stale events ignored"]) == state.events_skipped, stream
        newest = state.newest_event_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert f"newest event {newest} UTC" in card["Lag (now − newest event)"], stream
    visits, users = shown["streams"]["visits"], shown["streams"]["users"]
    assert visits["message"] == "Caught up." and visits["Caught up"].startswith("yes")
    assert SyncState.objects.get(stream="visits").newest_event_time == datetime(2026, 1, 20, 16, 0, tzinfo=UTC)
    users_state = SyncState.objects.get(stream="users")
    assert "the access token was refused" in users_state.last_error
    assert users["message"] == users_state.last_error

"""A hostile Firehose through the real sync, then every page, map frame and popup in Chromium:
nothing executes, no template expression is evaluated, nothing is a 500, and every well-formed
visit arrives while every malformed item becomes a rejected item."""

import csv
import io
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from visits.demo.server import DemoFirehose
from visits.ingest.sync import streams_sync
from visits.models import Outcome, RejectedItem, Rep, Visit
from visits.review.flags import flags_refresh

from .conftest import DEMO_NOW, TOKEN, browser_sign_in
from .hostile import EVALUATED, hostile_data

pytestmark = pytest.mark.django_db(transaction=True)

# Reports that the query string narrows or sorts, and the lists and admin pages.
PAGES = [
    "/", "/reports/reps/", "/reports/reps/?sort=-too_far_rate", "/reports/outcomes/", "/reports/matrix/",
    "/visits/", "/visits/?sort=rep", "/visits/?sort=outcome", "/review/?review=all", "/review/", "/map/",
    "/map/frame/", "/status/", "/status/rejected/", "/status/rejected/?stream=users", "/admin/",
    "/admin/visits/visit/", "/admin/visits/rep/", "/admin/visits/outcome/", "/admin/visits/flaggedvisit/",
    "/admin/visits/rejecteditem/", "/admin/visits/syncstate/",
]  # fmt: skip

WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture
def hostile(settings, tmp_path):
    """The hostile data served by a real demo Firehose, synced as the worker would."""
    marker = tmp_path / "template-injection-ran"
    data = hostile_data(marker=marker, now=DEMO_NOW)
    server = DemoFirehose(data, token=TOKEN).start()
    settings.SELL_API_URL, settings.SELL_ACCESS_TOKEN = server.url, TOKEN
    settings.SELL_BACKOFF_BASE, settings.SELL_BACKOFF_CAP, settings.SELL_TIMEOUT = 0.001, 0.01, 5
    settings.MAP_TILES_URL = ""
    try:
        results = streams_sync()
        flags_refresh()
        yield data, results, marker
    finally:
        server.stop()


def test_every_well_formed_visit_arrives_and_every_bad_item_is_rejected(hostile):
    data, results, _ = hostile
    assert [r.error for r in results] == ["", ""], results
    assert all(r.at_top for r in results)
    visits = {v.id: v for v in Visit.objects.all()}
    assert set(visits) == set(data.expected_visits)
    for visit_id, want in data.expected_visits.items():
        got = visits[visit_id]
        assert (got.summary, got.rep_id, got.latitude, got.verification_status, got.resource_type) == (
            want["summary"],
            want["rep_id"],
            want["latitude"],
            want["verification_status"],
            want["resource_type"],
        ), visit_id
    names = dict(Rep.objects.filter(id__in=data.expected_reps).values_list("id", "name"))
    assert names == data.expected_reps
    assert RejectedItem.objects.filter(stream="visits").count() == data.malformed["visits"]
    assert RejectedItem.objects.filter(stream="users").count() == data.malformed["users"]
    for item in RejectedItem.objects.all():
        item.raw.encode("utf-8")  # kept in a form the database and the pages can hold
        assert item.reason


def test_no_exported_cell_is_a_formula(hostile, client, cast):
    client.force_login(cast.superuser)
    cells = 0
    for url in ("/visits.csv", "/reports/reps.csv", "/reports/outcomes.csv", "/reports/matrix.csv"):
        response = client.get(url)
        assert response.status_code == 200, url
        for line in csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))):
            for cell in line:
                cells += 1
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), (url, cell[:60])
                assert not (cell.startswith("-") and not cell[1:].replace(".", "").isdigit()), (url, cell[:60])
    assert cells > 100


@pytest.mark.slow
def test_no_page_frame_or_popup_runs_or_evaluates_what_sell_sent(hostile, live_server, page, cast):
    data, _, marker = hostile
    seen = {"dialogs": [], "errors": [], "server_errors": [], "outside": []}
    here = urlsplit(live_server.url).netloc
    page.context.add_init_script(WATCH)
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("console", lambda m: m.type in ("error", "warning") and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("response", lambda r: r.status >= 500 and seen["server_errors"].append(f"{r.status} {r.url}"))
    page.on("request", lambda r: urlsplit(r.url).netloc not in (here, "") and seen["outside"].append(r.url))
    cast.superuser.groups.add(Group.objects.get(name="Reviewers"))
    browser_sign_in(page, f"{live_server.url}/", user=cast.superuser)

    visit_ids = sorted(data.expected_visits)
    urls = PAGES + [f"/visits/{v}/" for v in visit_ids] + [f"/reports/reps/{r}/" for r in data.expected_reps]
    urls += [f"/admin/visits/visit/{visit_ids[0]}/change/", f"/admin/visits/rep/{min(data.expected_reps)}/change/"]
    urls += [f"/admin/visits/rejecteditem/{i}/change/" for i in RejectedItem.objects.values_list("id", flat=True)[:5]]
    urls += [f"/admin/visits/outcome/{i}/change/" for i in Outcome.objects.values_list("id", flat=True)[:2]]
    for url in urls:
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 200, url
        for frame in page.frames[1:]:  # map frames (lazy ones off screen aside): drawn, nothing else run
            if "/map/" in frame.url:  # polled: a frame off screen gets no animation frames
                frame.wait_for_function("() => window.visitsdashLoaded === true", polling=100)
        html = page.content()
        assert EVALUATED not in html, url
        assert page.evaluate("window.__violations") == [], url

    # Every visit's popup on the big map, its place zoomed in on (the single visits of
    # /map/points.json): the visit's own rep and summary, as text.
    page.goto(f"{live_server.url}/map/")
    map_frame = page.frames[1]
    map_frame.wait_for_function("() => window.visitsdashLoaded === true")
    frame = page.frame_locator("iframe.map")
    located = [v for v, want in data.expected_visits.items() if want["latitude"] is not None]
    positions = dict(Visit.objects.filter(id__in=located).values_list("id", "latitude"))
    longitudes = dict(Visit.objects.filter(id__in=located).values_list("id", "longitude"))
    the_map = "window[Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))]"
    opened: set[int] = set()
    for visit_id in located:
        if visit_id in opened:
            continue
        draws = map_frame.evaluate("() => window.visitsdashDraws")
        map_frame.evaluate(f"() => {{ {the_map}.setView([{positions[visit_id]}, {longitudes[visit_id]}], 18); }}")
        map_frame.wait_for_function(
            "d => window.visitsdashDraws > d && !window.visitsdashPending && window.visitsdashDrawn === 'points'",
            arg=draws,
        )
        markers = frame.locator("path.leaflet-interactive")
        assert markers.count() >= 1, visit_id
        for i in range(markers.count()):
            map_frame.evaluate("document.querySelectorAll('.leaflet-popup-close-button').forEach(b => b.click())")
            expect(frame.locator(".leaflet-popup")).to_have_count(0)
            markers.nth(i).dispatch_event("click")  # whether or not a neighbour covers it
            opened.add(popup_check(frame, data))
    assert opened == set(located)
    for visit_id in located[:6]:  # a visit page's own map
        page.goto(f"{live_server.url}/visits/{visit_id}/")
        page.frames[1].wait_for_function("() => window.visitsdashLoaded === true")
        page.frame_locator("iframe.map").locator("path.leaflet-interactive").first.dispatch_event("click")
        assert popup_check(page.frame_locator("iframe.map"), data) == visit_id
    assert page.evaluate("window.__violations") == []

    assert not marker.exists(), "a template expression ran a shell command"
    assert seen == {"dialogs": [], "errors": [], "server_errors": [], "outside": []}


def popup_check(frame, data) -> int:
    """The open popup shows its visit's rep and summary exactly; returns the visit's id."""
    popup = frame.locator(".leaflet-popup-content .visit-popup")
    popup.wait_for()
    visit_id = int(popup.locator("a").get_attribute("href").strip("/").split("/")[-1])
    want = data.expected_visits[visit_id]
    assert popup.locator("strong").text_content() == data.expected_reps[want["rep_id"]]
    summary = popup.locator(".summary")
    expect(summary).not_to_have_text("…")
    assert summary.text_content() == (want["summary"] or "(no summary)")
    return visit_id


@pytest.mark.slow
def test_the_reviewer_sees_bad_items_as_text(hostile, live_server, page, cast):
    """The rejected items' page shows each raw item, escaped, with its reason."""
    data, _, _ = hostile
    browser_sign_in(page, f"{live_server.url}/status/rejected/", user=cast.superuser)  # staff
    rows = page.locator("table.rejected tbody tr")
    assert rows.count() == data.malformed["visits"] + data.malformed["users"]
    text = page.locator("table.rejected").inner_text()
    assert "\\ud800" in text  # a lone surrogate, kept as its JSON escape

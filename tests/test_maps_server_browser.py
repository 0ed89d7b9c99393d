"""The map drawn from the server's clusters and points (/map/clusters.json, /map/points.json), in
headless Chromium, offline: from the world view, zoomed and panned down to a single visit's popup.
The page's requests for them are recorded from the browser's side."""

from urllib.parse import parse_qsl, urlsplit

import pytest
from django.conf import settings as django_settings

from visits.models import Visit

from .conftest import browser_sign_in
from .test_maps import PAYLOAD, customer_locate, visits_make
from .test_maps_browser import basemap_check, popup_check, watched  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # Chromium


@pytest.fixture
def server_map(settings, watched):  # noqa: F811
    """The page, what it saw, and the map's JSON requests it made (path and query, in order)."""
    settings.MAP_TILES_URL = ""
    page, seen = watched
    asked: list[dict] = []

    def record(request) -> None:
        url = urlsplit(request.url)
        if url.path in ("/map/clusters.json", "/map/points.json"):
            asked.append({"path": url.path, **dict(parse_qsl(url.query))})

    page.on("request", record)
    return page, seen, asked


MAP = "window[Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))]"  # folium names it map_<hex>


def drawn_after(frame, draws: int) -> str:
    """Waits for a drawing after the `draws`th; its kind ("clusters" or "points")."""
    frame.wait_for_function("draws => (window.visitsdashDraws || 0) > draws", arg=draws)
    return frame.evaluate("() => window.visitsdashDrawn")


def cluster_counts(frame) -> list[int]:
    clusters = frame.locator(".visit-cluster")
    return sorted(int(clusters.nth(i).inner_text()) for i in range(clusters.count()))


def draws_of(frame) -> int:
    return frame.evaluate("() => window.visitsdashDraws || 0")


def test_from_the_world_to_a_visits_popup(live_server, server_map, cast):
    page, seen, ASKED = server_map
    visits_make()
    customer_locate()
    browser_sign_in(page, f"{live_server.url}/map/?rep=900", user=cast.manager)
    frame = page.frames[1]
    frame.wait_for_function("() => window.visitsdashDraws > 0")
    assert ASKED and all(a["rep"] == "900" for a in ASKED)  # the page's filters go with every request
    basemap_check(page, page.frame_locator("iframe.map"))
    # The world view: every visit counted in the clusters, their counts as text, the legend's line.
    draws = draws_of(frame)
    frame.evaluate(f"() => {{ {MAP}.setView([20, 0], 2); }}")
    assert drawn_after(frame, draws) == "clusters"
    assert cluster_counts(frame) == [12]  # the three cities, in one cell of 16 degrees
    assert page.locator("[data-in-view]").inner_text() == "12 visits in view"
    assert ASKED[-1]["zoom"] == "2" and ASKED[-1]["path"] == "/map/clusters.json"
    # A pan: a new box asked, the same visits drawn.
    asked = len(ASKED)
    draws = draws_of(frame)
    frame.evaluate(f"() => {{ {MAP}.panBy([200, 0]); }}")
    drawn_after(frame, draws)
    assert len(ASKED) > asked and ASKED[-1]["bbox"] != ASKED[asked - 1]["bbox"]
    assert sum(cluster_counts(frame)) == 12
    # Zoomed in on the cities: more clusters, the same total.
    draws = draws_of(frame)
    frame.evaluate(f"() => {{ {MAP}.setView([41.88, -87.63], 6); }}")
    drawn_after(frame, draws)
    assert len(cluster_counts(frame)) > 1 and sum(cluster_counts(frame)) <= 12
    # Click a cluster, again and again: each zooms in, until single visits are drawn.
    while frame.evaluate("() => window.visitsdashDrawn") == "clusters":
        draws = draws_of(frame)
        frame.locator(".visit-cluster").first.click()
        drawn_after(frame, draws)
    assert int(ASKED[-1]["zoom"]) >= django_settings.MAP_POINTS_ZOOM and ASKED[-1]["path"] == "/map/points.json"
    markers = frame.locator("path.leaflet-interactive")
    assert 1 <= markers.count() <= 4  # one city's visits
    markers.last.click()
    popup_check(page.frame_locator("iframe.map"))
    frame.locator("path.visit-customer-line").wait_for(state="attached")  # the customer, while the popup is open
    assert frame.locator(".leaflet-popup-content strong").inner_text() == PAYLOAD
    assert seen == {"outside": [], "errors": [], "dialogs": []}


def test_the_heat_layer_from_the_clusters_too_far_counts(live_server, server_map, cast):
    page, seen, ASKED = server_map
    visits_make()
    browser_sign_in(page, f"{live_server.url}/map/", user=cast.manager)
    frame = page.frames[1]
    frame.wait_for_function("() => window.visitsdashDraws > 0")
    page.frame_locator("iframe.map").get_by_label("Too-far heat map").check()
    page.frame_locator("iframe.map").locator("canvas.leaflet-heatmap-layer").wait_for()
    heat = frame.evaluate(
        f"() => {{ let n = 0; {MAP}.eachLayer(l => {{ if (l._heat) n = l._latlngs.reduce((s, p) => s + p[2], 0); }});"
        " return n; }"
    )
    assert heat == Visit.objects.filter(verification_status="resource_location_too_far").count() == 6
    assert "rep" not in ASKED[-1]
    assert seen == {"outside": [], "errors": [], "dialogs": []}


def test_clusters_that_would_overlap_are_drawn_as_one(live_server, server_map, cast):
    """Visits a few metres either side of a cell edge (42 degrees north is one at every zoom): two
    cells, two clusters from the server, one circle drawn, the count summed; far ones stay apart."""
    from datetime import UTC, datetime

    from django.db import transaction

    from visits.ingest.pages import visits_upsert
    from visits.models import Rep

    from .test_maps import row

    page, seen, ASKED = server_map
    Rep.objects.create(id=900, name="Rep")
    at = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)
    places = [(41.9999, -87.8), (42.0001, -87.8), (42.0002, -87.8), (41.0, -85.0)]
    with transaction.atomic():
        visits_upsert(
            rows={
                1000 + i: {**row(at=at, status="verified", lat=lat, lng=lng), "outcome_id": None}
                for i, (lat, lng) in enumerate(places)
            }
        )
    browser_sign_in(page, f"{live_server.url}/map/", user=cast.manager)
    frame = page.frames[1]
    frame.wait_for_function("() => window.visitsdashDraws > 0")
    draws = draws_of(frame)
    frame.evaluate(f"() => {{ {MAP}.setView([41.5, -86.5], 7); }}")
    drawn_after(frame, draws)
    box = ASKED[-1]["bbox"]
    server = page.request.get(f"{live_server.url}/map/clusters.json?bbox={box}&zoom=7").json()
    assert sorted(c["count"] for c in server["clusters"]) == [1, 1, 2]  # 42 degrees parts two cells
    assert cluster_counts(frame) == [1, 3]
    rects = frame.evaluate(
        "() => [...document.querySelectorAll('.visit-cluster')].map(n => { const r = n.getBoundingClientRect();"
        " return [r.left, r.top, r.right, r.bottom]; })"
    )
    (a, b) = rects
    assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]  # no two circles overlap
    assert seen == {"outside": [], "errors": [], "dialogs": []}

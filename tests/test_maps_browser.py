"""The map in headless Chromium, offline: clusters and markers drawn, popups opened, the payload
shown as text, the popup's link followed, and no request to any other host, no console error."""

from urllib.parse import urlsplit

import pytest

from .conftest import browser_sign_in
from .test_maps import PAYLOAD, PLACES, visits_make

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # Chromium


@pytest.fixture
def watched(page, live_server):
    """The page, with what it requested elsewhere, its console errors and its dialogs recorded."""
    seen = {"outside": [], "errors": [], "dialogs": []}
    here = urlsplit(live_server.url).netloc
    page.on("request", lambda r: urlsplit(r.url).netloc not in (here, "") and seen["outside"].append(r.url))
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    return page, seen


def sign_in(page, live_server, path: str, *, cast) -> None:
    browser_sign_in(page, f"{live_server.url}{path}", user=cast.manager)


def popup_check(frame) -> None:
    popup = frame.locator(".leaflet-popup-content .visit-popup")
    popup.wait_for()
    assert popup.locator("strong").inner_text() == PAYLOAD  # the rep's name, as text
    summary = popup.locator(".summary")
    summary.filter(has_text="Summary").wait_for()
    assert summary.inner_text() == f"Summary {PAYLOAD}"


MAP = "window[Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))]"  # folium names it map_<hex>


def clusters_total(page) -> int:
    """The visits counted in the clusters drawn, once the first drawing is in."""
    inner = page.frames[1]
    inner.wait_for_function("() => window.visitsdashLoaded === true")  # the signal bench/map.py waits for
    counts = inner.evaluate("() => [...document.querySelectorAll('.visit-cluster')].map(c => c.textContent)")
    return sum(int(count) for count in counts)


def points_show(page, place: tuple[float, float]) -> None:
    """The map zoomed in on a place, past MAP_POINTS_ZOOM: its single visits drawn."""
    from django.conf import settings

    inner = page.frames[1]
    inner.wait_for_function("() => window.visitsdashLoaded === true")
    draws = inner.evaluate("() => window.visitsdashDraws")
    inner.evaluate(f"() => {{ {MAP}.setView([{place[0]}, {place[1]}], {settings.MAP_POINTS_ZOOM + 3}); }}")
    inner.wait_for_function("d => window.visitsdashDraws > d && window.visitsdashDrawn === 'points'", arg=draws)


def test_clusters_offline_open_a_popup_and_follow_it(live_server, watched, settings, cast):
    page, seen = watched
    settings.MAP_TILES_URL = ""
    visits_make()
    sign_in(page, live_server, "/map/", cast=cast)
    legend = page.locator(".legend").inner_text()
    assert "Verified 6" in legend and "Too far from the customer 6" in legend
    assert "2 visits without a location" in legend
    frame = page.frame_locator("iframe.map")
    assert clusters_total(page) == 12
    assert page.locator("[data-in-view]").inner_text() == "12 visits in view"
    points_show(page, PLACES[0])
    markers = frame.locator("path.leaflet-interactive")
    assert markers.count() == 4  # that city's four visits
    markers.first.click()
    popup_check(frame)
    page.frames[1].wait_for_function("() => !window.visitsdashPending")  # the popup's pan redrawn
    frame.locator(".leaflet-popup-content a").click()
    page.wait_for_url("**/visits/*/")
    assert page.locator("h1").inner_text().startswith("Visit ")
    assert seen == {"outside": [], "errors": [], "dialogs": []}


def test_markers_and_the_heat_layer_offline(live_server, watched, settings, cast):
    page, seen = watched
    settings.MAP_TILES_URL = ""
    visits_make()
    sign_in(page, live_server, "/map/", cast=cast)
    frame = page.frame_locator("iframe.map")
    points_show(page, PLACES[1])
    markers = frame.locator("path.leaflet-interactive")
    assert markers.count() == 4
    markers.last.click()  # the one drawn on top of its neighbours
    popup_check(frame)
    frame.get_by_label("Too-far heat map").check()  # the layer menu of the map
    frame.locator("canvas.leaflet-heatmap-layer").wait_for()
    assert seen == {"outside": [], "errors": [], "dialogs": []}


def test_markers_still_show_when_no_tile_can_be_fetched(live_server, watched, settings, cast):
    page, seen = watched
    settings.MAP_TILES_URL = "/no-such-tiles/{z}/{x}/{y}.png"  # every tile a 404
    visits_make()
    sign_in(page, live_server, "/map/", cast=cast)
    frame = page.frame_locator("iframe.map")
    assert clusters_total(page) == 12
    assert page.locator(".legend").is_visible()
    # A few tiles failed: the tile layer gives way to the offline basemap.
    basemap_check(page, frame)
    assert frame.locator("img.leaflet-tile").count() == 0
    assert not seen["outside"] and not seen["dialogs"]


def basemap_check(page, frame) -> None:
    """The offline basemap is drawn: Natural Earth's countries on a canvas on their own pane,
    beneath the visits, land painted over part of it, the map's background the sea."""
    inner = page.frames[1]  # the page's one map frame
    inner.wait_for_function("() => window.visitsdashBasemapDrawn > 0")
    assert inner.evaluate("() => window.visitsdashBasemapDrawn") == 241  # every country of the 1:50m set
    assert frame.locator(".leaflet-basemap-pane canvas").count() == 1
    assert frame.locator(".leaflet-overlay-pane canvas").count() == 0
    land = inner.evaluate(
        """() => { const c = document.querySelector('.leaflet-basemap-pane canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let painted = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) painted++; }
        return painted / (d.length / 4); }"""
    )
    assert land > 0.01, land  # land painted (all of it in a city)
    background = "getComputedStyle(document.querySelector('.leaflet-container')).backgroundColor"
    assert inner.evaluate(f"() => {background}") == "rgb(220, 233, 242)"


def test_the_offline_basemap_without_tiles(live_server, watched, settings, cast):
    page, seen = watched
    settings.MAP_TILES_URL = ""
    visits_make()
    sign_in(page, live_server, "/map/", cast=cast)
    frame = page.frame_locator("iframe.map")
    basemap_check(page, frame)
    assert clusters_total(page) == 12
    points_show(page, PLACES[2])
    assert frame.locator("path.leaflet-interactive").count() == 4  # the visits above it, still clickable
    frame.locator("path.leaflet-interactive").last.click()
    popup_check(frame)
    # One visit's map has it too.
    page.goto(f"{live_server.url}/visits/1100/")
    basemap_check(page, page.frame_locator("iframe.map"))
    assert seen == {"outside": [], "errors": [], "dialogs": []}


def test_a_popup_says_how_far_and_draws_the_customer_with_a_line(live_server, watched, settings, cast):
    from visits.geo.distance import distance_text
    from visits.models import Visit

    from .test_maps import customer_locate

    page, seen = watched
    settings.MAP_TILES_URL = ""
    visits_make()
    customer_locate()
    sign_in(page, live_server, "/map/", cast=cast)
    frame = page.frame_locator("iframe.map")
    points_show(page, PLACES[0])
    markers = frame.locator("path.leaflet-interactive")
    assert frame.locator("path.visit-customer-line").count() == 0  # only while a popup is open
    markers.last.click()
    popup_check(frame)
    distance = frame.locator(".leaflet-popup-content .distance").inner_text()
    metres = {distance_text(round(m)) for m in Visit.objects.filter(latitude__isnull=False)
              .values_list("customer_distance_m", flat=True)}  # fmt: skip
    assert distance.endswith(" from the customer") and distance.removesuffix(" from the customer") in metres
    frame.locator("path.visit-customer-line").wait_for(state="attached")  # short: the customer is near
    assert frame.locator("path.visit-customer").count() == 1
    frame.locator(".leaflet-popup-close-button").dispatch_event("click")  # may be above the frame's top
    frame.locator("path.visit-customer-line").wait_for(state="detached")
    # One visit's map: the customer and the line from the start, the distance in its popup.
    page.goto(f"{live_server.url}/visits/1100/")
    one = page.frame_locator("iframe.map")
    one.locator("path.visit-customer-line").wait_for()
    assert one.locator("path.visit-customer").count() == 1
    one.locator("path.leaflet-interactive").first.dispatch_event("click")  # at the frame's edge: not clickable
    wanted = distance_text(Visit.objects.get(id=1100).customer_distance_m) + " from the customer"
    assert one.locator(".leaflet-popup-content .distance").inner_text() == wanted
    assert wanted.endswith("km from the customer")
    assert seen == {"outside": [], "errors": [], "dialogs": []}


def test_tiles_from_an_unreachable_server_give_way_to_the_basemap(live_server, watched, settings, cast):
    """An intranet that cannot reach the tile server: its tiles fail (aborted here, so that nothing
    leaves the machine) and the basemap is drawn; the watcher sees those requests, as it would
    see any other request leaving 127.0.0.1."""
    page, seen = watched
    settings.MAP_TILES_URL = "https://tiles.invalid/{z}/{x}/{y}.png"
    page.route("https://tiles.invalid/**", lambda route: route.abort())
    visits_make()
    sign_in(page, live_server, "/map/", cast=cast)
    frame = page.frame_locator("iframe.map")
    basemap_check(page, frame)
    assert frame.locator("img.leaflet-tile").count() == 0
    assert clusters_total(page) == 12
    assert seen["outside"] and all(url.startswith("https://tiles.invalid/") for url in seen["outside"])

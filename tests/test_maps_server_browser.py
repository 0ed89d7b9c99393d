"""The map drawn from the server's clusters (reports/maps.py's SERVER_CLUSTERS), in headless
Chromium, offline: from the world view, zoomed and panned down to a single visit's popup.

The real /map/clusters.json and /map/points.json are another branch's; this module stands in for
them with two small views of its own (this module is the URLconf of its tests), answering the same
contract from the visits in the database, and records what the page asked them."""

from collections import Counter, defaultdict
from math import floor

import pytest
from django.http import JsonResponse
from django.urls import include, path

from visits.models import Customer, Visit
from visits.reports import maps

from .conftest import browser_sign_in
from .test_maps import PAYLOAD, customer_locate, visits_make
from .test_maps_browser import basemap_check, popup_check, watched  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # Chromium

ASKED: list[dict] = []  # the query strings the stand-ins were sent


def in_box(request):
    ASKED.append({"path": request.path, **request.GET.dict()})
    west, south, east, north = (float(x) for x in request.GET["bbox"].split(","))
    visits = Visit.objects.filter(deleted_at__isnull=True, latitude__isnull=False)
    if "rep" in request.GET:
        visits = visits.filter(rep_id=int(request.GET["rep"]))
    return visits.filter(latitude__gte=south, latitude__lte=north, longitude__gte=west, longitude__lte=east)


def clusters_standin(request):
    """Visits summed per grid cell, a quarter of a tile at the zoom asked."""
    cell = 360 / 2 ** int(request.GET["zoom"]) / 4
    cells = defaultdict(list)
    for visit in in_box(request):
        cells[(floor(visit.latitude / cell), floor(visit.longitude / cell))].append(visit)
    clusters = []
    for visits in cells.values():
        cluster = {
            "lat": sum(v.latitude for v in visits) / len(visits),
            "lon": sum(v.longitude for v in visits) / len(visits),
            "count": len(visits),
            "statuses": dict(Counter(v.verification_status for v in visits)),
        }
        if len(visits) == 1:
            cluster["id"] = visits[0].id
        clusters.append(cluster)
    return JsonResponse({"total": sum(c["count"] for c in clusters), "clusters": clusters})


def points_standin(request):
    customers = {
        (c.resource_type, c.resource_id): [c.latitude, c.longitude] for c in Customer.objects.exclude(location="")
    }
    points = [
        {
            "id": v.id,
            "lat": v.latitude,
            "lon": v.longitude,
            "rep": v.rep.name,
            "visited_at": v.visited_at.isoformat(),
            "outcome": v.outcome.name if v.outcome else None,
            "status": v.verification_status,
            "distance_m": v.customer_distance_m,
            "url": f"/visits/{v.id}/",
            "customer": customers.get((v.resource_type, v.resource_id)),
        }  # fmt: skip
        for v in in_box(request).select_related("rep", "outcome")
    ]
    return JsonResponse({"points": points, "truncated": False})


urlpatterns = [
    path("map/clusters.json", clusters_standin),
    path("map/points.json", points_standin),
    path("", include("visitsdash.urls")),
]


@pytest.fixture
def server_map(settings, monkeypatch):
    settings.ROOT_URLCONF = __name__
    settings.MAP_TILES_URL = ""
    monkeypatch.setattr(maps, "SERVER_CLUSTERS", True)
    ASKED.clear()


MAP = "window[Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))]"  # folium names it map_<hex>


def drawn_after(frame, draws: int) -> str:
    """Waits for a drawing after the `draws`th; its kind ("clusters" or "points")."""
    frame.wait_for_function("draws => (window.visitsdashDraws || 0) > draws", arg=draws)
    return frame.evaluate("() => window.visitsdashDrawn")


def draws_of(frame) -> int:
    return frame.evaluate("() => window.visitsdashDraws || 0")


def test_from_the_world_to_a_visits_popup(live_server, watched, server_map, cast):  # noqa: F811
    page, seen = watched
    visits_make()
    customer_locate()
    browser_sign_in(page, f"{live_server.url}/map/?rep=900", user=cast.manager)
    frame = page.frames[1]
    frame.wait_for_function("() => window.visitsdashDraws > 0")
    assert ASKED and all(a["rep"] == "900" for a in ASKED)  # the page's filters go with every request
    basemap_check(page, page.frame_locator("iframe.map"))
    # The world view: every visit in one cluster, its count as text, the legend's line from its total.
    draws = draws_of(frame)
    frame.evaluate(f"() => {{ {MAP}.setView([20, 0], 2); }}")
    assert drawn_after(frame, draws) == "clusters"
    clusters = frame.locator(".visit-cluster")
    assert [clusters.nth(i).inner_text() for i in range(clusters.count())] == ["12"]
    assert page.locator("[data-in-view]").inner_text() == "12 visits in view"
    assert ASKED[-1]["zoom"] == "2" and ASKED[-1]["path"] == "/map/clusters.json"
    # A pan: a new box asked, the same visits drawn.
    draws = draws_of(frame)
    frame.evaluate(f"() => {{ {MAP}.panBy([200, 0]); }}")
    drawn_after(frame, draws)
    assert frame.locator(".visit-cluster").first.inner_text() == "12"
    # Click a cluster, again and again: each zooms in, until single visits are drawn.
    while frame.evaluate("() => window.visitsdashDrawn") == "clusters":
        draws = draws_of(frame)
        frame.locator(".visit-cluster").first.click()
        drawn_after(frame, draws)
    assert int(ASKED[-1]["zoom"]) >= maps.POINTS_ZOOM and ASKED[-1]["path"] == "/map/points.json"
    markers = frame.locator("path.leaflet-interactive")
    assert 1 <= markers.count() <= 4  # one city's visits
    markers.last.click()
    popup_check(page.frame_locator("iframe.map"))
    frame.locator("path.visit-customer-line").wait_for(state="attached")  # the customer, while the popup is open
    assert frame.locator(".leaflet-popup-content strong").inner_text() == PAYLOAD
    assert seen == {"outside": [], "errors": [], "dialogs": []}


def test_the_heat_layer_from_the_clusters_too_far_counts(live_server, watched, server_map, cast):  # noqa: F811
    page, seen = watched
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

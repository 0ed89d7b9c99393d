"""Maps: legend counts, the drawing chosen by count, escaping in every drawing, visits without
a location, vendored assets only."""

import json
import re
from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction

from visits.ingest.pages import visits_upsert
from visits.ingest.sync import streams_sync
from visits.models import Outcome, Rep, Visit
from visits.reports import maps
from visits.reports.scope import Scope

pytestmark = pytest.mark.django_db

PAYLOAD = "</script><img src=x onerror=alert(1)>${alert(1)}`"
UTC = ZoneInfo("UTC")
# Three groups of visits: a few metres apart inside a group, cities apart between groups.
PLACES = [(41.8781, -87.6298), (39.7684, -86.1581), (43.0389, -87.9065)]


def visits_make(*, per_place: int = 4, without_location: int = 2) -> list[int]:
    """Visits by a rep and for an outcome both named with the payload, the payload in each
    summary, spread over PLACES; plus some without coordinates. Returns the located ids."""
    Rep.objects.create(id=900, name=PAYLOAD)
    Outcome.objects.create(id=90, name=PAYLOAD)
    statuses = ["verified", "resource_location_too_far"]
    rows, located = {}, []
    at = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)
    for p, (lat, lng) in enumerate(PLACES):
        for i in range(per_place):
            visit_id = 1000 + p * 100 + i
            rows[visit_id] = row(at=at + timedelta(hours=p * 24 + i), status=statuses[i % 2],
                                 lat=lat + i * 0.0004, lng=lng + i * 0.0004)  # fmt: skip
            located.append(visit_id)
    for j in range(without_location):
        rows[5000 + j] = row(at=at, status="location_unknown", lat=None, lng=None)
    with transaction.atomic():
        visits_upsert(rows=rows)
    return located


def row(*, at, status, lat, lng) -> dict:
    return {
        "rep_id": 900, "resource_type": "lead", "resource_id": 7, "visited_at": at, "created_at": at,
        "summary": f"Summary {PAYLOAD}", "outcome_id": 90, "latitude": lat, "longitude": lng,
        "verification_status": status, "sequence": 1, "event_time": at, "deleted_at": None,
    }  # fmt: skip


@pytest.fixture
def manager(client, cast):
    """The test client, signed in as the cast's manager."""
    client.force_login(cast.manager)
    return client


def test_script_json_cannot_end_its_block_and_reads_back_the_same():
    text = maps.script_json({"name": PAYLOAD + "<!-- &amp; \u2028"})
    assert not set("<>&") & set(text)
    assert json.loads(text) == {"name": PAYLOAD + "<!-- &amp; \u2028"}


@pytest.mark.slow
def test_legend_counts_equal_the_database(manager, serve, full_team):
    serve(full_team)
    streams_sync()
    live = list(Visit.objects.filter(deleted_at__isnull=True))
    some_rep = Counter(v.rep_id for v in live).most_common(1)[0][0]
    some_outcome = Counter(v.outcome_id for v in live if v.outcome_id).most_common(1)[0][0]
    days = sorted(v.visited_at.astimezone(UTC).date() for v in live)
    first_day, last_day = days[0], days[-1]
    month = (first_day + timedelta(days=3)).replace(day=1) + timedelta(days=32)
    assert month.replace(day=1) + timedelta(days=32) < last_day, "the range should hold a whole month and edge days"
    scopes = {
        "": Scope(),
        "status=resource_location_too_far&status=location_unknown": Scope(
            statuses=frozenset({"resource_location_too_far", "location_unknown"})
        ),
        f"rep={some_rep}": Scope(reps=frozenset({some_rep})),
        "start=2026-01-01&end=2026-12-31": Scope(start=date(2026, 1, 1), end=date(2026, 12, 31)),
        # days at both edges (from the visits) around whole months (from the map tally)
        f"start={first_day + timedelta(days=3)}&end={last_day - timedelta(days=3)}": Scope(
            start=first_day + timedelta(days=3), end=last_day - timedelta(days=3)
        ),
        f"outcome={some_outcome}": Scope(outcomes=frozenset({some_outcome})),  # not in the map tally
    }
    for query, scope in scopes.items():
        chosen = [v for v in live if in_scope(v, scope)]
        want_located = Counter(v.verification_status for v in chosen if v.latitude is not None)
        want_without = sum(1 for v in chosen if v.latitude is None)
        plan = maps.map_plan(scope=scope)
        assert {s: n for s, n in plan.located.items() if n} == dict(want_located), query
        assert plan.without_location == want_without, query
        page = manager.get(f"/map/?{query}").content.decode()
        legend = page[page.index('class="legend card"') : page.index("</div>", page.index('class="legend card"'))]
        assert f"{want_without:,} visit{'s' if want_without != 1 else ''} without a location" in legend, query
        for status, count in want_located.items():
            label = dict(maps.VerificationStatus.choices)[status]
            assert re.search(rf"{label} <strong>{count:,}</strong>", legend), (query, status)


def in_scope(v: Visit, scope: Scope) -> bool:
    day = v.visited_at.astimezone(UTC).date()
    return (
        (scope.start is None or day >= scope.start)
        and (scope.end is None or day <= scope.end)
        and (scope.reps is None or v.rep_id in scope.reps)
        and (scope.statuses is None or v.verification_status in scope.statuses)
        and (scope.outcomes is None or v.outcome_id in scope.outcomes)
    )


def frame(client, query: str = "") -> str:
    response = client.get(f"/map/frame/?{query}")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in response["Content-Security-Policy"]
    return response.content.decode()


def map_data(html: str) -> tuple[list, dict, bool]:
    """The rows and lookups of a map document's data block (one visit's map), and whether the
    customer is always drawn."""
    block = json.loads(re.search(r'<script type="application/json" id="visit-data">(.*?)</script>', html).group(1))
    always = re.search(r"visitsdashVisits\(\w+,\s+\{customerAlways: (true|false),", html).group(1) == "true"
    return block["rows"], block["lookups"], always


def opening_box(html: str) -> list[float]:
    """The south, west, north and east a map document opens on (folium's fitBounds)."""
    fit = re.search(r"fitBounds\(\s*\[\[([-\d.]+), ([-\d.]+)\], \[([-\d.]+), ([-\d.]+)\]\]", html)
    return [float(x) for x in fit.groups()]


def server_block(html: str) -> dict:
    """A map document's data block: how to ask the server for the visits in view."""
    return json.loads(re.search(r'<script type="application/json" id="visit-data">(.*?)</script>', html).group(1))


WORLD = "-180,-90,180,90"


def points(client, query: str = "") -> tuple[list, dict]:
    """/map/points.json's rows and lookups for the whole world at MAP_POINTS_ZOOM."""
    from django.conf import settings

    response = client.get(f"/map/points.json?bbox={WORLD}&zoom={settings.MAP_POINTS_ZOOM}&{query}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["truncated"] is False
    return body["rows"], body["lookups"]


def test_the_map_carries_no_visit_and_opens_on_them_all(manager, settings):
    located = visits_make()
    settings.MAP_TILES_URL = ""
    html = frame(manager)
    block = server_block(html)
    assert "rows" not in block and block["server"]["pointsZoom"] == settings.MAP_POINTS_ZOOM
    lats = [v.latitude for v in Visit.objects.filter(latitude__isnull=False)]
    lngs = [v.longitude for v in Visit.objects.filter(latitude__isnull=False)]
    # Opens on them all: the map tally's finest cells that hold them (1/64 degree), edges included.
    south, west, north, east = opening_box(html)
    assert south <= min(lats) and west <= min(lngs) and north >= max(lats) and east >= max(lngs)
    assert max(min(lats) - south, min(lngs) - west, north - max(lats), east - max(lngs)) <= 1 / 64
    # One rep's map, from the half-degree cells kept by rep: its visits, not another rep's in Sydney.
    Rep.objects.create(id=901, name="Other")
    at = datetime(2026, 10, 9, 15, 0, tzinfo=UTC)
    with transaction.atomic():
        visits_upsert(rows={7000: {**row(at=at, status="verified", lat=-33.87, lng=151.21), "rep_id": 901}})
    assert opening_box(frame(manager))[0] <= -33.87 and opening_box(frame(manager))[3] >= 151.21
    south, west, north, east = opening_box(frame(manager, "rep=900"))
    assert south <= min(lats) and west <= min(lngs) and north >= max(lats) and east >= max(lngs)
    assert max(min(lats) - south, min(lngs) - west, north - max(lats), east - max(lngs)) <= 0.5
    south, west, north, east = opening_box(frame(manager, "rep=900&outcome=90"))  # from the visits
    assert [south, west, north, east] == pytest.approx([min(lats), min(lngs), max(lats), max(lngs)], abs=1e-5)
    Visit.objects.filter(id=7000).delete()
    rows, _ = points(manager)
    assert sorted(r[6] for r in rows) == sorted(located)
    times = {v.id: int(v.visited_at.timestamp()) // 60 for v in Visit.objects.all()}
    assert all(r[5] == times[r[6]] for r in rows)  # minutes since 1970, for the popups' times
    world = manager.get(f"/map/clusters.json?bbox={WORLD}&zoom=2").json()
    assert world["total"] == len(located)  # every visit counted: no "newest N"
    assert "Showing the newest" not in manager.get("/map/").content.decode()
    Visit.objects.update(latitude=None, longitude=None, verification_status="location_unknown")
    page = manager.get("/map/").content.decode()
    assert "No visit with a location matches these filters" in page and "<iframe" not in page
    assert "visit-data" not in frame(manager)  # the bare map


def test_the_payload_is_text_everywhere_on_the_map(manager, settings):
    visits_make()
    settings.MAP_TILES_URL = ""
    raw_pieces = ["</script><img", "<img src=x", PAYLOAD]  # `${` is mere text in a data block
    html = frame(manager)
    assert not any(piece in html for piece in [*raw_pieces, "img src", "alert", "Summary"])  # no visit in it
    _, lookups = points(manager)  # JSON, set as text by static/js/visit-map.js
    assert lookups["reps"] == [PAYLOAD] and lookups["outcomes"] == [PAYLOAD]
    page = manager.get("/map/").content.decode()
    assert not any(piece in page for piece in raw_pieces)
    summary = manager.get("/visits/1000/summary.json")
    assert summary.json()["summary"] == f"Summary {PAYLOAD}"
    for url in ("/reports/reps/900/", "/visits/1000/"):
        assert not any(piece in manager.get(url).content.decode() for piece in raw_pieces)
    one = manager.get("/visits/1000/map/").content.decode()
    assert map_data(one)[1]["reps"] == [PAYLOAD] and not any(piece in one for piece in raw_pieces)


def test_visits_without_a_location_are_counted_never_drawn(manager, settings):
    visits_make(without_location=3)
    settings.MAP_TILES_URL = ""
    page = manager.get("/map/").content.decode()
    assert "3 visits without a location" in page
    rows, _ = points(manager)
    assert all(r[6] < 5000 for r in rows) and len(rows) == 12
    assert all(abs(r[0]) > 1 and abs(r[1]) > 1 for r in rows)
    assert manager.get(f"/map/clusters.json?bbox={WORLD}&zoom=0").json()["total"] == 12
    rep_page = manager.get("/reports/reps/900/").content.decode()
    assert 'src="/map/frame/?rep=900"' in rep_page and "3 visits without a location" in rep_page
    assert manager.get("/visits/5000/map/").status_code == 404
    assert "No position was recorded" in manager.get("/visits/5000/").content.decode()
    assert 'src="/visits/1000/map/"' in manager.get("/visits/1000/").content.decode()


def test_only_vendored_assets_and_the_tile_setting(manager, settings):
    visits_make()
    settings.MAP_TILES_URL = ""
    html = frame(manager)
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert links and all(link.startswith(("/static/vendor/", "/static/js/")) for link in links), links
    assert "http://" not in html.replace("http-equiv", "") and "https://" not in html
    assert manager.get("/static/vendor/leaflet/leaflet.js").status_code == 200
    # The offline basemap: read by the vendored topojson-client, fetched by the page around the frame.
    assert '/static/vendor/topojson-client/topojson-client.min.js"' in html and "visitsdashBasemap(" in html
    assert 'data-basemap-url="/static/vendor/world-atlas/countries-50m.json"' in manager.get("/map/").content.decode()
    topology = json.loads(b"".join(manager.get("/static/vendor/world-atlas/countries-50m.json").streaming_content))
    assert len(topology["objects"]["countries"]["geometries"]) == 241
    settings.MAP_TILES_URL = "https://tiles.example.com/{z}/{x}/{y}.png"
    assert "https://tiles.example.com/{z}/{x}/{y}.png" in frame(manager)


def test_map_pages_need_a_role(client, cast):
    outsider = cast.outsider
    for url in ("/map/", "/map/frame/", "/visits/1/map/", "/visits/1/summary.json"):
        assert client.get(url).status_code == 302
    client.force_login(outsider)  # client.login() has no request to give axes' backend
    for url in ("/map/", "/map/frame/", "/visits/1/map/", "/visits/1/summary.json"):
        assert client.get(url).status_code == 403


def test_a_bad_filter_is_a_400_on_the_map_too(manager):
    assert manager.get("/map/?start=yesterday").status_code == 400
    assert manager.get("/map/frame/?status=teleported").status_code == 400


CUSTOMER = (41.8790, -87.6310)  # the customer of every visit of visits_make, near the first place


def customer_locate() -> None:
    """Customer 7 located at CUSTOMER, and each visit's distance to it measured, as the customers'
    refresh writes them (here by hand: the point is this test's, not learned)."""
    from visits.geo.distance import metres_between
    from visits.models import Customer

    Customer.objects.create(
        resource_type="lead", resource_id=7, location="geocoded", latitude=CUSTOMER[0], longitude=CUSTOMER[1],
        geocoded_latitude=CUSTOMER[0], geocoded_longitude=CUSTOMER[1], geocode_status="found",
    )  # fmt: skip
    for visit in Visit.objects.filter(latitude__isnull=False):
        visit.customer_distance_m = metres_between(visit.point, CUSTOMER)
        visit.customer_location = "geocoded"
        visit.save(update_fields=["customer_distance_m", "customer_location"])


def test_rows_carry_the_customer_point_and_the_distance(manager, settings):
    located = visits_make()
    settings.MAP_TILES_URL = ""
    rows, lookups = points(manager)
    assert all(r[7] == -1 and r[8] == -1 for r in rows) and lookups["customers"] == []  # not located yet
    customer_locate()
    distances = dict(Visit.objects.filter(id__in=located).values_list("id", "customer_distance_m"))
    rows, lookups = points(manager)
    assert lookups["customers"] == [list(CUSTOMER)]
    assert all(r[7] == 0 and r[8] == round(distances[r[6]]) for r in rows)
    one = manager.get("/visits/1100/map/").content.decode()  # a visit in the second city, ~250 km away
    rows, lookups, _ = map_data(one)
    assert rows[0][8] == round(distances[1100]) and 200_000 < rows[0][8] < 300_000
    assert lookups["customers"] == [list(CUSTOMER)] and "customerAlways: true" in one
    assert "customerAlways: false" in frame(manager)


def test_distance_text_reads_as_the_pages_say_it():
    from visits.geo.distance import distance_text

    assert distance_text(None) == "–"
    assert [distance_text(m) for m in (0, 249.6, 999.4, 999.6, 3_240, 12_345, 99_940, 250_400, 1_234_567)] == [
        "0 m", "250 m", "999 m", "1.0 km", "3.2 km", "12.3 km", "99.9 km", "250 km", "1,235 km",
    ]  # fmt: skip


def test_the_map_document_carries_no_visit(manager):
    """The data block says how to ask for the visits in view, and holds none of them (no name, no
    position); the page's iframe names the endpoints the page fetches."""
    from django.conf import settings

    visits_make()
    html = frame(manager, "rep=900")
    block = server_block(html)
    assert block["server"] == {"pointsZoom": settings.MAP_POINTS_ZOOM, "tooFar": "resource_location_too_far"}
    # Chicago is inside the bounds the map opens on, never one of their edges: no visit's position is in it.
    assert "rows" not in block and PAYLOAD not in html and str(PLACES[0][0]) not in html
    assert block["lookups"]["statusKeys"][1] == "resource_location_too_far"
    assert re.search(r"heat: heat_map_\w+\}", html)  # the heat layer, drawn from the clusters
    page = manager.get("/map/?rep=900").content.decode()
    assert 'data-clusters-url="/map/clusters.json" data-points-url="/map/points.json"' in page

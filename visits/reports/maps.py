"""Maps of visits: the only module that imports folium.

The map of a report's visits carries no visit: its data block says how to ask for them
(`server_data`), and the browser (static/js/visit-map.js, through the page around the frame)
asks /map/clusters.json for the clusters in view, every visit counted, whatever their number, or
from MAP_POINTS_ZOOM on /map/points.json for the single visits, whose rows and lookups are
`visit_rows`' (reports/clusters.py). The too-far heat map is drawn from the clusters' too-far
counts. The legend's counts (`map_plan`) are exact, read from the tallies (reports/map_counts.py),
as is the box the map opens on. One visit's own map still carries its row in the data block.
Popups fetch the summary when they open.

Scripts and styles come from static/ (no CDN); tiles from MAP_TILES_URL, if set. Beneath the
visits, when MAP_TILES_URL is empty or its tiles fail to load, the offline basemap: Natural
Earth's countries (static/vendor/world-atlas), fetched once by the page around the frame.
folium is imported by the functions that draw, when a process draws its first map: with branca,
jinja2 and numpy it takes a quarter of a second, which every process importing the URLconf (any
command's system checks, the worker's start) would otherwise pay (tests/test_startup.py).
No string from the API passes through folium (whose templates are Jinja2): the visits travel
in a JSON data block added after rendering, and static/js/visit-map.js sets them as text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import BigIntegerField, Func, QuerySet
from django.templatetags.static import static
from django.urls import reverse

from visits.models import Customer, Outcome, Rep, VerificationStatus
from visits.reports import map_counts
from visits.reports.scope import Scope

if TYPE_CHECKING:
    import folium

STATUS_COLORS = {
    VerificationStatus.VERIFIED: "#2e7d32",
    VerificationStatus.TOO_FAR: "#c62828",
    VerificationStatus.LOCATION_UNKNOWN: "#f9a825",
    VerificationStatus.SERVICES_DISABLED: "#6d4c41",
}
STATUS_ORDER = list(STATUS_COLORS)


def script_json(value: object) -> str:
    """JSON for a <script> data block: no `<`, `>` or `&` that could end it or open a comment
    (written as \\u escapes, the same strings for JSON.parse)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


# --- Vendored assets -----------------------------------------------------------------------


@functools.cache  # once per process: the class attributes stay assigned
def assets_localize() -> None:
    """Point folium's script and style links at static/ and drop what the maps don't use
    (jQuery, Bootstrap, Font Awesome, awesome-markers: folium needs them for its popups and
    icons, which these maps don't use). Assigns new lists: folium's own add_js_link would
    change them for every map."""
    import folium
    from folium.plugins import HeatMap

    folium.Map.default_js = [("leaflet", static("vendor/leaflet/leaflet.js"))]
    folium.Map.default_css = [("leaflet_css", static("vendor/leaflet/leaflet.css"))]
    HeatMap.default_js = [("leaflet-heat.js", static("vendor/leaflet.heat/leaflet-heat.js"))]
    layer = visit_layer_class()
    layer.default_js = [("visit_map", static("js/visit-map.js"))]
    basemap_class().default_js = [
        ("topojson_client", static("vendor/topojson-client/topojson-client.min.js")),
        ("visit_map", static("js/visit-map.js")),
    ]
    layer.default_css = []


@functools.cache  # one class per process, made when the first map is drawn (folium imported then)
def visit_layer_class() -> type[Any]:  # a JSCSSMixin and folium Layer
    from folium.elements import JSCSSMixin
    from folium.map import Layer
    from folium.template import Template

    class VisitLayer(JSCSSMixin, Layer):
        """The visits, drawn in the browser by static/js/visit-map.js from the document's data
        block (see `document_finish`): from the server's clusters and points, or the block's rows.
        Its script names only the map and a flag, so nothing from Sell goes through folium's
        templates."""

        _template = Template(
            """
            {% macro script(this, kwargs) %}
            var {{ this.get_name() }} = visitsdashVisits({{ this._parent.get_name() }},
                {customerAlways: {{ this.customer_always }}, heat: {{ this.heat }}});
            {% endmacro %}
            """
        )

        def __init__(self, *, name: str, customer_always: bool = False, heat: Any = None) -> None:
            super().__init__(name=name, overlay=True, control=True, show=True)
            self._name = "VisitLayer"
            # With the server's clusters: the heat layer drawn from their too-far counts (added before).
            self.heat = "null" if heat is None else heat.get_name()
            # The customer's point and a line to it: always (one visit's map), or while a popup is open.
            self.customer_always = "true" if customer_always else "false"

    return VisitLayer


@functools.cache  # one class per process, made when the first map is drawn (folium imported then)
def basemap_class() -> type[Any]:  # a JSCSSMixin and folium MacroElement
    from branca.element import MacroElement
    from folium.elements import JSCSSMixin
    from folium.template import Template

    class Basemap(JSCSSMixin, MacroElement):
        """The offline basemap (static/js/visit-map.js's visitsdashBasemap): the countries drawn
        at once when there are no tiles, or after a few tiles failed to load."""

        _template = Template(
            """
            {% macro script(this, kwargs) %}
            visitsdashBasemap({{ this._parent.get_name() }}, {tiles: {{ this.tiles }}});
            {% endmacro %}
            """
        )

        def __init__(self, *, tiles: folium.TileLayer | None) -> None:
            super().__init__()
            self._name = "Basemap"
            self.tiles = "null" if tiles is None else tiles.get_name()

    return Basemap


BASEMAP_FILE = "vendor/world-atlas/countries-50m.json"  # the iframes' data-basemap-url (visits_extras)
DATA_BLOCK_ID = "visit-data"
SCRIPT_RE = re.compile(r"<script>(.*?)</script>", re.S)
STYLE_RE = re.compile(r"<style>(.*?)</style>", re.S)


@dataclass(frozen=True)
class MapDocument:
    """A map document and the hashes of its inline scripts and styles, for the page's
    Content-Security-Policy (visits/security/csp.py): only what folium wrote here may run."""

    html: str
    script_hashes: tuple[str, ...]
    style_hashes: tuple[str, ...]


def source_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def document_finish(m: folium.Map, *, data: dict | None) -> MapDocument:
    """folium's document, with the visits' data block put in after rendering.

    folium (through branca) renders with Jinja2, and its popups sit inside JavaScript template
    literals, so no text from Sell may pass through it: the map is rendered from our own values
    only, the hashes of its inline code are taken, and then the data block, text and all, is
    inserted by plain string work. A data block is never run as a script."""
    html = m.get_root().render()
    scripts = tuple(dict.fromkeys(source_hash(s) for s in SCRIPT_RE.findall(html)))
    styles = tuple(dict.fromkeys(source_hash(s) for s in STYLE_RE.findall(html)))
    if data is not None:
        block = f'<script type="application/json" id="{DATA_BLOCK_ID}">{script_json(data)}</script>'
        head, body_tag, rest = html.partition("<body>")
        if not body_tag:
            raise RuntimeError("folium's document has no <body> to put the visits in")
        html = f"{head}<body>\n{block}{rest}"
    return MapDocument(html=html, script_hashes=scripts, style_hashes=styles)


# --- What to draw --------------------------------------------------------------------------


@dataclass
class MapPlan:
    """The counts behind a map and its legend, and how it is drawn."""

    located: dict[VerificationStatus, int]  # status -> visits with coordinates
    without_location: int
    mode: str  # "empty" or "clusters" (drawn from the server's clusters)
    history: int = 0  # of those without a location, the visits from the Core API (history: never a position)
    removed: int = 0  # of those without a location, the visits whose position the retention rule removed
    retention_days: int | None = None  # COORDINATES_RETENTION_DAYS, for the note on those
    legend: list[tuple[str, str, str, int]] = field(default_factory=list)  # status, label, colour, count

    @property
    def located_total(self) -> int:
        return sum(self.located.values())


def map_plan(*, scope: Scope) -> MapPlan:
    """Counts by status, with and without coordinates, and the drawing they call for: from the
    tallies and small indexes, not from every visit (reports/map_counts.py)."""
    located = dict.fromkeys(STATUS_ORDER, 0)
    located.update(map_counts.located_by_status(scope))
    everything = map_counts.all_by_status(scope)
    without = sum(everything.values()) - sum(located.values())
    history = removed = 0
    if without:  # both are visits without a position: none to count when every visit has one
        history, removed = map_counts.history_count(scope), map_counts.removed_count(scope)
    mode = "clusters" if any(located.values()) else "empty"
    labels = dict(VerificationStatus.choices)
    return MapPlan(
        located=located,
        without_location=without,
        mode=mode,
        history=history,
        removed=removed,
        retention_days=settings.COORDINATES_RETENTION_DAYS,
        legend=[(s, labels[s], STATUS_COLORS[s], located[s]) for s in STATUS_ORDER],
    )


def map_base(*, bounds: list[list[float]] | None, zoom: int = 4) -> folium.Map:
    import folium

    assets_localize()
    # keyboard=False: Leaflet focuses the map on mousedown for its arrow keys, and the browser
    # then scrolls the page to show the whole frame, so the click a user aimed at a visit
    # lands elsewhere (found by the browser tests, when the map is not wholly on screen).
    m = folium.Map(location=[20, 0] if bounds is None else None, zoom_start=2 if bounds is None else zoom,
                   tiles=None, control_scale=True, maxZoom=19, keyboard=False)  # fmt: skip
    tiles = None
    if settings.MAP_TILES_URL:
        tiles = folium.TileLayer(
            tiles=settings.MAP_TILES_URL, attr=settings.MAP_TILES_ATTRIBUTION, name="Map", max_zoom=19, control=False
        ).add_to(m)
    basemap_class()(tiles=tiles).add_to(m)  # after the tiles: its script names their layer
    if bounds is not None:
        m.fit_bounds(bounds, max_zoom=15, padding=(20, 20))
    return m


def bounds_of(points) -> list[list[float]] | None:
    if not points:
        return None
    lats = [p[0] for p in points]
    lngs = [p[1] for p in points]
    return [[min(lats), min(lngs)], [max(lats), max(lngs)]]


def server_data() -> dict:
    """The data block of a map drawn from the server's clusters: no visits, only how to draw them.
    The page around the frame fetches /map/clusters.json and /map/points.json (static/js/app.js,
    from the iframe's data-clusters-url and data-points-url)."""
    return {
        "server": {"pointsZoom": settings.MAP_POINTS_ZOOM, "tooFar": VerificationStatus.TOO_FAR.value},
        "lookups": {"statusKeys": [s.value for s in STATUS_ORDER], **status_lookups()},
    }


def status_lookups() -> dict:
    """What every map's lookups hold besides its visits': the statuses' labels and colours in
    STATUS_ORDER, the time zone its times are shown in, and a visit's page (id 0 for the id)."""
    labels = dict(VerificationStatus.choices)
    return {
        "statuses": [labels[s] for s in STATUS_ORDER],
        "colors": [STATUS_COLORS[s] for s in STATUS_ORDER],
        "zone": settings.DISPLAY_TIME_ZONE,
        "visitUrl": reverse("visits:visit", args=[0]),
    }


def map_render(*, scope: Scope) -> MapDocument:
    """The whole map document (a page of its own, shown in an iframe): the visits come from the
    server's clusters and points in view; with no located visit, the bare map."""
    import folium
    from folium.plugins import HeatMap

    bounds = map_counts.opening_bounds(scope)
    if bounds is None:
        return document_finish(map_base(bounds=None), data=None)
    m = map_base(bounds=bounds)
    heat_layer = HeatMap([], name="Too-far heat map", show=False, radius=18, blur=14, min_opacity=0.3).add_to(m)
    visit_layer_class()(name="Visits by status", heat=heat_layer).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    return document_finish(m, data=server_data())


class EpochMinutes(Func):
    """Whole minutes since 1970 (UTC), in SQL: a hundred thousand datetimes are not built in Python."""

    output_field = BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, template="(CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) / 60)", **extra
        )

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, template="(CAST(EXTRACT(EPOCH FROM %(expressions)s) AS BIGINT) / 60)", **extra
        )


CUSTOMERS_LISTED_MAX = 2000  # more customers than this on a map: every located customer read at once


def customer_points(keys: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[float, float]]:
    """The point each of these customers' visits are measured from (Customer.location), if any."""
    if not keys:
        return {}
    located = Customer.objects.exclude(location="").filter(latitude__isnull=False)
    if len(keys) <= CUSTOMERS_LISTED_MAX:
        located = located.filter(resource_id__in=sorted({rid for _, rid in keys}))
    return {
        (rtype, rid): (round(lat, 5), round(lng, 5))
        for rtype, rid, lat, lng in located.values_list("resource_type", "resource_id", "latitude", "longitude")
        if (rtype, rid) in keys and lat is not None and lng is not None  # always: filtered, for the types
    }


def visit_rows(*, visits: QuerySet, limit: int) -> tuple[list[list], dict]:
    """The first `limit` of `visits` (located ones) as compact rows, and the lookups the rows point
    into: [lat, lng, status, rep, outcome, minutes since 1970, id, customer (an index into the
    customers' points, -1 for none), metres from the customer (-1 when unknown)]."""
    reps: dict[int, int] = {}
    outcomes: dict[int, int] = {}
    status_index = {s: i for i, s in enumerate(STATUS_ORDER)}
    rows, keys = [], []
    values = visits.annotate(minutes=EpochMinutes("visited_at")).values_list(
        "latitude", "longitude", "verification_status", "rep_id", "outcome_id", "minutes", "id",
        "resource_type", "resource_id", "customer_distance_m",
    )[:limit]  # fmt: skip
    for lat, lng, status, rep_id, outcome_id, minutes, row_id, rtype, rid, metres in values.iterator(chunk_size=5000):
        rows.append([
            round(lat, 5), round(lng, 5), status_index[status], reps.setdefault(rep_id, len(reps)),
            -1 if outcome_id is None else outcomes.setdefault(outcome_id, len(outcomes)), minutes, row_id,
            -1, -1 if metres is None else round(metres),
        ])  # fmt: skip
        keys.append((rtype, rid))
    points = customer_points({key for key in keys if key[1] is not None})
    customers: dict[tuple[str, int], int] = {}
    for visit_row, key in zip(rows, keys, strict=True):
        if key in points:
            visit_row[7] = customers.setdefault(key, len(customers))
    rep_names = dict(Rep.objects.filter(id__in=list(reps)).values_list("id", "name"))
    outcome_names = dict(Outcome.objects.filter(id__in=list(outcomes)).values_list("id", "name"))
    lookups = {
        "reps": [Rep.label_for(r, rep_names.get(r)) for r in reps],
        "outcomes": [Outcome.label_for(o, outcome_names.get(o)) for o in outcomes],
        "customers": [points[key] for key in customers],
        **status_lookups(),
    }
    return rows, lookups


def visit_map_render(*, visits: QuerySet) -> MapDocument | None:
    """A small map of one visit: `visits` is the user's visit, deleted or not, as a queryset from
    `visits.access.visit_lookup_for_user`; None when it is empty or the visit has no coordinates."""
    rows, lookups = visit_rows(visits=visits.filter(latitude__isnull=False), limit=1)
    if not rows:
        return None
    m = map_base(bounds=bounds_of([*rows, *lookups["customers"]]))  # the customer and the line to it in view
    visit_layer_class()(name="Visit", customer_always=True).add_to(m)
    return document_finish(m, data={"rows": rows, "lookups": lookups})

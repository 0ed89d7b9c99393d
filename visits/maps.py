"""Maps of visits: the only module that imports folium.

How a map is drawn depends on how many located visits it shows:
- up to MAP_MARKERS_MAX: one folium circle marker each, with a popup written here;
- up to MAP_POINTS_MAX: one compact data array and a clustered layer built in the browser
  (popups built there too, every API string set as text, the summary fetched on opening);
- beyond: the newest MAP_POINTS_MAX of them, clustered, and the page says "showing N of M".
The too-far heat map counts every too-far visit in scope, whatever the drawing.

Scripts and styles come from static/vendor/ (no CDN); tiles from MAP_TILES_URL, if set.
Every string from the API that lands in folium's HTML goes through `text_escape`.
"""

from __future__ import annotations

import functools
import html
import json
from dataclasses import dataclass, field

import folium
from django.conf import settings
from django.db.models import BigIntegerField, Count, F, Func
from django.db.models.functions import Floor
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from folium.elements import JSCSSMixin
from folium.map import Layer
from folium.plugins import HeatMap
from folium.template import Template

from .analytics import Scope
from .models import Outcome, Rep, VerificationStatus, Visit

STATUS_COLORS = {
    VerificationStatus.VERIFIED: "#2e7d32",
    VerificationStatus.TOO_FAR: "#c62828",
    VerificationStatus.LOCATION_UNKNOWN: "#f9a825",
    VerificationStatus.SERVICES_DISABLED: "#6d4c41",
}
STATUS_ORDER = list(STATUS_COLORS)
HEAT_GRID = 1000  # too-far visits are summed per 1/1000 of a degree (about 100 m) for the heat map


def text_escape(value: object) -> str:
    """API text for folium's HTML: escaped as HTML, then `$` and backtick as entities, because
    folium writes popup and tooltip HTML into JavaScript template literals."""
    return html.escape(str(value), quote=True).replace("$", "&#36;").replace("`", "&#96;")


def script_json(value: object) -> str:
    """JSON for a <script> element: no `<`, `>` or `&` that could end it, and no `$` or backtick
    that a template literal would read (all written as \\u escapes, same strings in JavaScript)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char in "<>&$`\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


# --- Vendored assets -----------------------------------------------------------------------


@functools.cache  # once per process: the class attributes stay assigned
def assets_localize() -> None:
    """Point folium's script and style links at static/vendor/ and drop what the maps don't use
    (Bootstrap, Font Awesome, awesome-markers). jQuery stays: folium's popups parse their HTML
    with `$()`. Assigns new lists: folium's own add_js_link would change them for every map."""
    folium.Map.default_js = [
        ("leaflet", static("vendor/leaflet/leaflet.js")),
        ("jquery", static("vendor/jquery/jquery.min.js")),
    ]
    folium.Map.default_css = [("leaflet_css", static("vendor/leaflet/leaflet.css"))]
    HeatMap.default_js = [("leaflet-heat.js", static("vendor/leaflet.heat/leaflet-heat.js"))]
    VisitCluster.default_js = [("markercluster", static("vendor/leaflet.markercluster/leaflet.markercluster.js"))]
    VisitCluster.default_css = [
        ("markercluster_css", static("vendor/leaflet.markercluster/MarkerCluster.css")),
        ("markercluster_default_css", static("vendor/leaflet.markercluster/MarkerCluster.Default.css")),
    ]


class VisitCluster(JSCSSMixin, Layer):
    """A clustered layer of visits, built in the browser from one compact array.

    Each row is [lat, lng, status, rep, outcome, minutes since 1970, visit id], the middle three
    indexes into the lookup lists. Popups are DOM nodes with text set through textContent.
    """

    # The rows travel as JSON in a data block: JSON.parse reads megabytes faster than the
    # browser compiles the same array written as a script literal.
    _template = Template(
        """
        {% macro html(this, kwargs) %}
        <script type="application/json" id="{{ this.get_name() }}_data">{{ this.data }}</script>
        {% endmacro %}
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = (function () {
            var data = JSON.parse(document.getElementById("{{ this.get_name() }}_data").textContent);
            var look = {{ this.lookups }};
            var time = new Intl.DateTimeFormat("en-CA", {timeZone: look.zone, year: "numeric", month: "2-digit",
                day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false});
            function line(box, tag, text, cls) {
                var node = document.createElement(tag);
                node.textContent = text;
                if (cls) { node.className = cls; }
                box.appendChild(node);
                return node;
            }
            function popup(row) {
                var box = document.createElement("div");
                box.className = "visit-popup";
                line(box, "strong", look.reps[row[3]]);
                line(box, "div", time.format(new Date(row[5] * 60000)).replace(",", "") + " (" + look.zone + ")");
                line(box, "div", row[4] < 0 ? "(no outcome)" : look.outcomes[row[4]]);
                line(box, "div", look.statuses[row[2]], "status");
                var summary = line(box, "div", "…", "summary");
                fetch(look.summaryUrl.replace("/0/", "/" + row[6] + "/"), {credentials: "same-origin"})
                    .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
                    .then(function (j) { summary.textContent = j.summary || "(no summary)"; })
                    .catch(function () { summary.textContent = "(summary unavailable)"; });
                var link = line(box, "a", "Open the visit");
                link.href = look.visitUrl.replace("/0/", "/" + row[6] + "/");
                link.target = "_top";
                return box;
            }
            // Added in chunks, so that the page answers while a large set loads; one click
            // handler for the layer instead of a popup bound to each of the visits.
            var cluster = L.markerClusterGroup({chunkedLoading: true, chunkInterval: 400, chunkDelay: 5,
                maxClusterRadius: 45, disableClusteringAtZoom: 17,
                chunkProgress: function (done, total) {
                    if (total === data.length && done === total) { window.visitsdashLoaded = true; }
                }});
            cluster.on("click", function (event) {
                L.popup({maxWidth: 320}).setLatLng(event.layer.getLatLng())
                    .setContent(popup(event.layer.visitRow)).openOn(cluster._map);
            });
            var markers = new Array(data.length);
            var style = look.colors.map(function (color) {
                return {radius: 6, weight: 1, color: "#fff", fillColor: color, fillOpacity: 0.9};
            });
            for (var i = 0; i < data.length; i++) {
                var row = data[i];
                var marker = L.circleMarker([row[0], row[1]], style[row[2]]);
                marker.visitRow = row;
                markers[i] = marker;
            }
            // On the map first: added to a layer that is not yet on a map, markercluster checks
            // each new marker against all those before it.
            cluster.addTo({{ this._parent.get_name() }});
            cluster.addLayers(markers, true);
            return cluster;
        })();
        {% endmacro %}
        """
    )

    def __init__(self, *, rows: list[list], lookups: dict, name: str) -> None:
        super().__init__(name=name, overlay=True, control=True, show=True)
        self._name = "VisitCluster"
        self.data = script_json(rows)
        self.lookups = script_json(lookups)


# --- What to draw --------------------------------------------------------------------------


@dataclass
class MapPlan:
    """The counts behind a map and its legend, and how it is drawn."""

    located: dict[str, int]  # status -> visits with coordinates
    without_location: int
    mode: str  # "empty", "markers", "clusters" or "newest"
    drawn: int
    legend: list[tuple[str, str, str, int]] = field(default_factory=list)  # status, label, colour, count

    @property
    def located_total(self) -> int:
        return sum(self.located.values())


def mode_choose(located: int) -> str:
    if located == 0:
        return "empty"
    if located <= settings.MAP_MARKERS_MAX:
        return "markers"
    return "clusters" if located <= settings.MAP_POINTS_MAX else "newest"


def map_plan(*, scope: Scope) -> MapPlan:
    """Counts by status, with and without coordinates, and the drawing they call for."""
    rows = scope.visits().order_by().values("verification_status").annotate(
        total=Count("verification_status"), located=Count("latitude")
    )
    located = dict.fromkeys(STATUS_ORDER, 0)
    without = 0
    for row in rows:
        located[row["verification_status"]] = row["located"]
        without += row["total"] - row["located"]
    total = sum(located.values())
    mode = mode_choose(total)
    labels = dict(VerificationStatus.choices)
    return MapPlan(
        located=located,
        without_location=without,
        mode=mode,
        drawn=min(total, settings.MAP_POINTS_MAX),
        legend=[(s, labels[s], STATUS_COLORS[s], located[s]) for s in STATUS_ORDER],
    )


def _located(scope: Scope):
    return scope.visits().filter(latitude__isnull=False).order_by("-visited_at", "-id")


def heat_points(*, scope: Scope) -> list[list[float]]:
    """Every too-far visit in scope, summed per grid cell of about 100 m: [lat, lng, weight]."""
    cells = (
        _located(scope)
        .filter(verification_status=VerificationStatus.TOO_FAR)
        .order_by()
        .annotate(y=Floor(F("latitude") * HEAT_GRID), x=Floor(F("longitude") * HEAT_GRID))
        .values("y", "x")
        .annotate(n=Count("verification_status"))
    )
    return [[(c["y"] + 0.5) / HEAT_GRID, (c["x"] + 0.5) / HEAT_GRID, c["n"]] for c in cells]


def map_base(*, bounds: list[list[float]] | None, zoom: int = 4) -> folium.Map:
    assets_localize()
    # keyboard=False: Leaflet focuses the map on mousedown for its arrow keys, and the browser
    # then scrolls the page to show the whole frame, so the click a user aimed at a visit
    # lands elsewhere (found by the browser tests, when the map is not wholly on screen).
    m = folium.Map(location=[20, 0] if bounds is None else None, zoom_start=2 if bounds is None else zoom,
                   tiles=None, control_scale=True, **{"maxZoom": 19, "keyboard": False})  # fmt: skip
    if settings.MAP_TILES_URL:
        folium.TileLayer(
            tiles=settings.MAP_TILES_URL, attr=settings.MAP_TILES_ATTRIBUTION, name="Map", max_zoom=19, control=False
        ).add_to(m)
    if bounds is not None:
        m.fit_bounds(bounds, max_zoom=15, padding=(20, 20))
    return m


def popup_html(*, visit: Visit) -> str:
    """A marker's popup, every API string escaped by text_escape."""
    when = timezone.localtime(visit.visited_at).strftime("%Y-%m-%d %H:%M")
    outcome = visit.outcome.name if visit.outcome else "(no outcome)"
    link = reverse("visits:visit", args=[visit.id])
    return (
        f'<div class="visit-popup"><strong>{text_escape(visit.rep.name or f"Rep {visit.rep_id}")}</strong>'
        f"<div>{text_escape(when)} ({text_escape(settings.DISPLAY_TIME_ZONE)})</div>"
        f"<div>{text_escape(outcome)}</div>"
        f'<div class="status">{text_escape(visit.get_verification_status_display())}</div>'
        f'<div class="summary">{text_escape(visit.summary or "(no summary)")}</div>'
        f'<a href="{text_escape(link)}" target="_top">Open the visit</a></div>'
    )


def markers_add(m: folium.Map, *, visits) -> list[list[float]]:
    layer = folium.FeatureGroup(name="Visits by status", overlay=True, control=True)
    points = []
    for visit in visits:
        points.append([visit.latitude, visit.longitude])
        folium.CircleMarker(
            location=[visit.latitude, visit.longitude], radius=7, weight=1, color="#fff", fill=True,
            fill_color=STATUS_COLORS[visit.verification_status], fill_opacity=0.9,
            popup=folium.Popup(popup_html(visit=visit), max_width=320),
            tooltip=folium.Tooltip(text_escape(visit.rep.name or f"Rep {visit.rep_id}"), sticky=False),
        ).add_to(layer)  # fmt: skip
    layer.add_to(m)
    return points


def bounds_of(points) -> list[list[float]] | None:
    if not points:
        return None
    lats = [p[0] for p in points]
    lngs = [p[1] for p in points]
    return [[min(lats), min(lngs)], [max(lats), max(lngs)]]


def map_render(*, scope: Scope) -> str:
    """The whole map document (a page of its own, shown in an iframe)."""
    plan = map_plan(scope=scope)
    if plan.mode == "markers":
        visits = list(_located(scope).select_related("rep", "outcome"))
        m = map_base(bounds=bounds_of([[v.latitude, v.longitude] for v in visits]))
        markers_add(m, visits=visits)
    elif plan.mode in ("clusters", "newest"):
        rows, lookups = cluster_rows(scope=scope, limit=settings.MAP_POINTS_MAX)
        m = map_base(bounds=bounds_of(rows))
        VisitCluster(rows=rows, lookups=lookups, name="Visits by status").add_to(m)
    else:
        m = map_base(bounds=None)
    heat = heat_points(scope=scope)
    if heat:
        HeatMap(heat, name="Too-far heat map", show=plan.mode == "empty", radius=18, blur=14, min_opacity=0.3).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    return m.get_root().render()


class EpochMinutes(Func):
    """Whole minutes since 1970 (UTC), in SQL: a hundred thousand datetimes are not built in Python."""

    output_field = BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="(CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) / 60)", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="(CAST(EXTRACT(EPOCH FROM %(expressions)s) AS BIGINT) / 60)", **extra)


def cluster_rows(*, scope: Scope, limit: int) -> tuple[list[list], dict]:
    """The newest `limit` located visits as compact rows, and the lookups the rows point into."""
    reps: dict[int, int] = {}
    outcomes: dict[int, int] = {}
    status_index = {s: i for i, s in enumerate(STATUS_ORDER)}
    rows = []
    values = (
        _located(scope)
        .annotate(minutes=EpochMinutes("visited_at"))
        .values_list("latitude", "longitude", "verification_status", "rep_id", "outcome_id", "minutes", "id")[:limit]
    )
    for lat, lng, status, rep_id, outcome_id, minutes, visit_id in values.iterator(chunk_size=5000):
        rows.append([
            round(lat, 5), round(lng, 5), status_index[status], reps.setdefault(rep_id, len(reps)),
            -1 if outcome_id is None else outcomes.setdefault(outcome_id, len(outcomes)), minutes, visit_id,
        ])  # fmt: skip
    rep_names = dict(Rep.objects.filter(id__in=list(reps)).values_list("id", "name"))
    outcome_names = dict(Outcome.objects.filter(id__in=list(outcomes)).values_list("id", "name"))
    labels = dict(VerificationStatus.choices)
    lookups = {
        "reps": [rep_names.get(r) or f"Rep {r}" for r in reps],
        "outcomes": [outcome_names.get(o) or f"Outcome {o}" for o in outcomes],
        "statuses": [labels[s] for s in STATUS_ORDER],
        "colors": [STATUS_COLORS[s] for s in STATUS_ORDER],
        "zone": settings.DISPLAY_TIME_ZONE,
        "visitUrl": reverse("visits:visit", args=[0]),
        "summaryUrl": reverse("visits:visit_summary", args=[0]),
    }
    return rows, lookups


def visit_map_render(*, visit: Visit) -> str:
    """A small map of one visit (which has coordinates)."""
    m = map_base(bounds=[[visit.latitude, visit.longitude], [visit.latitude, visit.longitude]])
    markers_add(m, visits=[visit])
    return m.get_root().render()

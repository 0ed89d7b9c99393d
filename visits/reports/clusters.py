"""The map's clusters and single points for the view in front of the user: a box and a zoom level.

A box W,S,E,N is read on a grid of square cells of 2^e degrees, e chosen from the zoom (cells of
about 64 pixels) and coarsened until the box holds at most MAX_CELLS of them; the box is SNAPPED
OUTWARD to that grid: a visit counts when its cell (floor((lat + 90) / 2^e), floor((lon + 180) / 2^e))
is one the box touches, edges included. Each cell with visits is one cluster at the mean of its
visits' positions, its count by status; a cluster of one names its visit. `total` is the sum.

The counts come from the map tally (ingest/map_tally.py) when it can answer exactly: a band no
coarser than the grid (the coarsest such), no filter but reps, statuses and whole months (on the
fine bands, statuses only), the tallies current; with no rep and no dates, from the band's rows by
cell and status alone (a few a cell), else from its rows by month and rep. Otherwise the same cells
are grouped from the visits themselves; either way the counts are those of the located live
visits in scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.db import connection
from django.db.models import Count, F, FloatField, IntegerField, Max, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Cast, Floor

from visits.ingest import map_tally
from visits.ingest.tallies import tallies_current
from visits.models import Visit
from visits.reports import maps
from visits.reports.scope import Scope

# At most this many cells in a box's grid: a cluster with four statuses is about 160 bytes of JSON,
# so a response stays under 200 KB.
MAX_CELLS = 1024
ZOOM_MAX = 22
CELL_EXPONENT_MIN, CELL_EXPONENT_MAX = -16, 8  # cells of 1/65536 degree (under 2 m) to 256 degrees
POINTS_MAX = 5000  # single visits a points request returns at most


class BoxError(ValueError):
    """A bbox or zoom the map cannot read, said as a sentence."""


@dataclass(frozen=True)
class Box:
    """A box in degrees: south to north, and one or two west-to-east spans of longitude (two when it
    crosses the antimeridian)."""

    south: float
    north: float
    spans: tuple[tuple[float, float], ...]


def box_parse(*, bbox: str | None, zoom: str | None) -> tuple[Box, int]:
    """The box and zoom of a request's `bbox=W,S,E,N` and `zoom=Z`. Longitudes may run past
    +-180 (a map panned across the antimeridian): they are wrapped; a box 360 degrees wide or
    more is the whole world."""
    if not bbox:
        raise BoxError("bbox is required: west,south,east,north in degrees")
    parts = bbox.split(",")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise BoxError(f"bbox must be four numbers, west,south,east,north: {bbox[:100]!r}") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise BoxError("bbox must be four finite numbers")
    if not (-90 <= south <= north <= 90):
        raise BoxError("bbox: south and north must be latitudes from -90 to 90, south not above north")
    if not (-540 <= west <= 540 and -540 <= east <= 540) or east < west:
        raise BoxError("bbox: west and east must be longitudes from -540 to 540, west not beyond east")
    try:
        level = int(zoom or "")
    except ValueError:
        raise BoxError(f"zoom must be a whole number from 0 to {ZOOM_MAX}") from None
    if not 0 <= level <= ZOOM_MAX:
        raise BoxError(f"zoom must be a whole number from 0 to {ZOOM_MAX}")
    if east - west >= 360:
        return Box(south, north, ((-180.0, 180.0),)), level
    west = (west + 180) % 360 - 180  # in [-180, 180)
    east = 180 - (180 - east) % 360  # in (-180, 180]
    spans = ((west, east),) if west <= east else ((west, 180.0), (-180.0, east))
    return Box(south, north, spans), level


@dataclass(frozen=True)
class Grid:
    """A box snapped to cells of 2^exponent degrees: the rows and the one or two column ranges."""

    exponent: int
    rows: tuple[int, int]
    columns: tuple[tuple[int, int], ...]

    @property
    def cells(self) -> int:
        return (self.rows[1] - self.rows[0] + 1) * sum(high - low + 1 for low, high in self.columns)


def grid_for(*, box: Box, exponent: int) -> Grid:
    rows = (map_tally.cell_y(box.south, exponent), map_tally.cell_y(box.north, exponent))
    columns = tuple((map_tally.cell_x(w, exponent), map_tally.cell_x(e, exponent)) for w, e in box.spans)
    return Grid(exponent=exponent, rows=rows, columns=columns)


def grid_choose(*, box: Box, zoom: int) -> Grid:
    """Cells of about 64 pixels at this zoom (a 256-pixel tile spans 360 / 2^zoom degrees: 2^(6 -
    zoom) is the power of two just under 90 / 2^zoom), coarser while the box holds too many."""
    exponent = max(CELL_EXPONENT_MIN, 6 - zoom)
    grid = grid_for(box=box, exponent=exponent)
    while grid.cells > MAX_CELLS and exponent < CELL_EXPONENT_MAX:
        exponent += 1
        grid = grid_for(box=box, exponent=exponent)
    return grid


def point_in_grid(*, latitude: float, longitude: float, grid: Grid) -> bool:
    """Whether a position counts in a grid's box: the definition the queries below follow."""
    y, x = map_tally.cell_y(latitude, grid.exponent), map_tally.cell_x(longitude, grid.exponent)
    return grid.rows[0] <= y <= grid.rows[1] and any(low <= x <= high for low, high in grid.columns)


@dataclass
class Cell:
    count: int = 0
    latitude_sum: float = 0.0
    longitude_sum: float = 0.0
    visit_id: int | None = None
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Clusters:
    total: int
    clusters: list[dict]
    source: str  # "tally" or "visits": where the counts came from (for tests and the bench)


def _whole_months(scope: Scope) -> bool:
    starts = scope.start is None or scope.start.day == 1
    ends = scope.end is None or (scope.end + timedelta(days=1)).day == 1
    return starts and ends


def plain(scope: Scope) -> bool:
    """Whether the map tally's plain rows (by cell and status alone) answer the scope: no rep, no dates."""
    return scope.reps is None and scope.start is None and scope.end is None


def tally_band(*, scope: Scope, grid: Grid) -> int | None:
    """The band of the map tally that answers this scope on this grid exactly, or None: the coarsest
    no coarser than the grid, in its plain rows (`plain`) or its rows by month and rep."""
    if scope.outcomes is not None or scope.resource_type or not _whole_months(scope):
        return None
    bands = [band for band in map_tally.BANDS if band <= grid.exponent]
    if not bands or not tallies_current():
        return None
    band = max(bands)
    if band not in map_tally.DETAILED and not plain(scope):
        return None  # a fine band keeps no rep or month
    return band


def _tally_rows(*, scope: Scope, grid: Grid, band: int) -> list[tuple]:
    """(cell y, cell x, status, visits, latitude sum, longitude sum, largest id sum) per grid cell
    and status, from the band's cells (shifted onto the grid)."""
    shift = grid.exponent - band
    t = map_tally.TABLE
    rows_low, rows_high = grid.rows[0] << shift, ((grid.rows[1] + 1) << shift) - 1
    where = ["band = %s", "cell_y BETWEEN %s AND %s", "visits > 0", "month = %s" if plain(scope) else "month <> %s"]
    params: list = [band, rows_low, rows_high, date.fromisoformat(map_tally.PLAIN_MONTH)]
    where.append("(" + " OR ".join("cell_x BETWEEN %s AND %s" for _ in grid.columns) + ")")
    for low, high in grid.columns:
        params += [low << shift, ((high + 1) << shift) - 1]
    if scope.reps is not None:
        if not scope.reps:
            return []
        where.append(f"rep_id IN ({', '.join(['%s'] * len(scope.reps))})")
        params += sorted(scope.reps)
    if scope.statuses is not None:
        if not scope.statuses:
            return []
        where.append(f"verification_status IN ({', '.join(['%s'] * len(scope.statuses))})")
        params += sorted(scope.statuses)
    if scope.start:
        where.append("month >= %s")
        params.append(scope.start)
    if scope.end:
        where.append("month <= %s")
        params.append(date(scope.end.year, scope.end.month, 1))
    sql = (
        f"SELECT cell_y >> {shift}, cell_x >> {shift}, verification_status, sum(visits), sum(latitude_sum), "
        f"sum(longitude_sum), max(id_sum) FROM {t} WHERE {' AND '.join(where)} GROUP BY 1, 2, 3"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _cell_expressions(exponent: int) -> tuple[Cast, Cast]:
    factor = Value(map_tally.scale(exponent), output_field=FloatField())
    y = Cast(Floor((F("latitude") + Value(90.0, output_field=FloatField())) * factor), IntegerField())
    x = Cast(Floor((F("longitude") + Value(180.0, output_field=FloatField())) * factor), IntegerField())
    return y, x


def _located_in(visits: QuerySet, *, grid: Grid) -> QuerySet:
    """`visits` with a position whose cell on the grid the box touches."""
    y, x = _cell_expressions(grid.exponent)
    columns = Q()
    for low, high in grid.columns:
        columns |= Q(cell_x__gte=low, cell_x__lte=high)
    return (
        visits.filter(latitude__isnull=False)
        .annotate(cell_y=y, cell_x=x)
        .filter(cell_y__gte=grid.rows[0], cell_y__lte=grid.rows[1])
        .filter(columns)
    )


def _visit_rows(*, scope: Scope, grid: Grid) -> list[tuple]:
    """The same rows as _tally_rows, grouped from the visits."""
    grouped = (
        _located_in(scope.visits(), grid=grid)
        .order_by()
        .values_list("cell_y", "cell_x", "verification_status")
        .annotate(n=Count("id"), lat=Sum("latitude"), lon=Sum("longitude"), top=Max("id"))
    )
    return list(grouped)


def clusters_count(*, scope: Scope, box: Box, zoom: int) -> Clusters:
    """The clusters of the located live visits in `scope` within `box` at `zoom` (the module's
    docstring says which visits a box holds)."""
    grid = grid_choose(box=box, zoom=zoom)
    band = tally_band(scope=scope, grid=grid)
    rows = _visit_rows(scope=scope, grid=grid) if band is None else _tally_rows(scope=scope, grid=grid, band=band)
    cells: dict[tuple[int, int], Cell] = {}
    for y, x, status, n, lat, lon, top in rows:
        if not n:
            continue
        cell = cells.setdefault((y, x), Cell())
        cell.count += n
        cell.latitude_sum += lat
        cell.longitude_sum += lon
        cell.visit_id = int(top)
        cell.statuses[status] = cell.statuses.get(status, 0) + n
    order: dict[str, int] = {str(s): i for i, s in enumerate(maps.STATUS_ORDER)}
    clusters = []
    for cell in cells.values():
        cluster: dict = {
            "lat": round(cell.latitude_sum / cell.count, 5),
            "lon": round(cell.longitude_sum / cell.count, 5),
            "count": cell.count,
            "statuses": dict(sorted(cell.statuses.items(), key=lambda item: order.get(item[0], len(order)))),
        }
        if cell.count == 1:
            cluster["id"] = cell.visit_id
        clusters.append(cluster)
    clusters.sort(key=lambda c: (-c["count"], c["lat"], c["lon"]))
    return Clusters(
        total=sum(c["count"] for c in clusters), clusters=clusters, source="visits" if band is None else "tally"
    )


def points_list(*, scope: Scope, box: Box, limit: int = POINTS_MAX) -> dict:
    """The located live visits in `scope` within `box` itself (edges included), newest first, at most
    `limit`: the rows and lookups of maps.visit_rows (what a popup shows), and whether more were
    left out (one more row is read to know; the lookups may name that row's rep or customer)."""
    spans = Q()
    for west, east in box.spans:
        spans |= Q(longitude__gte=west, longitude__lte=east)
    newest = (
        scope.visits()
        .filter(latitude__isnull=False, latitude__gte=box.south, latitude__lte=box.north)
        .filter(spans)
        .order_by("-visited_at", "-id")
        .values("id")[: limit + 1]
    )
    # The ids first, from the position index alone (it holds the time and the id), then their rows:
    # ordered by time, the planner would walk the time index and test every visit's position.
    visits = Visit.objects.filter(id__in=Subquery(newest)).order_by("-visited_at", "-id")
    rows, lookups = maps.visit_rows(visits=visits, limit=limit + 1)
    return {"truncated": len(rows) > limit, "rows": rows[:limit], "lookups": lookups}

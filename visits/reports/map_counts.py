"""What a map page knows before it draws a visit: its legend's counts and the box it opens on,
read from the tallies instead of every visit (at a million visits, reading them took the map
page 1.3 s and, through SQLite's memory map, half a gigabyte of the web process's memory).

- The visits by status: the report tallies (analytics.status_rows), exact for every filter.
- The located visits by status: the map tally's coarsest band (ingest/map_tally.py): with no rep
  and no dates, its rows by cell and status (a few); else its rows by month, rep and status, whole
  months from it, the days at a range's edges from the visits, as the reports read theirs. With an
  outcome or resource-type filter, which the map tally does not keep, or while the tallies are
  rebuilt: counted from the visits.
- The visits from the Core API's history and those whose position the retention rule removed:
  each from a partial index of its own (visit_history, visit_position_removed), so a count reads
  those few rows only.
- The opening box: the edges of the map tally's cells that hold the scope's visits, so it holds
  every one of them and is at most a cell wider on each side (1/64 degree with no rep or date
  filter, 1/2 degree with one; a date range is read as the whole months it touches). From the
  visits with an outcome or resource-type filter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date

from django.db.models import Count, Max, Min, QuerySet, Sum

from visits.ingest import map_tally
from visits.ingest.tallies import tallies_current
from visits.models import MapCellTally, VisitSource
from visits.reports import analytics, clusters
from visits.reports.scope import Scope

COUNT_BAND = max(map_tally.DETAILED)  # 1/2-degree cells (by month and rep too): the fewest rows
BOUNDS_BAND_DETAILED = min(map_tally.DETAILED)  # 1/2 degree, by month and rep
BOUNDS_BAND_PLAIN = min(map_tally.BANDS)  # 1/64 degree, by status only


def _tally_answers(scope: Scope) -> bool:
    """Whether the map tally holds this scope's dimensions (it keeps no outcome, no resource type)."""
    return scope.outcomes is None and not scope.resource_type and tallies_current()


def _cells(scope: Scope, *, band: int, months: tuple | None) -> QuerySet:
    """The band's rows with visits, narrowed by the scope's statuses: its plain rows (by cell and
    status alone) when the scope has no rep and no dates, else its rows by month and rep, narrowed
    by the reps and to the months first..last (either None: open)."""
    rows = MapCellTally.objects.filter(band=band, visits__gt=0)
    plain_month = date.fromisoformat(map_tally.PLAIN_MONTH)
    if clusters.plain(scope):
        return rows.filter(month=plain_month).filter(**_statuses(scope)).order_by()
    rows = rows.exclude(month=plain_month)
    if scope.reps is not None:
        rows = rows.filter(rep_id__in=scope.reps)
    rows = rows.filter(**_statuses(scope))
    if months is not None:
        first, last = months
        if first is not None:
            rows = rows.filter(month__gte=first)
        if last is not None:
            rows = rows.filter(month__lte=last)
    return rows.order_by()


def _statuses(scope: Scope) -> dict:
    return {} if scope.statuses is None else {"verification_status__in": scope.statuses}


def _counted(visits: QuerySet) -> Counter:
    return Counter(
        dict(
            visits.filter(latitude__isnull=False).order_by().values_list("verification_status").annotate(n=Count("id"))
        )
    )


def located_by_status(scope: Scope) -> Counter:
    """The scope's live visits with a position, by status."""
    if not _tally_answers(scope):
        return _counted(scope.visits())
    reads, days = analytics.range_plan(start=scope.start, end=scope.end, grains=(analytics.MONTHS,))
    found: Counter = Counter()
    for low, high in days:
        found += _counted(replace(scope, start=low, end=high).visits())
    for _, months in reads:
        rows = (
            _cells(scope, band=COUNT_BAND, months=months).values_list("verification_status").annotate(n=Sum("visits"))
        )
        found += Counter(dict(rows))
    return found


def all_by_status(scope: Scope) -> Counter:
    """The scope's live visits, with a position or without, by status (the report tallies)."""
    found: Counter = Counter()
    for _, status, visits, _, _ in analytics.status_rows(scope=scope, by=()):
        found[status] += visits
    return found


def history_count(scope: Scope) -> int:
    """The scope's live visits from the Core API's history (which never carry a position)."""
    return scope.visits().filter(source=VisitSource.CORE_API).count()


def removed_count(scope: Scope) -> int:
    """The scope's live visits whose position the retention rule removed."""
    return scope.visits().filter(coordinates_removed_at__isnull=False).count()


def opening_bounds(scope: Scope) -> list[list[float]] | None:
    """[[south, west], [north, east]] holding every located visit in scope (the module's docstring
    says how much wider), or None when there is none."""
    if not _tally_answers(scope):
        box = (
            scope.visits()
            .filter(latitude__isnull=False)
            .order_by()
            .aggregate(s=Min("latitude"), w=Min("longitude"), n=Max("latitude"), e=Max("longitude"))
        )
        return None if box["s"] is None else [[box["s"], box["w"]], [box["n"], box["e"]]]
    if clusters.plain(scope):
        band, months = BOUNDS_BAND_PLAIN, None
    else:
        band = BOUNDS_BAND_DETAILED
        months = (
            None if scope.start is None else scope.start.replace(day=1),
            None if scope.end is None else scope.end.replace(day=1),
        )
    cells = _cells(scope, band=band, months=months).aggregate(
        s=Min("cell_y"), n=Max("cell_y"), w=Min("cell_x"), e=Max("cell_x")
    )
    if cells["s"] is None:
        return None
    size = 1 / map_tally.scale(band)
    return [
        [max(-90.0, cells["s"] * size - 90), max(-180.0, cells["w"] * size - 180)],
        [min(90.0, (cells["n"] + 1) * size - 90), min(180.0, (cells["e"] + 1) * size - 180)],
    ]

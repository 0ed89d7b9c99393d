"""The map tally: live located visits per grid cell of a few bands and status, and on the coarse
bands by month of local_day and rep too (MapCellTally), with the sums of their latitudes,
longitudes and ids, from which the map's clusters (reports/clusters.py) are summed without reading
the visits.

A band's cells are 2^band degrees; a visit's cell is floor((latitude + 90) * 2^-band) and
floor((longitude + 180) * 2^-band), the same float operations in SQL and in Python (a power of two
scales exactly), so the cells the database keys and those reports/clusters.py asks for agree to the
visit. A cell of a band is four, or a power of four, cells of the next finer band: clusters coarser
than a band are summed from it by shifting the cell numbers.

Kept like the tallies (tallies.py): SQLite row triggers whose conditions fail at once for a visit
without a position, PostgreSQL statement triggers over the transition tables; rebuilt by
tallies.tallies_rebuild with the other tallies, and built after a `migrate` that left it empty
beside located visits (migration 0023; 0025 made its bands those of today).
"""

from __future__ import annotations

import math

from django.db import connection as default_connection

from visits import triggers
from visits.models import MapCellTally, Visit, column

# The bands (cells of 1/2, 1/16 and 1/64 degree: 2^band): zoom levels 7, 10 and 12 draw clusters
# of about 64 pixels straight from them, coarser zoom levels sum the 1/2-degree cells. Every band
# keeps its cells by status alone (the PLAIN rows: month 1970-01-01, rep 0), which a map without a
# rep or date filter reads: a few rows a cell. The coarse band (DETAILED) keeps them by month and
# rep too, for those filters: keyed by them, a fine band would have about a row per visit and sum
# no faster than the visits (measured: 1.2 s for a city at zoom 10 at a million visits); a filter by
# rep or date at those zoom levels reads few visits anyway. Each LAYER (a band, plain or by month
# and rep) costs ingestion an upsert per visit: four in all (a band of 4-degree cells, dropped by
# migration 0025, cost ingestion a fifth of its rate for views the 1/2-degree cells serve as well).
BANDS = (-1, -4, -6)
DETAILED = frozenset({-1})
LAYERS = tuple((band, False) for band in BANDS) + tuple((band, True) for band in BANDS if band in DETAILED)
PLAIN_MONTH, PLAIN_REP = "1970-01-01", 0

TABLE = MapCellTally._meta.db_table
VISIT_TABLE = Visit._meta.db_table
VISIT = {
    name: column(Visit, name)
    for name in ("id", "local_day", "rep", "verification_status", "latitude", "longitude", "deleted_at")
}
KEY = tuple(f.column for f in MapCellTally._meta.pk_fields)  # band, cell_y, cell_x, month, rep_id, status
SUMS = tuple(column(MapCellTally, name) for name in ("visits", "latitude_sum", "longitude_sum", "id_sum"))
MONTH = {"sqlite": "strftime('%Y-%m-01', {day})", "postgresql": "date_trunc('month', {day})::date"}
GROUPS = ", ".join(str(i) for i in range(1, len(KEY) + 1))


def scale(band: int) -> float:
    """Cells per degree in a band (exact: a power of two)."""
    return math.ldexp(1.0, -band)


def cell_y(latitude: float, band: int) -> int:
    """A latitude's cell in a band, as the SQL of cell_sql computes it."""
    return math.floor((latitude + 90.0) * scale(band))


def cell_x(longitude: float, band: int) -> int:
    return math.floor((longitude + 180.0) * scale(band))


def _float(value: float, vendor: str) -> str:
    return f"CAST({value!r} AS double precision)" if vendor == "postgresql" else repr(value)


def cell_sql(*, vendor: str, band: int, degrees: str, offset: float) -> str:
    """SQL for the cell of a latitude (offset 90) or longitude (offset 180) column in a band."""
    return f"CAST(floor(({degrees} + {_float(offset, vendor)}) * {_float(scale(band), vendor)}) AS integer)"


def values(*, vendor: str, band: int, detailed: bool, row: str = "") -> list[str]:
    """SQL for the key's values from a visit row (`row` with its dot, or the bare columns), in the
    band's detailed rows (by month and rep) or its plain ones."""
    plain_month = f"DATE '{PLAIN_MONTH}'" if vendor == "postgresql" else f"'{PLAIN_MONTH}'"
    return [
        str(band),
        cell_sql(vendor=vendor, band=band, degrees=f"{row}{VISIT['latitude']}", offset=90.0),
        cell_sql(vendor=vendor, band=band, degrees=f"{row}{VISIT['longitude']}", offset=180.0),
        MONTH[vendor].format(day=f"{row}{VISIT['local_day']}") if detailed else plain_month,
        f"{row}{VISIT['rep']}" if detailed else str(PLAIN_REP),
        f"{row}{VISIT['verification_status']}",
    ]


def counted(row: str = "") -> str:
    """SQL true for a visit row the tally counts: live and located."""
    return f"{row}{VISIT['deleted_at']} IS NULL AND {row}{VISIT['latitude']} IS NOT NULL"


def _sums(row: str = "") -> list[str]:
    return [f"{row}{VISIT['latitude']}", f"{row}{VISIT['longitude']}", f"{row}{VISIT['id']}"]


def rebuild_sql(*, vendor: str) -> list[str]:
    """The tally counted afresh from the visits, a statement per band."""
    return [
        f"INSERT INTO {TABLE} ({', '.join(KEY)}, {', '.join(SUMS)}) "
        f"SELECT {', '.join(values(vendor=vendor, band=band, detailed=detailed))}, count(*), "
        + ", ".join(f"sum({s})" for s in _sums())
        + f" FROM {VISIT_TABLE} WHERE {counted()} GROUP BY {GROUPS}"
        for band, detailed in LAYERS
    ]


def sqlite_triggers() -> list[str]:
    def add(row: str) -> str:
        return " ".join(
            f"INSERT INTO {TABLE} ({', '.join(KEY)}, {', '.join(SUMS)}) "
            f"VALUES ({', '.join(values(vendor='sqlite', band=band, detailed=detailed, row=row))}, 1, "
            f"{', '.join(_sums(row))}) "
            f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
            + ", ".join(f"{c} = {c} + excluded.{c}" for c in SUMS)
            + ";"
            for band, detailed in LAYERS
        )

    def remove(row: str) -> str:
        return " ".join(
            f"UPDATE {TABLE} SET "
            + ", ".join(f"{c} = {c} - {s}" for c, s in zip(SUMS, ["1", *_sums(row)], strict=True))
            + " WHERE "
            + " AND ".join(
                f"{k} = {v}"
                for k, v in zip(KEY, values(vendor="sqlite", band=band, detailed=detailed, row=row), strict=True)
            )
            + ";"
            for band, detailed in LAYERS
        )

    moved = " OR ".join(
        f"NEW.{VISIT[name]} IS NOT OLD.{VISIT[name]}"
        for name in ("latitude", "longitude", "local_day", "rep", "verification_status")
    )
    # Each condition starts with the visit's deletion and position: a visit without one stops there.
    return [
        f"CREATE TRIGGER visits_mapcell_insert AFTER INSERT ON {VISIT_TABLE} WHEN {counted('NEW.')}\n"
        f"BEGIN {add('NEW.')} END",
        f"CREATE TRIGGER visits_mapcell_update_old AFTER UPDATE ON {VISIT_TABLE}\n"
        f"WHEN {counted('OLD.')} AND (NOT ({counted('NEW.')}) OR {moved})\nBEGIN {remove('OLD.')} END",
        f"CREATE TRIGGER visits_mapcell_update_new AFTER UPDATE ON {VISIT_TABLE}\n"
        f"WHEN {counted('NEW.')} AND (NOT ({counted('OLD.')}) OR {moved})\nBEGIN {add('NEW.')} END",
        f"CREATE TRIGGER visits_mapcell_delete AFTER DELETE ON {VISIT_TABLE} WHEN {counted('OLD.')}\n"
        f"BEGIN {remove('OLD.')} END",
    ]


def _pg_delta(tables: list[tuple[str, int]]) -> str:
    """One grouped upsert per band, adding each transition table's counted rows with its sign."""
    statements = []
    columns, deltas = ", ".join(KEY), [f"d{i}" for i in range(len(SUMS))]
    for band, detailed in LAYERS:
        delta = " UNION ALL ".join(
            f"SELECT {', '.join(values(vendor='postgresql', band=band, detailed=detailed))}, {sign} * count(*), "
            + ", ".join(f"{sign} * sum({s})" for s in _sums())
            + f" FROM {table} WHERE {counted()} GROUP BY {GROUPS}"
            for table, sign in tables
        )
        statements.append(
            f"INSERT INTO {TABLE} ({columns}, {', '.join(SUMS)}) "
            f"SELECT {columns}, {', '.join(f'sum({d})' for d in deltas)} "
            f"FROM ({delta}) AS delta ({columns}, {', '.join(deltas)}) GROUP BY {GROUPS} "
            f"HAVING sum(d0) <> 0 OR sum(d1) <> 0 OR sum(d2) <> 0 OR sum(d3) <> 0 "
            f"ON CONFLICT ({columns}) DO UPDATE SET "
            + ", ".join(f"{c} = {TABLE}.{c} + EXCLUDED.{c}" for c in SUMS)
            + ";"
        )
    return "\n".join(statements)


def postgres_triggers() -> list[str]:
    return triggers.statement_triggers(prefix="visits_mapcell", table=VISIT_TABLE, body=_pg_delta)


def _statements(vendor: str) -> list[str]:
    return postgres_triggers() if vendor == "postgresql" else sqlite_triggers()


def triggers_drop(*, connection=default_connection) -> None:
    triggers.trigger_set_drop(connection=connection, trigger_set=TRIGGER_SET)


def triggers_install(*, connection=default_connection) -> None:
    triggers.trigger_set_install(connection=connection, trigger_set=TRIGGER_SET)


def map_tally_rebuild(*, connection=default_connection) -> None:
    """The tally counted afresh from the visits, its triggers off meanwhile; inside
    tallies.tallies_rebuild's transaction, or after a `migrate` (map_tally_unbuilt)."""
    triggers_drop(connection=connection)
    vendor = "postgresql" if connection.vendor == "postgresql" else "sqlite"
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")
        for statement in rebuild_sql(vendor=vendor):
            cursor.execute(statement)
    triggers_install(connection=connection)


def map_tally_unbuilt(*, connection=default_connection) -> bool:
    """True when the tally counts nothing while a live visit has a position: never built
    (migration 0023 adds it empty)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {TABLE} WHERE {SUMS[0]} <> 0 LIMIT 1")
        if cursor.fetchone():
            return False
        cursor.execute(f"SELECT 1 FROM {VISIT_TABLE} WHERE {counted()} LIMIT 1")
        return cursor.fetchone() is not None


# Installed after the tallies' set; its rebuild runs in theirs (tallies.tallies_ensure).
TRIGGER_SET = triggers.TriggerSet(
    label="map tally",
    table=VISIT_TABLE,
    names=triggers.tally_trigger_names("visits_mapcell"),
    statements=_statements,
    needs=(TABLE,),
)

"""The distance tally: too-far visits with a distance, per month of local_day, rep, outcome, resource
type and distance bin, from which the reports read the median and 90th percentile of too-far
distances without reading the visits.

The bins are log-spaced, BINS_PER_DECADE to each power of ten of metres: bin k holds the distances
in (10^((k-1)/N), 10^(k/N)] m (bin 0: 1 m or less). A percentile read from the bins is the
geometric middle of the bin holding it, so within PRECISION of the distance itself (1.9%).

Kept like the tallies (tallies.py): SQLite row triggers whose conditions fail at once for a visit
without a distance (every new visit: ingestion does not measure), PostgreSQL statement triggers over
the transition tables; rebuilt by tallies.tallies_rebuild with the other tallies.
"""

from __future__ import annotations

import math

from django.db import connection as default_connection

from visits import triggers
from visits.models import DistanceTally, VerificationStatus, Visit, column

BINS_PER_DECADE = 60
PRECISION = 10 ** (0.5 / BINS_PER_DECADE) - 1  # the largest relative error of a distance read from its bin
_SCALE = BINS_PER_DECADE / math.log(10)  # ln(metres) * _SCALE = N * log10(metres), the same float in SQL

TABLE = DistanceTally._meta.db_table
VISIT_TABLE = Visit._meta.db_table
VISIT = {
    name: column(Visit, name)
    for name in (
        "local_day", "rep", "outcome", "resource_type", "verification_status", "deleted_at", "customer_distance_m",
    )
}  # fmt: skip
KEY = tuple(f.column for f in DistanceTally._meta.pk_fields)  # month, rep, outcome, resource type, bin
COUNT = column(DistanceTally, "visits")
MONTH = {"sqlite": "strftime('%Y-%m-01', {day})", "postgresql": "date_trunc('month', {day})::date"}
TOO_FAR = VerificationStatus.TOO_FAR.value
NAMES = ("visits_distance_insert", "visits_distance_update_old", "visits_distance_update_new", "visits_distance_delete")


def metres_bin(metres: float) -> int:
    """The bin of a distance, as the SQL of bin_sql computes it."""
    return math.ceil(math.log(max(metres, 1.0)) * _SCALE)


def bin_metres(k: int) -> float:
    """The distance a bin stands for: the geometric middle of its bounds (1 m for bin 0)."""
    return 1.0 if k <= 0 else 10 ** ((k - 0.5) / BINS_PER_DECADE)


def bins_percentile(bins: dict[int, int], fraction: float) -> float | None:
    """The nearest-rank percentile (the ceil(fraction * n)-th smallest distance) read from bins
    {bin: visits}, as bin_metres; None without visits."""
    total = sum(n for n in bins.values() if n > 0)
    if not total:
        return None
    rank, seen = max(1, math.ceil(fraction * total - 1e-9)), 0
    for k in sorted(bins):
        seen += max(bins[k], 0)
        if seen >= rank:
            return bin_metres(k)
    return None  # unreachable: seen reaches total


def bin_sql(*, vendor: str, distance: str) -> str:
    """SQL for the bin of the distance column (or expression) `distance`."""
    floor = "max" if vendor == "sqlite" else "greatest"
    return f"CAST(ceil(ln({floor}({distance}, 1.0)) * {_SCALE!r}) AS integer)"


def _counted(row: str) -> str:
    """SQL true for a visit row the tally counts: live, too far, with a distance."""
    return (
        f"{row}{VISIT['customer_distance_m']} IS NOT NULL AND {row}{VISIT['deleted_at']} IS NULL "
        f"AND {row}{VISIT['verification_status']} = '{TOO_FAR}'"
    )


def _values(*, vendor: str, row: str = "") -> list[str]:
    """SQL for the key's values from a visit row (`row` with its dot, or the bare columns)."""
    return [
        MONTH[vendor].format(day=f"{row}{VISIT['local_day']}"),
        f"{row}{VISIT['rep']}",
        f"coalesce({row}{VISIT['outcome']}, 0)",
        f"{row}{VISIT['resource_type']}",
        bin_sql(vendor=vendor, distance=f"{row}{VISIT['customer_distance_m']}"),
    ]


def rebuild_sql(*, vendor: str) -> str:
    return (
        f"INSERT INTO {TABLE} ({', '.join(KEY)}, {COUNT}) SELECT {', '.join(_values(vendor=vendor))}, count(*) "
        f"FROM {VISIT_TABLE} WHERE {_counted('')} GROUP BY 1, 2, 3, 4, 5"
    )


def sqlite_triggers() -> list[str]:
    values = ", ".join(_values(vendor="sqlite", row="NEW."))
    add = (
        f"INSERT INTO {TABLE} ({', '.join(KEY)}, {COUNT}) VALUES ({values}, 1) "
        f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {COUNT} = {COUNT} + 1;"
    )
    remove = (
        f"UPDATE {TABLE} SET {COUNT} = {COUNT} - 1 WHERE "
        + " AND ".join(f"{k} = {v}" for k, v in zip(KEY, _values(vendor="sqlite", row="OLD."), strict=True))
        + ";"
    )
    moved = " OR ".join(
        f"NEW.{VISIT[name]} IS NOT OLD.{VISIT[name]}"
        for name in ("customer_distance_m", "local_day", "rep", "outcome", "resource_type")
    )
    # Each condition starts with the distance (_counted): NULL for a visit never measured, so
    # SQLite stops there for every new visit.
    return [
        f"CREATE TRIGGER visits_distance_insert AFTER INSERT ON {VISIT_TABLE} WHEN {_counted('NEW.')}\nBEGIN {add} END",
        f"CREATE TRIGGER visits_distance_update_old AFTER UPDATE ON {VISIT_TABLE}\n"
        f"WHEN {_counted('OLD.')} AND (NOT ({_counted('NEW.')}) OR {moved})\nBEGIN {remove} END",
        f"CREATE TRIGGER visits_distance_update_new AFTER UPDATE ON {VISIT_TABLE}\n"
        f"WHEN {_counted('NEW.')} AND (NOT ({_counted('OLD.')}) OR {moved})\nBEGIN {add} END",
        f"CREATE TRIGGER visits_distance_delete AFTER DELETE ON {VISIT_TABLE} WHEN {_counted('OLD.')}\n"
        f"BEGIN {remove} END",
    ]


def _pg_delta(tables: list[tuple[str, int]]) -> str:
    delta = " UNION ALL ".join(
        f"SELECT {', '.join(_values(vendor='postgresql'))}, {sign} * count(*) FROM {table} "
        f"WHERE {_counted('')} GROUP BY 1, 2, 3, 4, 5"
        for table, sign in tables
    )
    columns = ", ".join(KEY)
    return (
        f"INSERT INTO {TABLE} ({columns}, {COUNT}) SELECT {columns}, sum(n) FROM ({delta}) AS delta ({columns}, n) "
        f"GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 "
        f"ON CONFLICT ({columns}) DO UPDATE SET {COUNT} = {TABLE}.{COUNT} + EXCLUDED.{COUNT};"
    )


def postgres_triggers() -> list[str]:
    events = {
        "visits_distance_insert": ("INSERT", "REFERENCING NEW TABLE AS new_rows", [("new_rows", 1)]),
        "visits_distance_update_new": (
            "UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", [("old_rows", -1), ("new_rows", 1)]
        ),
        "visits_distance_delete": ("DELETE", "REFERENCING OLD TABLE AS old_rows", [("old_rows", -1)]),
    }  # fmt: skip
    statements = []
    for name, (event, referencing, tables) in events.items():
        statements += [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n{_pg_delta(tables)}\nRETURN NULL;\nEND $$",
            f"CREATE TRIGGER {name} AFTER {event} ON {VISIT_TABLE} {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
        ]
    return statements


def _names(vendor: str) -> list[str]:
    return [n for n in NAMES if n != "visits_distance_update_old"] if vendor == "postgresql" else [*NAMES]


def _statements(vendor: str) -> list[str]:
    return postgres_triggers() if vendor == "postgresql" else sqlite_triggers()


def distance_tally_rebuild(*, connection=default_connection) -> None:
    """The tally counted afresh from the visits, its triggers off meanwhile; inside
    tallies.tallies_rebuild's transaction (after the local days)."""
    vendor = "postgresql" if connection.vendor == "postgresql" else "sqlite"
    triggers.trigger_set_drop(connection=connection, trigger_set=TRIGGER_SET)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")
        cursor.execute(rebuild_sql(vendor=vendor))
    triggers.trigger_set_install(connection=connection, trigger_set=TRIGGER_SET)


# Rebuilt by the tallies' after_migrate (tallies.tallies_ensure), which needs this table too.
TRIGGER_SET = triggers.TriggerSet(
    label="distance tally", table=VISIT_TABLE, names=_names, statements=_statements, needs=(TABLE,)
)

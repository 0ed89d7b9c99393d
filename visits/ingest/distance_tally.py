"""The distance tallies: too-far visits with a distance, per month of local_day, rep, outcome, resource
type and distance bin (DistanceTally), and of all time per rep and bin (RepDistanceTally) and per
outcome and bin (OutcomeDistanceTally), for the whole range by rep or by outcome, from which the
reports read the median and 90th percentile of too-far distances without reading the visits.

The bins are log-spaced, BINS_PER_DECADE to each power of ten of metres: bin k holds the distances
in (10^((k-1)/N), 10^(k/N)] m (bin 0: 1 m or less). A percentile read from the bins is the
geometric middle of the bin holding it, so within PRECISION of the distance itself (1.9%).

Kept like the tallies (tallies.py): SQLite row triggers whose conditions fail at once for a visit
without a distance (every new visit: ingestion does not measure), PostgreSQL statement triggers over
the transition tables; rebuilt by tallies.tallies_rebuild with the other tallies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.db import connection as default_connection

from visits import triggers
from visits.models import DistanceTally, OutcomeDistanceTally, RepDistanceTally, VerificationStatus, Visit, column

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
COUNT = column(DistanceTally, "visits")
MONTH = {"sqlite": "strftime('%Y-%m-01', {day})", "postgresql": "date_trunc('month', {day})::date"}
TOO_FAR = VerificationStatus.TOO_FAR.value


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


@dataclass(frozen=True)
class BinTally:
    """A tally of too-far visits by bin: its model and whether it has the month, rep, outcome and
    resource type in its key (DistanceTally) or, of all time, only the rep (RepDistanceTally) or
    the outcome (OutcomeDistanceTally): the whole-range reports by rep or outcome read their few
    rows instead of every month's."""

    model: type[DistanceTally] | type[RepDistanceTally] | type[OutcomeDistanceTally]
    monthly: bool
    by: str = "rep"  # of an all-time tally: "rep" or "outcome"

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(f.column for f in self.model._meta.pk_fields)

    def values(self, *, vendor: str, row: str = "") -> list[str]:
        """SQL for the key's values from a visit row (`row` with its dot, or the bare columns)."""
        distance = bin_sql(vendor=vendor, distance=f"{row}{VISIT['customer_distance_m']}")
        if not self.monthly:
            if self.by == "outcome":
                return [f"coalesce({row}{VISIT['outcome']}, 0)", distance]
            return [f"{row}{VISIT['rep']}", distance]
        return [
            MONTH[vendor].format(day=f"{row}{VISIT['local_day']}"),
            f"{row}{VISIT['rep']}",
            f"coalesce({row}{VISIT['outcome']}, 0)",
            f"{row}{VISIT['resource_type']}",
            distance,
        ]

    @property
    def groups(self) -> str:
        return ", ".join(str(i) for i in range(1, len(self.key) + 1))


BIN_TALLIES = (
    BinTally(DistanceTally, monthly=True),
    BinTally(RepDistanceTally, monthly=False),
    BinTally(OutcomeDistanceTally, monthly=False, by="outcome"),
)


def rebuild_sql(t: BinTally, *, vendor: str) -> str:
    return (
        f"INSERT INTO {t.table} ({', '.join(t.key)}, {COUNT}) SELECT {', '.join(t.values(vendor=vendor))}, count(*) "
        f"FROM {VISIT_TABLE} WHERE {_counted('')} GROUP BY {t.groups}"
    )


def sqlite_triggers() -> list[str]:
    add = " ".join(
        f"INSERT INTO {t.table} ({', '.join(t.key)}, {COUNT}) "
        f"VALUES ({', '.join(t.values(vendor='sqlite', row='NEW.'))}, 1) "
        f"ON CONFLICT ({', '.join(t.key)}) DO UPDATE SET {COUNT} = {COUNT} + 1;"
        for t in BIN_TALLIES
    )
    remove = " ".join(
        f"UPDATE {t.table} SET {COUNT} = {COUNT} - 1 WHERE "
        + " AND ".join(f"{k} = {v}" for k, v in zip(t.key, t.values(vendor="sqlite", row="OLD."), strict=True))
        + ";"
        for t in BIN_TALLIES
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
    statements = []
    for t in BIN_TALLIES:
        delta = " UNION ALL ".join(
            f"SELECT {', '.join(t.values(vendor='postgresql'))}, {sign} * count(*) FROM {table} "
            f"WHERE {_counted('')} GROUP BY {t.groups}"
            for table, sign in tables
        )
        columns = ", ".join(t.key)
        statements.append(
            f"INSERT INTO {t.table} ({columns}, {COUNT}) SELECT {columns}, sum(n) "
            f"FROM ({delta}) AS delta ({columns}, n) GROUP BY {t.groups} HAVING sum(n) <> 0 "
            f"ON CONFLICT ({columns}) DO UPDATE SET {COUNT} = {t.table}.{COUNT} + EXCLUDED.{COUNT};"
        )
    return "\n".join(statements)


def postgres_triggers() -> list[str]:
    return triggers.statement_triggers(prefix="visits_distance", table=VISIT_TABLE, body=_pg_delta)


def _statements(vendor: str) -> list[str]:
    return postgres_triggers() if vendor == "postgresql" else sqlite_triggers()


def distance_tally_rebuild(*, connection=default_connection) -> None:
    """The tally counted afresh from the visits, its triggers off meanwhile; inside
    tallies.tallies_rebuild's transaction (after the local days)."""
    vendor = "postgresql" if connection.vendor == "postgresql" else "sqlite"
    triggers.trigger_set_drop(connection=connection, trigger_set=TRIGGER_SET)
    with connection.cursor() as cursor:
        for t in BIN_TALLIES:
            cursor.execute(f"DELETE FROM {t.table}")
            cursor.execute(rebuild_sql(t, vendor=vendor))
    triggers.trigger_set_install(connection=connection, trigger_set=TRIGGER_SET)


# Rebuilt by the tallies' after_migrate (tallies.tallies_ensure), which needs this table too.
TRIGGER_SET = triggers.TriggerSet(
    label="distance tally",
    table=VISIT_TABLE,
    names=triggers.tally_trigger_names("visits_distance"),
    statements=_statements,
    needs=tuple(t.table for t in BIN_TALLIES),
)

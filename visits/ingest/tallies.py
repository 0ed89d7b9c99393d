"""Visit tallies: counts per year, month and week that the reports read instead of every visit.

Database triggers on the visits table keep `MonthTally`, `YearTally`, `AllTimeTally` (of all time)
and `WeekTally` equal to a count of the live visits, in the transaction of whatever wrote them
(ingestion, the admin, a bench loader).
SQLite gets row triggers; PostgreSQL gets statement triggers that apply one grouped delta per
statement from its transition tables. They are the trigger set TRIGGER_SET (visits/triggers.py),
(re)installed after every `migrate`, as SQLite drops a table's triggers when a migration rebuilds
the table, and looked for by the check visits.E001.

The tallies are keyed by `Visit.local_day`, the day in DISPLAY_TIME_ZONE. The month and year
tallies also count the visits more than DISTANCE_FAR_KM from their customer (`far`), a number the
triggers are written with. When either setting changes, `tallies_rebuild()` re-derives the days and
the tallies, the distance tally of distance_tally.py with them (`manage.py migrate` and `manage.py
tallies_rebuild` run it); until then `tallies_current()` is false and the reports count the visits
directly.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection as default_connection
from django.db import models, transaction
from django.utils import timezone

from visits import triggers
from visits.ingest import distance_tally, map_tally, review_tally
from visits.models import AllTimeTally, MonthTally, TallyState, Visit, WeekTally, YearTally, column


@functools.lru_cache(maxsize=8)
def zone_get(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_day(*, visited_at: datetime, zone_name: str) -> date:
    """The calendar day of an aware datetime in the named zone."""
    if zone_name == "UTC" and visited_at.tzinfo is UTC:
        return visited_at.date()
    return visited_at.astimezone(zone_get(zone_name)).date()


# --- Triggers ------------------------------------------------------------------------------


VISIT_TABLE = Visit._meta.db_table
# The visit columns the tallies are made of, by field name.
VISIT = {
    name: column(Visit, name)
    for name in (
        "id", "visited_at", "local_day", "rep", "outcome", "resource_type", "verification_status", "flagged",
        "deleted_at", "customer_distance_m",
    )
}  # fmt: skip
STATE_TABLE = TallyState._meta.db_table
STATE_ZONE, STATE_REBUILT = column(TallyState, "time_zone"), column(TallyState, "rebuilt_at")
STATE_FAR = column(TallyState, "far_km")


def far_metres() -> float:
    """DISTANCE_FAR_KM in metres: the far counts' threshold (a visit is far when strictly beyond)."""
    return float(settings.DISTANCE_FAR_KM) * 1000.0


def far_sql(prefix: str = "") -> str:
    """SQL true when a visit row (`prefix`, e.g. "NEW.") is far; NULL distances are not."""
    return f"{prefix}{VISIT['customer_distance_m']} > {far_metres()!r}"


@dataclass(frozen=True)
class Tally:
    model: type[models.Model]
    period: dict[str, str] | None  # vendor -> SQL for the period's first day, from "{day}"; None: all time
    dimensions: tuple[tuple[str, str], ...]  # (Visit field, SQL from "{}") of the other key columns, in order
    far: bool = True  # it counts the far visits too

    @property
    def extra(self) -> tuple[str, ...]:
        """The count columns beyond `visits` and `flagged`."""
        return (column(self.model, "far"),) if self.far else ()

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def key(self) -> tuple[str, ...]:
        """The tally's primary key columns, the period column (if any) first."""
        return tuple(f.column for f in self.model._meta.pk_fields)

    @property
    def counts(self) -> tuple[str, str]:
        """The columns of the visits and of the flagged visits counted."""
        return column(self.model, "visits"), column(self.model, "flagged")

    def values(self, *, vendor: str, row: str = "") -> list[str]:
        """SQL for the key's values from a visit row (`row`, or the bare columns)."""
        prefix = f"{row}." if row else ""
        dimensions = [sql.format(f"{prefix}{VISIT[name]}") for name, sql in self.dimensions]
        if self.period is None:
            return dimensions
        return [self.period[vendor].format(day=f"{prefix}{VISIT['local_day']}"), *dimensions]


_STATUS_DIMENSIONS = (
    ("rep", "{}"),
    ("outcome", "coalesce({}, 0)"),
    ("resource_type", "{}"),
    ("verification_status", "{}"),
)
TALLIES = (
    Tally(
        MonthTally,
        {"sqlite": "strftime('%Y-%m-01', {day})", "postgresql": "date_trunc('month', {day})::date"}, _STATUS_DIMENSIONS,
    ),
    Tally(
        YearTally,
        {"sqlite": "strftime('%Y-01-01', {day})", "postgresql": "date_trunc('year', {day})::date"}, _STATUS_DIMENSIONS,
    ),
    # Of all time: the reports' default range, open at both ends.
    Tally(AllTimeTally, None, _STATUS_DIMENSIONS),
    # 'weekday 1' moves forward to a Monday: from six days earlier, that is the week's Monday.
    Tally(
        WeekTally,
        {"sqlite": "date({day}, '-6 days', 'weekday 1')", "postgresql": "date_trunc('week', {day})::date"},
        (("rep", "{}"), ("verification_status", "{}")), far=False,
    ),
)  # fmt: skip


def _sqlite_add(row: str) -> str:
    statements = []
    for t in TALLIES:
        visits, flagged = t.counts
        names = [*t.key, visits, flagged, *t.extra]
        values = [*t.values(vendor="sqlite", row=row), "1", f"{row}.{VISIT['flagged']}"]
        values += [f"coalesce({far_sql(f'{row}.')}, 0)"] * len(t.extra)
        sets = [f"{visits} = {visits} + 1", *(f"{c} = {c} + excluded.{c}" for c in (flagged, *t.extra))]
        statements.append(
            f"INSERT INTO {t.table} ({', '.join(names)}) VALUES ({', '.join(values)}) "
            f"ON CONFLICT ({', '.join(t.key)}) DO UPDATE SET {', '.join(sets)};"
        )
    return " ".join(statements)


def _sqlite_remove(row: str) -> str:
    statements = []
    for t in TALLIES:
        visits, flagged = t.counts
        sets = [f"{visits} = {visits} - 1", f"{flagged} = {flagged} - {row}.{VISIT['flagged']}"]
        sets += [f"{c} = {c} - coalesce({far_sql(f'{row}.')}, 0)" for c in t.extra]
        statements.append(
            f"UPDATE {t.table} SET {', '.join(sets)} WHERE "
            + " AND ".join(f"{k} = {v}" for k, v in zip(t.key, t.values(vendor="sqlite", row=row), strict=True))
            + ";"
        )
    return " ".join(statements)


def _rebuild_sql(t: Tally, *, vendor: str) -> str:
    """The tally `t` counted afresh from the live visits."""
    visits, flagged = t.counts
    sums = [f"sum(CASE WHEN {VISIT['flagged']} THEN 1 ELSE 0 END)"]
    sums += [f"sum(CASE WHEN {far_sql()} THEN 1 ELSE 0 END)"] * len(t.extra)
    return (
        f"INSERT INTO {t.table} ({', '.join([*t.key, visits, flagged, *t.extra])}) "
        f"SELECT {', '.join(t.values(vendor=vendor))}, count(*), {', '.join(sums)} FROM {VISIT_TABLE} "
        f"WHERE {VISIT['deleted_at']} IS NULL GROUP BY {', '.join(str(i) for i in range(1, len(t.key) + 1))}"
    )


def _sqlite_moved() -> str:
    """A tallied column changed, the visit crossed the far threshold, or it was deleted or restored."""
    changed = [
        f"NEW.{VISIT[name]} IS NOT OLD.{VISIT[name]}"
        for name in ("local_day", "rep", "outcome", "resource_type", "verification_status", "flagged")
    ]
    # Cheap when the distance is NULL and unchanged (every new visit): the first test fails.
    distance = VISIT["customer_distance_m"]
    changed.append(
        f"(NEW.{distance} IS NOT OLD.{distance} AND coalesce({far_sql('NEW.')}, 0) <> coalesce({far_sql('OLD.')}, 0))"
    )
    return " OR ".join(changed)


def sqlite_triggers() -> list[str]:
    deleted = VISIT["deleted_at"]
    moved = _sqlite_moved()
    return [
        f"CREATE TRIGGER visits_tally_insert AFTER INSERT ON {VISIT_TABLE} WHEN NEW.{deleted} IS NULL\n"
        f"BEGIN {_sqlite_add('NEW')} END",
        f"CREATE TRIGGER visits_tally_update_old AFTER UPDATE ON {VISIT_TABLE}\n"
        f"WHEN OLD.{deleted} IS NULL AND (NEW.{deleted} IS NOT NULL OR {moved})\n"
        f"BEGIN {_sqlite_remove('OLD')} END",
        f"CREATE TRIGGER visits_tally_update_new AFTER UPDATE ON {VISIT_TABLE}\n"
        f"WHEN NEW.{deleted} IS NULL AND (OLD.{deleted} IS NOT NULL OR {moved})\n"
        f"BEGIN {_sqlite_add('NEW')} END",
        f"CREATE TRIGGER visits_tally_delete AFTER DELETE ON {VISIT_TABLE} WHEN OLD.{deleted} IS NULL\n"
        f"BEGIN {_sqlite_remove('OLD')} END",
    ]


def _pg_delta(*, tables: list[tuple[str, int]]) -> str:
    """One grouped upsert per tally, adding each transition table's live rows with its sign."""
    statements = []
    for t in TALLIES:
        columns, groups = ", ".join(t.key), ", ".join(str(i) for i in range(1, len(t.key) + 1))
        counted = [t.counts[0], t.counts[1], *t.extra]
        filters = ["", f" FILTER (WHERE {VISIT['flagged']})", *(f" FILTER (WHERE {far_sql()})" for _ in t.extra)]
        deltas = [f"d{i}" for i in range(len(counted))]
        delta = " UNION ALL ".join(
            f"SELECT {', '.join(t.values(vendor='postgresql'))}, "
            + ", ".join(f"{sign} * count(*){where}" for where in filters)
            + f" FROM {table} WHERE {VISIT['deleted_at']} IS NULL GROUP BY {groups}"
            for table, sign in tables
        )
        statements.append(
            f"INSERT INTO {t.table} ({columns}, {', '.join(counted)}) "
            f"SELECT {columns}, {', '.join(f'sum({d})' for d in deltas)} "
            f"FROM ({delta}) AS delta ({columns}, {', '.join(deltas)}) GROUP BY {groups} "
            f"HAVING {' OR '.join(f'sum({d}) <> 0' for d in deltas)} "
            f"ON CONFLICT ({columns}) DO UPDATE SET "
            + ", ".join(f"{c} = {t.table}.{c} + EXCLUDED.{c}" for c in counted)
            + ";"
        )
    return "\n".join(statements)


def postgres_triggers() -> list[str]:
    return triggers.statement_triggers(
        prefix="visits_tally", table=VISIT_TABLE, body=lambda tables: _pg_delta(tables=tables)
    )


def _trigger_statements(vendor: str) -> list[str]:
    return postgres_triggers() if vendor == "postgresql" else sqlite_triggers()


def triggers_drop(*, connection=default_connection) -> None:
    triggers.trigger_set_drop(connection=connection, trigger_set=TRIGGER_SET)


def triggers_install(*, connection=default_connection) -> None:
    """(Re)create the triggers; idempotent."""
    triggers.trigger_set_install(connection=connection, trigger_set=TRIGGER_SET)


def triggers_installed(*, connection=default_connection) -> set[str]:
    """The set's triggers in the database (not the other sets' on the same table)."""
    on_table = triggers.triggers_on(connection=connection, table=TRIGGER_SET.table)
    return on_table & set(TRIGGER_SET.names(connection.vendor))


# --- Many visits flagged at once ----------------------------------------------------------

# From this many visits, flagged_in_bulk moves the tallies in grouped statements (SQLite).
BULK_FROM = 10_000
_WAS, _MOVED = "tally_flagged_was", "tally_flagged_moved"  # temporary tables of flagged_in_bulk
_KEYED = ("local_day", "rep", "outcome", "resource_type", "verification_status")  # what the tally keys read


def _sqlite_bulk_sql() -> tuple[list[str], str, list[str]]:
    """flagged_in_bulk's statements: the temporary tables; the visits whose flagged moved, with
    the columns the tally keys are made of (looked up from the snapshot, which SQLite's planner
    otherwise turns into a scan of every visit); each tally moved by their sum."""
    keyed = ", ".join(VISIT[name] for name in _KEYED)
    tables = [
        # was: the visit's flagged; then its key in the review tally (review_tally.bulk_delta_sql)
        f"CREATE TEMP TABLE IF NOT EXISTS {_WAS} (id INTEGER PRIMARY KEY, was INTEGER NOT NULL, "
        + ", ".join(f"{key} NOT NULL" for key in review_tally.KEY)
        + ")",
        f"CREATE TEMP TABLE IF NOT EXISTS {_MOVED} AS SELECT {keyed}, 0 AS moved FROM {VISIT_TABLE} WHERE 0",
    ]
    moved = (
        f"INSERT INTO {_MOVED} SELECT {', '.join(f'v.{VISIT[name]}' for name in _KEYED)}, v.{VISIT['flagged']} - w.was "
        f"FROM {_WAS} w CROSS JOIN {VISIT_TABLE} v ON v.{VISIT['id']} = w.id "
        f"WHERE v.{VISIT['deleted_at']} IS NULL AND v.{VISIT['flagged']} <> w.was"
    )
    deltas = []
    for t in TALLIES:
        visits, flagged = t.counts
        extra = "".join(f", {c}" for c in t.extra)  # written as 0, not left to a column default
        deltas.append(
            f"INSERT INTO {t.table} ({', '.join(t.key)}, {visits}, {flagged}{extra}) "
            f"SELECT {', '.join(t.values(vendor='sqlite', row='m'))}, 0, sum(m.moved){', 0' * len(t.extra)} "
            f"FROM {_MOVED} m WHERE 1 "
            f"GROUP BY {', '.join(str(i) for i in range(1, len(t.key) + 1))} HAVING sum(m.moved) <> 0 "
            f"ON CONFLICT ({', '.join(t.key)}) DO UPDATE SET {flagged} = {t.table}.{flagged} + excluded.{flagged}"
        )
    deltas.append(review_tally.bulk_delta_sql(snapshot=_WAS))
    return tables, moved, deltas


@contextlib.contextmanager
def flagged_in_bulk(*, visit_ids: Collection[int], connection=default_connection) -> Iterator[None]:
    """Around a write of these visits' `flagged`, `flag_rules`, `risk` and `risk_tier`, and of
    nothing else the tallies read, inside a transaction: on SQLite, from BULK_FROM visits, the
    row triggers (the tallies' and the review tally's) are dropped for the write, each tally's
    flagged counts are then moved by one grouped statement, and the review tally by another,
    from the visits' keys in it before (snapshot) and after.

    Row by row, the three tallies' triggers cost about 30 us a visit: 9 of the 20 seconds of a
    first flags_rebuild at a million visits, which flags 300,000. PostgreSQL's statement
    triggers group their work already; there, as for fewer visits, this does nothing.
    """
    if connection.vendor != "sqlite" or len(visit_ids) < BULK_FROM:
        yield
        return
    assert connection.in_atomic_block, "the triggers come back at the end: only inside a transaction"
    tables, moved, deltas = _sqlite_bulk_sql()
    ids = sorted(visit_ids)
    with connection.cursor() as cursor:
        for statement in tables:
            cursor.execute(statement)
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            cursor.execute(
                f"INSERT INTO {_WAS} (id, was, {', '.join(review_tally.KEY)}) "
                f"SELECT {VISIT['id']}, {VISIT['flagged']}, {', '.join(review_tally.values())} FROM {VISIT_TABLE} "
                f"WHERE {VISIT['id']} IN ({', '.join(['%s'] * len(chunk))}) AND {VISIT['deleted_at']} IS NULL",
                chunk,
            )
    triggers_drop(connection=connection)
    review_tally.triggers_drop(connection=connection)
    try:
        yield
    finally:  # the tallies follow whatever was written
        with connection.cursor() as cursor:
            cursor.execute(moved)
            for statement in deltas:
                cursor.execute(statement)
            cursor.execute(f"DELETE FROM {_WAS}")
            cursor.execute(f"DELETE FROM {_MOVED}")
        triggers_install(connection=connection)
        review_tally.triggers_install(connection=connection)


# --- Rebuilding ----------------------------------------------------------------------------


def local_days_fill(*, connection=default_connection, zone_name: str) -> int:
    """Set every visit's local_day for `zone_name`; returns rows changed."""
    table, day, at, key = VISIT_TABLE, VISIT["local_day"], VISIT["visited_at"], VISIT["id"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"UPDATE {table} SET {day} = ({at} AT TIME ZONE %s)::date", [zone_name])
            return cursor.rowcount
        if zone_name == "UTC":  # SQLite keeps visited_at as UTC text: its date is the day
            cursor.execute(f"UPDATE {table} SET {day} = date({at})")
            return cursor.rowcount
        # SQLite has no time zone data: compute in Python, a chunk at a time.
        zone = zone_get(zone_name)
        cursor.execute(f"SELECT {key}, {at} FROM {table}")
        changed = 0
        while chunk := cursor.fetchmany(10_000):
            days = []
            for visit_id, visited_at in chunk:
                moment = visited_at if isinstance(visited_at, datetime) else datetime.fromisoformat(visited_at)
                days.append((moment.replace(tzinfo=UTC).astimezone(zone).date().isoformat(), visit_id))
            with connection.cursor() as writer:
                writer.executemany(f"UPDATE {table} SET {day} = %s WHERE {key} = %s", days)
            changed += len(days)
        return changed


def tallies_rebuild(*, connection=default_connection, days: bool = True) -> None:
    """Re-derive every local day for DISPLAY_TIME_ZONE (unless not `days`: an archive's import, of
    days made in this same zone, skips rewriting every visit) and rebuild the four tallies, the
    distance tallies, the review tally and the map tally from the visits, the far counts by today's DISTANCE_FAR_KM."""
    zone_name = settings.DISPLAY_TIME_ZONE
    vendor = "postgresql" if connection.vendor == "postgresql" else "sqlite"
    with transaction.atomic(using=connection.alias):
        triggers_drop(connection=connection)  # the tallies are rebuilt below, not row by row
        # nor the review tally's statement triggers over every visit's new local day (PostgreSQL)
        review_tally.triggers_drop(connection=connection)
        map_tally.triggers_drop(connection=connection)
        if days:
            local_days_fill(connection=connection, zone_name=zone_name)
        with connection.cursor() as cursor:
            for t in TALLIES:
                cursor.execute(f"DELETE FROM {t.table}")
                cursor.execute(_rebuild_sql(t, vendor=vendor))
            cursor.execute(f"DELETE FROM {STATE_TABLE}")
            cursor.execute(
                f"INSERT INTO {STATE_TABLE} ({STATE_ZONE}, {STATE_FAR}, {STATE_REBUILT}) VALUES (%s, %s, %s)",
                [zone_name, float(settings.DISTANCE_FAR_KM), connection.ops.adapt_datetimefield_value(timezone.now())],
            )
        distance_tally.distance_tally_rebuild(connection=connection)
        review_tally.review_tally_rebuild(connection=connection)
        map_tally.map_tally_rebuild(connection=connection)
        triggers_install(connection=connection)


def tallies_state(*, connection=default_connection) -> tuple[str | None, float | None]:
    """(time zone, DISTANCE_FAR_KM) the tallies were built with; (None, None) before any build."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {STATE_ZONE}, {STATE_FAR} FROM {STATE_TABLE}")
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (None, None)


def tallies_time_zone(*, connection=default_connection) -> str | None:
    return tallies_state(connection=connection)[0]


def tallies_current(*, connection=default_connection) -> bool:
    """True when the tallies and local days are those of today's DISPLAY_TIME_ZONE and their far
    counts those of today's DISTANCE_FAR_KM."""
    return tallies_state(connection=connection) == (settings.DISPLAY_TIME_ZONE, float(settings.DISTANCE_FAR_KM))


def tallies_ensure(*, connection=default_connection) -> None:
    """After `migrate` (TRIGGER_SET.after_migrate, once the triggers are back): the tallies
    rebuilt if the time zone or DISTANCE_FAR_KM changed; else the review tally and the map tally
    built if they never were (migrations 0020 and 0023 add them empty)."""
    if not tallies_current(connection=connection):
        tallies_rebuild(connection=connection)
        return
    if review_tally.review_tally_unbuilt(connection=connection):
        with transaction.atomic(using=connection.alias):
            review_tally.review_tally_rebuild(connection=connection)
    if map_tally.map_tally_unbuilt(connection=connection):
        with transaction.atomic(using=connection.alias):
            map_tally.map_tally_rebuild(connection=connection)


TRIGGER_SET = triggers.TriggerSet(
    label="tally",
    table=VISIT_TABLE,
    names=triggers.tally_trigger_names("visits_tally"),
    statements=_trigger_statements,
    # The rebuild makes the distance tallies and the review tally too.
    needs=(
        *(t.table for t in TALLIES),
        STATE_TABLE,
        *(t.table for t in distance_tally.BIN_TALLIES),
        review_tally.TABLE,
        map_tally.TABLE,
    ),
    after_migrate=tallies_ensure,
)

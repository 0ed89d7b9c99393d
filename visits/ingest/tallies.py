"""Visit tallies: counts per year, month and week that the reports read instead of every visit.

Database triggers on the visits table keep `MonthTally`, `YearTally` and `WeekTally` equal to a count of the
live visits, in the transaction of whatever wrote them (ingestion, the admin, a bench loader).
SQLite gets row triggers; PostgreSQL gets statement triggers that apply one grouped delta per
statement from its transition tables. Both are (re)installed after every `migrate`: SQLite
drops a table's triggers when a migration rebuilds the table.

The tallies are keyed by `Visit.local_day`, the day in DISPLAY_TIME_ZONE. When that setting
changes, `tallies_rebuild()` re-derives the days and the tallies (`manage.py migrate` and
`manage.py tallies_rebuild` run it); until then `tallies_current()` is false and the reports
count the visits directly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection as default_connection
from django.db import transaction
from django.utils import timezone

from visits import triggers

TRIGGER_NAMES = ("visits_tally_insert", "visits_tally_update_old", "visits_tally_update_new", "visits_tally_delete")


@functools.lru_cache(maxsize=8)
def zone_get(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_day(*, visited_at: datetime, zone_name: str) -> date:
    """The calendar day of an aware datetime in the named zone."""
    if zone_name == "UTC" and visited_at.tzinfo is UTC:
        return visited_at.date()
    return visited_at.astimezone(zone_get(zone_name)).date()


# --- Triggers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    table: str
    key: tuple[str, ...]  # the period column first
    period: dict[str, str]  # vendor -> SQL for the period's first day, from "{day}"
    dimensions: tuple[str, ...]  # SQL for the other key columns, from "{row}" ("" for a bare column)

    def values(self, *, vendor: str, row: str = "") -> list[str]:
        prefix = f"{row}." if row else ""
        period = self.period[vendor].format(day=f"{prefix}local_day")
        return [period, *(d.format(row=prefix) for d in self.dimensions)]


_STATUS_DIMENSIONS = ("{row}rep_id", "coalesce({row}outcome_id, 0)", "{row}resource_type", "{row}verification_status")
TALLIES = (
    Tally(
        "visits_monthtally", ("month", "rep_id", "outcome_id", "resource_type", "verification_status"),
        {"sqlite": "strftime('%Y-%m-01', {day})", "postgresql": "date_trunc('month', {day})::date"}, _STATUS_DIMENSIONS,
    ),
    Tally(
        "visits_yeartally", ("year", "rep_id", "outcome_id", "resource_type", "verification_status"),
        {"sqlite": "strftime('%Y-01-01', {day})", "postgresql": "date_trunc('year', {day})::date"}, _STATUS_DIMENSIONS,
    ),
    # 'weekday 1' moves forward to a Monday: from six days earlier, that is the week's Monday.
    Tally(
        "visits_weektally", ("week", "rep_id", "verification_status"),
        {"sqlite": "date({day}, '-6 days', 'weekday 1')", "postgresql": "date_trunc('week', {day})::date"},
        ("{row}rep_id", "{row}verification_status"),
    ),
)  # fmt: skip


def _sqlite_add(row: str) -> str:
    return " ".join(
        f"INSERT INTO {t.table} ({', '.join(t.key)}, visits, flagged) "
        f"VALUES ({', '.join(t.values(vendor='sqlite', row=row))}, 1, {row}.flagged) "
        f"ON CONFLICT ({', '.join(t.key)}) DO UPDATE SET visits = visits + 1, flagged = flagged + excluded.flagged;"
        for t in TALLIES
    )


def _sqlite_remove(row: str) -> str:
    return " ".join(
        f"UPDATE {t.table} SET visits = visits - 1, flagged = flagged - {row}.flagged WHERE "
        + " AND ".join(f"{k} = {v}" for k, v in zip(t.key, t.values(vendor="sqlite", row=row), strict=True))
        + ";"
        for t in TALLIES
    )


# A tallied column changed, or the visit was deleted or restored.
_SQLITE_MOVED = " OR ".join(
    f"NEW.{c} IS NOT OLD.{c}"
    for c in ("local_day", "rep_id", "outcome_id", "resource_type", "verification_status", "flagged")
)


def sqlite_triggers() -> list[str]:
    return [
        f"CREATE TRIGGER visits_tally_insert AFTER INSERT ON visits_visit WHEN NEW.deleted_at IS NULL\n"
        f"BEGIN {_sqlite_add('NEW')} END",
        f"CREATE TRIGGER visits_tally_update_old AFTER UPDATE ON visits_visit\n"
        f"WHEN OLD.deleted_at IS NULL AND (NEW.deleted_at IS NOT NULL OR {_SQLITE_MOVED})\n"
        f"BEGIN {_sqlite_remove('OLD')} END",
        f"CREATE TRIGGER visits_tally_update_new AFTER UPDATE ON visits_visit\n"
        f"WHEN NEW.deleted_at IS NULL AND (OLD.deleted_at IS NOT NULL OR {_SQLITE_MOVED})\n"
        f"BEGIN {_sqlite_add('NEW')} END",
        f"CREATE TRIGGER visits_tally_delete AFTER DELETE ON visits_visit WHEN OLD.deleted_at IS NULL\n"
        f"BEGIN {_sqlite_remove('OLD')} END",
    ]


def _pg_delta(*, tables: list[tuple[str, int]]) -> str:
    """One grouped upsert per tally, adding each transition table's live rows with its sign."""
    statements = []
    for t in TALLIES:
        columns, groups = ", ".join(t.key), ", ".join(str(i) for i in range(1, len(t.key) + 1))
        delta = " UNION ALL ".join(
            f"SELECT {', '.join(t.values(vendor='postgresql'))}, {sign} * count(*), "
            f"{sign} * count(*) FILTER (WHERE flagged) FROM {table} WHERE deleted_at IS NULL GROUP BY {groups}"
            for table, sign in tables
        )
        statements.append(
            f"INSERT INTO {t.table} ({columns}, visits, flagged) SELECT {columns}, sum(n), sum(f) "
            f"FROM ({delta}) AS delta ({columns}, n, f) GROUP BY {groups} HAVING sum(n) <> 0 OR sum(f) <> 0 "
            f"ON CONFLICT ({columns}) DO UPDATE SET visits = {t.table}.visits + EXCLUDED.visits, "
            f"flagged = {t.table}.flagged + EXCLUDED.flagged;"
        )
    return "\n".join(statements)


def postgres_triggers() -> list[str]:
    events = {
        "visits_tally_insert": ("INSERT", "REFERENCING NEW TABLE AS new_rows", [("new_rows", 1)]),
        "visits_tally_update_new": (
            "UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", [("old_rows", -1), ("new_rows", 1)]
        ),
        "visits_tally_delete": ("DELETE", "REFERENCING OLD TABLE AS old_rows", [("old_rows", -1)]),
    }  # fmt: skip
    statements = []
    for name, (event, referencing, tables) in events.items():
        statements += [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n{_pg_delta(tables=tables)}\nRETURN NULL;\nEND $$",
            f"CREATE TRIGGER {name} AFTER {event} ON visits_visit {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
        ]
    return statements


def triggers_drop(*, connection=default_connection) -> None:
    triggers.triggers_drop(connection=connection, table="visits_visit", names=TRIGGER_NAMES)


def triggers_install(*, connection=default_connection) -> None:
    """(Re)create the triggers; idempotent."""
    statements = postgres_triggers() if connection.vendor == "postgresql" else sqlite_triggers()
    triggers.triggers_replace(connection=connection, table="visits_visit", names=TRIGGER_NAMES, statements=statements)


def triggers_installed(*, connection=default_connection) -> set[str]:
    return triggers.triggers_on(connection=connection, table="visits_visit")


# --- Rebuilding ----------------------------------------------------------------------------


def local_days_fill(*, connection=default_connection, zone_name: str, only_missing: bool = False) -> int:
    """Set every visit's local_day (or only the missing ones) for `zone_name`; returns rows changed."""
    where = " WHERE local_day IS NULL" if only_missing else ""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"UPDATE visits_visit SET local_day = (visited_at AT TIME ZONE %s)::date{where}", [zone_name]
            )
            return cursor.rowcount
        if zone_name == "UTC":  # SQLite keeps visited_at as UTC text: its date is the day
            cursor.execute(f"UPDATE visits_visit SET local_day = date(visited_at){where}")
            return cursor.rowcount
        # SQLite has no time zone data: compute in Python, a chunk at a time.
        zone = zone_get(zone_name)
        cursor.execute(f"SELECT id, visited_at FROM visits_visit{where}")
        changed = 0
        while chunk := cursor.fetchmany(10_000):
            days = []
            for visit_id, visited_at in chunk:
                moment = visited_at if isinstance(visited_at, datetime) else datetime.fromisoformat(visited_at)
                days.append((moment.replace(tzinfo=UTC).astimezone(zone).date().isoformat(), visit_id))
            with connection.cursor() as writer:
                writer.executemany("UPDATE visits_visit SET local_day = %s WHERE id = %s", days)
            changed += len(days)
        return changed


def tallies_rebuild(*, connection=default_connection) -> None:
    """Re-derive every local day for DISPLAY_TIME_ZONE and rebuild the three tallies from the visits."""
    zone_name = settings.DISPLAY_TIME_ZONE
    vendor = "postgresql" if connection.vendor == "postgresql" else "sqlite"
    with transaction.atomic(using=connection.alias):
        triggers_drop(connection=connection)  # the tallies are rebuilt below, not row by row
        local_days_fill(connection=connection, zone_name=zone_name)
        with connection.cursor() as cursor:
            for t in TALLIES:
                cursor.execute(f"DELETE FROM {t.table}")
                cursor.execute(
                    f"INSERT INTO {t.table} ({', '.join(t.key)}, visits, flagged) "
                    f"SELECT {', '.join(t.values(vendor=vendor))}, count(*), "
                    "sum(CASE WHEN flagged THEN 1 ELSE 0 END) FROM visits_visit "
                    f"WHERE deleted_at IS NULL GROUP BY {', '.join(str(i) for i in range(1, len(t.key) + 1))}"
                )
            cursor.execute("DELETE FROM visits_tallystate")
            cursor.execute(
                "INSERT INTO visits_tallystate (time_zone, rebuilt_at) VALUES (%s, %s)",
                [zone_name, connection.ops.adapt_datetimefield_value(timezone.now())],
            )
        triggers_install(connection=connection)


def tallies_time_zone(*, connection=default_connection) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT time_zone FROM visits_tallystate")
        row = cursor.fetchone()
    return row[0] if row else None


def tallies_current() -> bool:
    """True when the tallies and local days are those of today's DISPLAY_TIME_ZONE."""
    return tallies_time_zone() == settings.DISPLAY_TIME_ZONE


def tallies_ensure(*, connection=default_connection) -> None:
    """After `migrate`: triggers in place, and tallies rebuilt if the time zone changed."""
    if tallies_time_zone(connection=connection) != settings.DISPLAY_TIME_ZONE:
        tallies_rebuild(connection=connection)
    else:
        triggers_install(connection=connection)

"""What the archive holds: one CSV file per table, its columns and how each value is written, and
the tables left out because the import rebuilds them. A model of the app that is in neither list
fails tests/test_archive.py until someone says which it is.

Values are written for machines and read back exactly: integers and floats as Python writes them
(a float's shortest exact form), times as ISO 8601 in UTC (`2026-11-20T08:00:00.123456Z`, the
fraction only when there is one), days as `YYYY-MM-DD`, booleans as `true`/`false`, JSON as its
text, a decision's author as the username. An empty cell is NULL in a column that may be null,
and the empty text otherwise. Text is never altered: no formula escaping (the README says so).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from django.contrib.auth.models import User
from django.db import models

from visits.models import (
    AddressMark,
    BackfillPart,
    BackfillRun,
    CoreApiState,
    Customer,
    Decision,
    DeletedVisit,
    Flag,
    Gap,
    GeocodeCache,
    Incident,
    Outcome,
    ReconcileDay,
    RejectedItem,
    Rep,
    SyncState,
    Visit,
)

# Raised whenever a file or a column changes; the import reads only its own.
# 2: visits.csv gained coordinates_removed_at (the retention rule).
SCHEMA_VERSION = 2
FORMAT = "visitsdash archive"
MANIFEST = "manifest.json"

# What a column holds, as the manifest and the README name it.
INTEGER, FLOAT, TEXT, BOOLEAN, TIME, DAY, JSON, USERNAME = (
    "integer", "float", "text", "boolean", "time", "day", "json", "username",
)  # fmt: skip


@dataclass(frozen=True)
class Column:
    name: str  # the CSV header: the database column, or `decided_by` (a username)
    column: str  # the database column
    kind: str
    null: bool


@dataclass(frozen=True)
class ArchiveTable:
    """One model as one CSV file: every field, in the model's order, but those `left_out` (why)."""

    model: type[models.Model]
    file: str
    left_out: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def columns(self) -> tuple[Column, ...]:
        return tuple(column_of(f) for f in self.model._meta.concrete_fields if f.name not in self.left_out)

    @property
    def table(self) -> str:
        return self.model._meta.db_table


def column_of(f: models.Field) -> Column:
    if isinstance(f, models.ForeignKey):
        if f.remote_field.model is User:
            return Column(f.name, f.column, USERNAME, f.null)
        target = f.target_field
        assert isinstance(target, (models.BigIntegerField, models.IntegerField)), f"{f}: a key of integers"
        return Column(f.column, f.column, INTEGER, f.null)
    # DateTimeField before its parent DateField; a BigIntegerField is an IntegerField.
    kinds = (
        (models.BooleanField, BOOLEAN), (models.DateTimeField, TIME), (models.DateField, DAY),
        (models.JSONField, JSON), (models.FloatField, FLOAT), (models.IntegerField, INTEGER),
        (models.AutoField, INTEGER), (models.BigAutoField, INTEGER), (models.TextField, TEXT),
        (models.CharField, TEXT),
    )  # fmt: skip
    for field_type, kind in kinds:
        if isinstance(f, field_type):
            assert f.column, f"{f} has no column"
            return Column(f.column, f.column, kind, f.null)
    raise TypeError(f"{f.model.__name__}.{f.name}: the archive does not know how to write a {type(f).__name__}")


# In the order the import writes them: a table after those its keys point to.
TABLES: tuple[ArchiveTable, ...] = (
    ArchiveTable(Rep, "reps.csv"),
    ArchiveTable(Outcome, "outcomes.csv"),
    ArchiveTable(Visit, "visits.csv"),
    ArchiveTable(Flag, "flags.csv"),
    ArchiveTable(Decision, "decisions.csv"),
    ArchiveTable(DeletedVisit, "deleted_visits.csv"),
    ArchiveTable(Gap, "gaps.csv"),
    ArchiveTable(Incident, "incidents.csv"),
    ArchiveTable(RejectedItem, "rejected_items.csv"),
    ArchiveTable(
        SyncState,
        "sync_states.csv",
        left_out={
            "lock_owner": "the lease of a sync running while the export ran, not data; a new install starts unlocked",
            "lock_expires_at": "the same lease's end",
        },
    ),
    ArchiveTable(CoreApiState, "core_api_states.csv"),
    ArchiveTable(
        BackfillRun,
        "backfill_runs.csv",
        left_out={
            "lock_owner": "the lease of a backfill running while the export ran; a new install starts unlocked",
            "lock_expires_at": "the same lease's end",
        },
    ),
    ArchiveTable(BackfillPart, "backfill_parts.csv"),
    ArchiveTable(ReconcileDay, "reconcile_days.csv"),
    ArchiveTable(Customer, "customers.csv"),
    ArchiveTable(AddressMark, "address_marks.csv"),
    ArchiveTable(GeocodeCache, "geocode_cache.csv"),
)

# The app's models that are not archived, by label, and why. The import rebuilds the first ones.
NOT_ARCHIVED: dict[str, str] = {
    "visits.MonthTally": "counts of the live visits by month: rebuilt from the visits by the import (tallies_rebuild)",
    "visits.YearTally": "counts of the live visits by year: rebuilt from the visits by the import",
    "visits.AllTimeTally": "counts of the live visits of all time: rebuilt from the visits by the import",
    "visits.WeekTally": "counts of the live visits by week: rebuilt from the visits by the import",
    "visits.DistanceTally": "too-far visits by month and distance bin: rebuilt from the visits by the import",
    "visits.RepDistanceTally": "too-far visits by rep and distance bin: rebuilt from the visits by the import",
    "visits.ReviewTally": "flagged live visits by rep, rules, tier and decision: rebuilt from the visits by the import",
    "visits.OutcomeDistanceTally": "too-far visits by outcome and distance bin: rebuilt from the visits by the import",
    "visits.MapCellTally": "located live visits by map cell, month, rep and status: rebuilt by the import",
    "visits.TallyState": "the time zone and far distance the tallies were built with: written by the import's rebuild",
    "visits.FlagWindow": "work queued for the next flag refresh; the import checks the flags against the rules",
    "visits.DirtyRep": "reps queued for the next flag refresh; the import checks the flags against the rules",
    "visits.DistanceState": "where the distance refresh resumes; without it, the first one measures every visit",
    "visits.SellLink": "which account of this installation is which Sell user: accounts are not archived; "
    "the import's installation links its own accounts by e-mail again",
    "visits.AccountSettings": "an account's own mail choices: accounts are not archived",
    "visits.MailSent": "the mails this installation sent its accounts: not Sell's data, and accounts are not archived",
    "visits.RateAlert": "which too-far rate rises were mailed: this installation's bookkeeping, not Sell's data",
    "visits.AccessLogEntry": "who looked at what on this installation (access_log.csv, purged after ACCESS_LOG_DAYS): "
    "an import starts a new log",
}


def columns_described(table: ArchiveTable) -> list[dict]:
    """A table's columns as the manifest lists them."""
    return [{"name": c.name, "type": c.kind, "null": c.null} for c in table.columns]


# --- SQL ------------------------------------------------------------------------------------


def select_sql(table: ArchiveTable, *, vendor: str, quote) -> str:
    """The SELECT that reads `table` as its CSV cells (cells_sql), in primary key order.
    PostgreSQL's runs inside COPY ... CSV, which writes the whole file."""
    cells = cells_sql(table, vendor=vendor, quote=quote)
    return f"SELECT {', '.join(cells)} FROM {quote(table.table)} t ORDER BY {order_sql(table, quote=quote)}"


def cells_sql(table: ArchiveTable, *, vendor: str, quote) -> list[str]:
    """Each column of `table` as the SQL of its cell: the database writes times, days and booleans
    as the archive's text (faster than Python, and the same text on both vendors)."""
    cells = []
    for c in table.columns:
        name = f"t.{quote(c.column)}"
        if c.kind == TIME:
            # SQLite keeps naive UTC text, with a fraction only when there is one; PostgreSQL's text is made so.
            pg_text = f"to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
            sqlite_text = f"replace({name}, ' ', 'T')"
            cells.append(f"{sqlite_text} || 'Z'" if vendor == "sqlite" else f"replace({pg_text}, '.000000', '') || 'Z'")
        elif c.kind == DAY:
            cells.append(f"CAST({name} AS TEXT)" if vendor == "sqlite" else f"to_char({name}, 'YYYY-MM-DD')")
        elif c.kind == BOOLEAN:
            cells.append(f"CASE WHEN {name} THEN 'true' ELSE 'false' END")
        elif c.kind == JSON:
            cells.append(name if vendor == "sqlite" else f"{name}::text")
        elif c.kind == USERNAME:
            users, user_id = quote(User._meta.db_table), quote(User._meta.pk.column)
            username = quote(User._meta.get_field("username").column)
            cells.append(f"(SELECT u.{username} FROM {users} u WHERE u.{user_id} = {name})")
        else:
            cells.append(name)
    return cells


def order_sql(table: ArchiveTable, *, quote) -> str:
    return ", ".join(f"t.{quote(f.column)}" for f in table.model._meta.pk_fields)


def sqlite_value_sql(c: Column) -> str:
    """The placeholder of column `c` in the import's INSERT on SQLite, turning the CSV text into
    what Django keeps there (SQLite's column affinity makes numbers of the digits)."""
    if c.kind in (FLOAT, USERNAME):
        return "%s"  # converted in Python (load.py): SQLite's own reading of a float may differ by a bit
    value = "NULLIF(%s, '')" if c.null else "%s"
    if c.kind == TIME:
        return f"replace(replace({value}, 'T', ' '), 'Z', '')"
    if c.kind == BOOLEAN:
        return f"CASE {value} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END"
    return value


def sqlite_line_sql(table: ArchiveTable, *, quote) -> tuple[str, tuple[int, ...]]:
    """SQLite: the SELECT giving each row as its CSV line in pieces, and where the floats are among
    them. Each run of columns between floats is one text that SQLite makes (every text quoted,
    NULL as nothing): a third less of the export's time than Python's csv writing each value.
    Each float comes as the value, for Python's repr: SQLite's own text of a float is not always
    exact (3.40's printf('%!.17g') read back otherwise for 869 of 900,000 random doubles)."""
    cells = cells_sql(table, vendor="sqlite", quote=quote)
    pieces: list[str] = []
    floats: list[int] = []
    run: list[str] = []

    def text(run: list[str]) -> str:
        # A run of one integer alone (a Customer's learned_visits, between floats) would come as an
        # int: '' || makes it text, as the concatenation of a longer run does.
        return " || ',' || ".join(run) if len(run) > 1 else f"'' || {run[0]}"

    for c, cell in zip(table.columns, cells, strict=True):
        if c.kind == FLOAT:
            if run:
                pieces.append(text(run))
                run = []
            floats.append(len(pieces))
            pieces.append(cell)
            continue
        if c.kind in (TEXT, JSON, USERNAME):
            cell = "'\"' || replace(" + cell + ", '\"', '\"\"') || '\"'"
        run.append(f"coalesce({cell}, '')")
    if run:
        pieces.append(text(run))
    return f"SELECT {', '.join(pieces)} FROM {quote(table.table)} t ORDER BY {order_sql(table, quote=quote)}", tuple(
        floats
    )

"""Every database trigger the app relies on, declared once as trigger sets (MODULES names where),
installed by name on SQLite and PostgreSQL alike: after every `migrate` (apps.py), as SQLite drops a
table's triggers whenever a migration rebuilds the table, and looked for by the check visits.E001."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module

from django.db import transaction

# The modules that declare a trigger set, each as its TRIGGER_SET: the tallies' triggers on the
# visits, the distance tally's, the review tally's, the map tally's, and the decisions', the
# address marks' and the access log's that keep them append-only. A new set is added here, nowhere else.
MODULES = (
    "visits.ingest.tallies",
    "visits.ingest.distance_tally",
    "visits.ingest.review_tally",
    "visits.ingest.map_tally",
    "visits.review.immutable",
    "visits.review.addresses",
    "visits.security.access_log",
)


@dataclass(frozen=True)
class TriggerSet:
    """Triggers on one table that the app relies on, and how to create them on each vendor."""

    label: str  # what they are for, in messages ("tally", "decision")
    table: str
    names: Callable[[str], list[str]]  # vendor -> the triggers' names
    statements: Callable[[str], list[str]]  # vendor -> the SQL creating them (and their functions)
    needs: tuple[str, ...] = ()  # other tables the triggers use: until all exist, the set is not due
    after_migrate: Callable[..., None] | None = None  # runs after the post_migrate install, with connection=

    def tables(self) -> tuple[str, ...]:
        return (self.table, *self.needs)


def tally_trigger_names(prefix: str) -> Callable[[str], list[str]]:
    """A tally's trigger names by vendor (a TriggerSet's `names`): on SQLite a row trigger for each
    of `<prefix>_insert`, `_update_old`, `_update_new` and `_delete`; on PostgreSQL the three of
    statement_triggers (its UPDATE trigger sees the old and the new rows at once)."""
    events = ("insert", "update_old", "update_new", "delete")

    def names(vendor: str) -> list[str]:
        return [f"{prefix}_{e}" for e in events if not (vendor == "postgresql" and e == "update_old")]

    return names


def statement_triggers(*, prefix: str, table: str, body: Callable[[list[tuple[str, int]]], str]) -> list[str]:
    """PostgreSQL's statement triggers of a tally on `table`: `<prefix>_insert`, `_update_new` and
    `_delete`, each a function running `body(tables)`, the SQL applying one grouped delta from the
    statement's transition tables ((name, sign): +1 for new rows, -1 for old ones)."""
    events = {
        f"{prefix}_insert": ("INSERT", "REFERENCING NEW TABLE AS new_rows", [("new_rows", 1)]),
        f"{prefix}_update_new": (
            "UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", [("old_rows", -1), ("new_rows", 1)]
        ),
        f"{prefix}_delete": ("DELETE", "REFERENCING OLD TABLE AS old_rows", [("old_rows", -1)]),
    }  # fmt: skip
    statements = []
    for name, (event, referencing, tables) in events.items():
        statements += [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n{body(tables)}\nRETURN NULL;\nEND $$",
            f"CREATE TRIGGER {name} AFTER {event} ON {table} {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
        ]
    return statements


def trigger_sets() -> list[TriggerSet]:
    """Every trigger set, in MODULES' order (the order post_migrate installs them in)."""
    return [import_module(module).TRIGGER_SET for module in MODULES]


def triggers_drop(*, connection, table: str, names: Iterable[str]) -> None:
    suffix = f" ON {table}" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}{suffix}")


def triggers_replace(*, connection, table: str, names: Iterable[str], statements: list[str]) -> None:
    """Drop the named triggers and run `statements` (which create them), all or nothing."""
    with transaction.atomic(using=connection.alias):
        triggers_drop(connection=connection, table=table, names=names)
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


def triggers_on(*, connection, table: str) -> set[str]:
    """The names of the triggers on `table` (not PostgreSQL's internal ones)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", [table])
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table])
        return {row[0] for row in cursor.fetchall()}


def trigger_set_drop(*, connection, trigger_set: TriggerSet) -> None:
    triggers_drop(connection=connection, table=trigger_set.table, names=trigger_set.names(connection.vendor))


def trigger_set_install(*, connection, trigger_set: TriggerSet) -> None:
    """(Re)create the set's triggers; idempotent."""
    triggers_replace(
        connection=connection,
        table=trigger_set.table,
        names=trigger_set.names(connection.vendor),
        statements=trigger_set.statements(connection.vendor),
    )


def trigger_set_due(*, connection, trigger_set: TriggerSet, tables: set[str] | None = None) -> bool:
    """True when the database holds every table the set uses (it is migrated far enough for it)."""
    tables = set(connection.introspection.table_names()) if tables is None else tables
    return set(trigger_set.tables()) <= tables


def trigger_sets_install(*, connection) -> None:
    """What post_migrate runs after every `migrate` (and the tests' flush), the same for each set:
    install the sets that are due, then their after_migrate; a set whose tables a backwards
    migration removed loses its triggers, which would fail on the missing tables."""
    tables = set(connection.introspection.table_names())
    for trigger_set in trigger_sets():
        if trigger_set_due(connection=connection, trigger_set=trigger_set, tables=tables):
            trigger_set_install(connection=connection, trigger_set=trigger_set)
            if trigger_set.after_migrate:
                trigger_set.after_migrate(connection=connection)
        elif trigger_set.table in tables:
            trigger_set_drop(connection=connection, trigger_set=trigger_set)


def triggers_missing(*, connection) -> list[tuple[TriggerSet, str]]:
    """Each (set, trigger name) that should be in the database and is not; a set is not looked
    for until its tables exist (a database not yet migrated lacks nothing)."""
    tables = set(connection.introspection.table_names())
    missing = []
    for trigger_set in trigger_sets():
        if not trigger_set_due(connection=connection, trigger_set=trigger_set, tables=tables):
            continue
        present = triggers_on(connection=connection, table=trigger_set.table)
        missing += [(trigger_set, name) for name in trigger_set.names(connection.vendor) if name not in present]
    return missing

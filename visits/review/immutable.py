"""Database triggers that keep reviewers' decisions append-only: any UPDATE, DELETE (and, on
PostgreSQL, TRUNCATE) of visits_decision is refused, whatever code or SQL console tries it.

Installed by migrations 0005 and 0006, then as the trigger set TRIGGER_SET (visits/triggers.py)
again after every `migrate`, as SQLite drops a table's triggers whenever a migration rebuilds the
table (altering `Decision.kind` would); the check visits.E001 names any that is missing.
"""

from __future__ import annotations

from django.db import connection as default_connection

from visits import triggers
from visits.models import Decision

TABLE = Decision._meta.db_table
EDIT_MESSAGE = "decisions are never edited; record a new decision instead"
DELETE_MESSAGE = "decisions are never deleted"
# name -> (event, message); the names are those of the triggers on both databases
TRIGGERS = {
    "visits_decision_immutable": ("UPDATE", EDIT_MESSAGE),
    "visits_decision_undeletable": ("DELETE", DELETE_MESSAGE),
}
PG_TRUNCATE = "visits_decision_untruncatable"


def append_only_statements(
    vendor: str, *, table: str, triggers: dict[str, tuple[str, str]], truncate: tuple[str, str]
) -> list[str]:
    """The SQL creating triggers that refuse each (event, message) of `triggers` on `table`, and,
    on PostgreSQL, TRUNCATE as `truncate` (name, message): for every append-only table."""
    if vendor != "postgresql":
        return [
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} BEGIN SELECT RAISE(ABORT, '{message}'); END"
            for name, (event, message) in triggers.items()
        ]
    statements = []
    for name, (event, message) in {**triggers, truncate[0]: ("TRUNCATE", truncate[1])}.items():
        level = "STATEMENT" if event == "TRUNCATE" else "ROW"
        statements += [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}'; END $$",
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH {level} EXECUTE FUNCTION {name}()",
        ]
    return statements


def names(*, vendor: str) -> list[str]:
    return [*TRIGGERS, PG_TRUNCATE] if vendor == "postgresql" else list(TRIGGERS)


def _statements(vendor: str) -> list[str]:
    return append_only_statements(vendor, table=TABLE, triggers=TRIGGERS, truncate=(PG_TRUNCATE, DELETE_MESSAGE))


TRIGGER_SET = triggers.TriggerSet(
    label="decision", table=TABLE, names=lambda vendor: names(vendor=vendor), statements=_statements
)


def decision_triggers_drop(*, connection=default_connection) -> None:
    """Only for wiping a whole database (the tests' flush); `migrate` puts them back."""
    triggers.trigger_set_drop(connection=connection, trigger_set=TRIGGER_SET)


def decision_triggers_install(*, connection=default_connection) -> None:
    """(Re)create the triggers; idempotent."""
    triggers.trigger_set_install(connection=connection, trigger_set=TRIGGER_SET)


def decision_triggers_installed(*, connection=default_connection) -> set[str]:
    return triggers.triggers_on(connection=connection, table=TABLE)

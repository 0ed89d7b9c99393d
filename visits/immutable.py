"""Database triggers that keep reviewers' decisions append-only: any UPDATE, DELETE (and, on
PostgreSQL, TRUNCATE) of visits_decision is refused, whatever code or SQL console tries it.

Installed by migration 0006 and again after every `migrate` (apps.py), as SQLite drops a
table's triggers whenever a migration rebuilds the table.
"""

from __future__ import annotations

from django.db import connection as default_connection
from django.db import transaction

TABLE = "visits_decision"
EDIT_MESSAGE = "decisions are never edited; record a new decision instead"
DELETE_MESSAGE = "decisions are never deleted"
# name -> (event, message); the names are those of the triggers on both databases
TRIGGERS = {
    "visits_decision_immutable": ("UPDATE", EDIT_MESSAGE),
    "visits_decision_undeletable": ("DELETE", DELETE_MESSAGE),
}
PG_TRUNCATE = "visits_decision_untruncatable"


def _sqlite_statements() -> list[str]:
    return [
        f"CREATE TRIGGER {name} BEFORE {event} ON {TABLE} BEGIN SELECT RAISE(ABORT, '{message}'); END"
        for name, (event, message) in TRIGGERS.items()
    ]


def _postgres_statements() -> list[str]:
    statements = []
    for name, (event, message) in {**TRIGGERS, PG_TRUNCATE: ("TRUNCATE", DELETE_MESSAGE)}.items():
        level = "STATEMENT" if event == "TRUNCATE" else "ROW"
        statements += [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}'; END $$",
            f"CREATE TRIGGER {name} BEFORE {event} ON {TABLE} FOR EACH {level} EXECUTE FUNCTION {name}()",
        ]
    return statements


def names(*, vendor: str) -> list[str]:
    return [*TRIGGERS, PG_TRUNCATE] if vendor == "postgresql" else list(TRIGGERS)


def decision_triggers_drop(*, connection=default_connection) -> None:
    """Only for wiping a whole database (the tests' flush); `migrate` puts them back."""
    suffix = f" ON {TABLE}" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        for name in names(vendor=connection.vendor):
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}{suffix}")


def decision_triggers_install(*, connection=default_connection) -> None:
    """(Re)create the triggers; idempotent."""
    statements = _postgres_statements() if connection.vendor == "postgresql" else _sqlite_statements()
    with transaction.atomic(using=connection.alias):
        decision_triggers_drop(connection=connection)
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


def decision_triggers_installed(*, connection=default_connection) -> set[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SELECT tgname FROM pg_trigger WHERE tgrelid = '{TABLE}'::regclass AND NOT tgisinternal")
        else:
            cursor.execute(f"SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = '{TABLE}'")
        return {row[0] for row in cursor.fetchall()}

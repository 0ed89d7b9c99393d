"""Database triggers by name on one table, on SQLite and PostgreSQL alike: the tallies'
(tallies.py) and the decisions' (immutable.py), each re-installed after every `migrate`."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction


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

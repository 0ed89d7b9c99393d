"""System check visits.E001: every database trigger the app relies on (the trigger sets of
visits/triggers.py) is in the database, so a table rebuilt without its triggers is noticed by
`manage.py check` (and every command that checks first) before the data goes wrong."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from django.core.checks import CheckMessage, Error, Tags, register
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from visits import triggers

# `migrate` is the cure, so its own checks must not refuse to run it (management/commands/migrate.py).
_paused: ContextVar[bool] = ContextVar("triggers_check_paused", default=False)


@contextmanager
def triggers_check_paused() -> Iterator[None]:
    token = _paused.set(True)
    try:
        yield
    finally:
        _paused.reset(token)


def _database_absent(connection) -> bool:
    """A SQLite file that does not exist yet: nothing is migrated, and connecting would create it."""
    if connection.vendor != "sqlite":
        return False
    name = str(connection.settings_dict["NAME"])
    return not connection.creation.is_in_memory_db(name) and not Path(name).exists()


@register(Tags.database)
def triggers_check(app_configs=None, databases=None, **kwargs) -> list[CheckMessage]:
    """visits.E001 for each missing trigger. `check --database X` looks in X; a plain `check`
    (databases None) looks in the default database, and says nothing if that cannot be reached,
    as a plain check never needed a database before. A database not migrated far enough for a
    trigger set (its tables absent) lacks nothing."""
    if _paused.get() or (app_configs is not None and not any(c.name == "visits" for c in app_configs)):
        return []
    errors: list[CheckMessage] = []
    for alias in databases if databases is not None else [DEFAULT_DB_ALIAS]:
        connection = connections[alias]
        if _database_absent(connection):
            continue
        try:
            missing = triggers.triggers_missing(connection=connection)
        except DatabaseError:
            if databases is None:
                continue
            raise
        errors += [
            Error(
                f"The {trigger_set.label} trigger {name} is missing from table {trigger_set.table} "
                f"in database {alias!r}.",
                hint="Run `python manage.py migrate`: it re-installs every trigger the app relies on.",
                obj=trigger_set.table,
                id="visits.E001",
            )
            for trigger_set, name in missing
        ]
    return errors

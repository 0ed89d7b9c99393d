"""The access log: who saw whose location data, when (AccessLogEntry). Views wear `access_logged`,
which writes one entry per page shown, or, for a streamed CSV, one when the stream ends (the rows
handed to the server, also when the client left midway). The log is append-only by the triggers
of TRIGGER_SET; only `access_log_purge` removes entries, once older than ACCESS_LOG_DAYS.

Logged (docs/PRIVACY.md says the same): a visit's page and its map document (`visit`), a rep's page
(`rep`), the map document of the map and rep pages (`map`: the /map/ page itself shows counts, its
positions come in the frame; and each answer of the map's JSON, `/map/clusters.json` and
`/map/points.json`, with its box and filters: a map panned writes an entry a view), every CSV
(`csv`), a rep's data export (`export`); in the admin, the lists and pages of visits and flagged
visits (`visit`: they show positions). Nothing else is logged: the reports, lists and address pages
show figures and no coordinates, and the review queue draws a flagged visit's day without
coordinates or a map, for reviewers, whose decisions keep their own record. Nothing reads the log
but its CSV and admin list, for superusers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta
from functools import wraps
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.db import connection as default_connection
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from visits import triggers
from visits.models import AccessKind, AccessLogEntry, column
from visits.reports.export import time_text
from visits.reports.filters import FilterDateField

PATH_LENGTH = AccessLogEntry._meta.get_field("path").max_length or 2000
OBJECT_ARGUMENTS = {AccessKind.VISIT: "visit_id", AccessKind.REP: "rep_id"}  # the URL's id an entry keeps, by kind


# --- Writing entries -----------------------------------------------------------------------


def access_log_write(
    *, user, kind: str, path: str, filters: str = "", object_id: int | None = None, rows: int | None = None
) -> AccessLogEntry:
    """One entry. `user` is a signed-in account, or None for a command (`path` then names it and
    the entry's username is "(command)")."""
    return AccessLogEntry.objects.create(
        user=user if user is not None and user.pk else None,
        username=user.get_username() if user is not None else "(command)",
        kind=kind,
        path=path[:PATH_LENGTH],
        filters=filters,
        object_id=object_id,
        rows=rows,
    )


class CountedStream:
    """A CSV response's lines (the header, then one line per row: `reports.export.csv_lines`),
    handed on one by one to the server, counting the rows; `done(rows)` runs once, when the lines
    run out or when the response is closed before (the client left: the WSGI server then closes
    the response, which closes this). The count is of the rows handed to the server: when the
    client left midway, the last of them may not have reached it (the log errs on the side of
    what may have been seen)."""

    def __init__(self, lines, *, done: Callable[[int], None]) -> None:
        self._lines = iter(lines)
        self._done = done
        self._handed = 0  # lines handed to the server, the header among them
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            line = next(self._lines)
        except StopIteration:
            self._finish()
            raise
        self._handed += 1
        return line

    def close(self) -> None:
        close = getattr(self._lines, "close", None)
        try:
            if close is not None:
                close()  # the export's database cursor first
        finally:
            self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._done(max(self._handed - 1, 0))  # not the header


def access_log_response(
    request: HttpRequest, response: HttpResponse, *, kind: str, object_id: int | None = None
) -> HttpResponse:
    """`response` as it goes out, its entry written: now for a page, at the end of its stream for a
    streamed one (a CSV), with its row count. Other answers than a 200 (a 400, a 404) write nothing:
    they showed nothing."""
    if response.status_code != 200:
        return response
    entry = {
        "user": request.user, "kind": kind, "path": request.path, "filters": request.META.get("QUERY_STRING", ""),
        "object_id": object_id,
    }  # fmt: skip
    if response.streaming:
        response.streaming_content = CountedStream(
            response.streaming_content, done=lambda rows: access_log_write(**entry, rows=rows)
        )
    else:
        access_log_write(**entry)
    return response


def access_logged(kind: str) -> Callable[[Callable], Callable]:
    """A view's decorator (inside the access rule's): its answer goes out through
    `access_log_response`, with the visit or rep id of the URL. The view carries `access_log_kind`
    (tests/test_access_log.py checks that every CSV does)."""
    object_argument = OBJECT_ARGUMENTS.get(kind, "")

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            response = view(request, *args, **kwargs)
            return access_log_response(request, response, kind=kind, object_id=kwargs.get(object_argument))

        setattr(wrapped, "access_log_kind", kind)  # noqa: B010
        return wrapped

    return decorate


# --- Append-only: the triggers -------------------------------------------------------------

TABLE = AccessLogEntry._meta.db_table
EDIT_MESSAGE = "access log entries are never edited"
DELETE_MESSAGE = "access log entries are removed only by the purge, once older than ACCESS_LOG_DAYS"
IMMUTABLE, UNDELETABLE, UNTRUNCATABLE = (
    "visits_access_log_immutable", "visits_access_log_undeletable", "visits_access_log_untruncatable",
)  # fmt: skip
# Every column but the account's, which Django sets to NULL when the account is deleted (SET_NULL):
# the only change an entry may undergo; the username stays.
KEPT = ["id", "at", "username", "kind", "path", "filters", "object_id", "rows"]


def retention_bound(vendor: str) -> str:
    """SQL for the moment ACCESS_LOG_DAYS ago, by the database's clock: the purge deletes before it,
    the trigger refuses to delete after it, both in the same statement (the same clock reading)."""
    days = int(settings.ACCESS_LOG_DAYS)
    return f"now() - interval '{days} days'" if vendor == "postgresql" else f"datetime('now', '-{days} days')"


def _trigger_statements(vendor: str) -> list[str]:
    """The triggers, with ACCESS_LOG_DAYS as it is when they are installed (after every `migrate`,
    and by the purge before it deletes)."""
    user, at = f'"{column(AccessLogEntry, "user")}"', f'"{column(AccessLogEntry, "at")}"'
    kept = [f'"{column(AccessLogEntry, name)}"' for name in KEPT]
    if vendor != "postgresql":
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in kept)
        return [
            f"CREATE TRIGGER {IMMUTABLE} BEFORE UPDATE ON {TABLE} "
            f"WHEN {changed} OR (NEW.{user} IS NOT NULL AND NEW.{user} IS NOT OLD.{user}) "
            f"BEGIN SELECT RAISE(ABORT, '{EDIT_MESSAGE}'); END",
            f"CREATE TRIGGER {UNDELETABLE} BEFORE DELETE ON {TABLE} WHEN OLD.{at} >= {retention_bound(vendor)} "
            f"BEGIN SELECT RAISE(ABORT, '{DELETE_MESSAGE}'); END",
        ]
    new, old = (", ".join(f"{row}.{c}" for c in kept) for row in ("NEW", "OLD"))
    conditions = {
        IMMUTABLE: ("UPDATE", f"(ROW({new}) IS DISTINCT FROM ROW({old}) OR (NEW.{user} IS NOT NULL "
                              f"AND NEW.{user} IS DISTINCT FROM OLD.{user}))", EDIT_MESSAGE),
        UNDELETABLE: ("DELETE", f"(OLD.{at} >= {retention_bound(vendor)})", DELETE_MESSAGE),
        UNTRUNCATABLE: ("TRUNCATE", "", DELETE_MESSAGE),
    }  # fmt: skip
    statements = []
    for name, (event, when, message) in conditions.items():
        level = "STATEMENT" if event == "TRUNCATE" else "ROW"
        statements += [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}'; END $$",
            f"CREATE TRIGGER {name} BEFORE {event} ON {TABLE} FOR EACH {level} "
            f"{'WHEN ' + when + ' ' if when else ''}EXECUTE FUNCTION {name}()",
        ]
    return statements


def names(*, vendor: str) -> list[str]:
    return [IMMUTABLE, UNDELETABLE, *([UNTRUNCATABLE] if vendor == "postgresql" else [])]


TRIGGER_SET = triggers.TriggerSet(
    label="access log", table=TABLE, names=lambda vendor: names(vendor=vendor), statements=_trigger_statements
)


def access_log_triggers_drop(*, connection=default_connection) -> None:
    """Only for wiping a whole database (the tests' flush); `migrate` puts them back."""
    triggers.trigger_set_drop(connection=connection, trigger_set=TRIGGER_SET)


# --- The purge -----------------------------------------------------------------------------


def access_log_purge(*, connection=default_connection) -> int:
    """Delete the entries older than ACCESS_LOG_DAYS (by the database's clock); how many. The
    triggers are installed again first, in the same transaction, so that their bound follows the
    setting if it changed since the last `migrate`."""
    with transaction.atomic(using=connection.alias):
        triggers.trigger_set_install(connection=connection, trigger_set=TRIGGER_SET)
        with connection.cursor() as cursor:
            at = column(AccessLogEntry, "at")
            cursor.execute(f'DELETE FROM {TABLE} WHERE "{at}" < {retention_bound(connection.vendor)}')
            return cursor.rowcount


# --- The log as CSV, for superusers ---------------------------------------------------------

ACCESS_LOG_COLUMNS = ["at", "username", "user_id", "kind", "path", "filters", "object_id", "rows"]


class AccessLogFilters(forms.Form):
    """The CSV's filters: days (in DISPLAY_TIME_ZONE, both ends included), an account's username,
    a kind of entry."""

    start = FilterDateField()
    end = FilterDateField()
    user = forms.CharField(required=False, max_length=150)
    kind = forms.ChoiceField(required=False, choices=[("", "any"), *AccessKind.choices])

    def clean(self):
        data = super().clean()
        assert data is not None
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("start must not be after end")
        return data

    def problems(self) -> list[str]:
        return [
            f"{'filters' if name == '__all__' else name}: {e}" for name, errors in self.errors.items() for e in errors
        ]


def access_log_rows(*, filters: AccessLogFilters) -> Iterator[list]:
    """The entries the filters pick, oldest first, as ACCESS_LOG_COLUMNS cells (text cells are
    checked for formulas by the CSV writer: usernames and query strings are anyone's)."""
    data, zone = filters.cleaned_data, ZoneInfo(settings.DISPLAY_TIME_ZONE)
    entries = AccessLogEntry.objects.order_by("at", "id")
    if data.get("start"):
        entries = entries.filter(at__gte=datetime.combine(data["start"], time(), zone))
    if data.get("end"):
        entries = entries.filter(at__lt=datetime.combine(data["end"] + timedelta(days=1), time(), zone))
    if data.get("user"):
        entries = entries.filter(username=data["user"])
    if data.get("kind"):
        entries = entries.filter(kind=data["kind"])
    for at, *cells in entries.values_list(*ACCESS_LOG_COLUMNS).iterator(chunk_size=2000):
        yield [time_text(at), *("" if cell is None else cell for cell in cells)]

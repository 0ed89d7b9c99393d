"""Applies Firehose items (one page, or a batch of pages) and the stream's new position in a
single transaction.

Per id, only an event with a higher meta.sequence than the one stored changes anything, so
re-deliveries, stale events and a replay from `tail` are no-ops. An item that cannot be
understood is stored verbatim with the reason and never stops the rest of the page.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone as dj_timezone

from .models import DeletedVisit, Outcome, RejectedItem, Rep, Stream, SyncState, VerificationStatus, Visit

MAX_ID = 2**63 - 1
EVENT_TYPES = ("created", "updated", "deleted")
STATUSES = frozenset(VerificationStatus.values)
VISIT_FIELDS = [
    "rep_id", "resource_type", "resource_id", "visited_at", "created_at", "summary", "outcome_id",
    "latitude", "longitude", "verification_status", "sequence", "event_time", "deleted_at",
]  # fmt: skip


class Rejected(ValueError):
    """An item that cannot be applied; the message is the reason admins read."""


class LockLost(Exception):
    """Another sync took this stream over (our lease ran out): this page must not land."""


@dataclass(slots=True)
class Event:
    id: int
    sequence: int
    event_type: str
    event_time: datetime
    fields: dict | None  # the snapshot's columns; None for a `deleted` event carrying only the id
    outcome_name: str | None = None


@dataclass
class PageResult:
    applied: int = 0
    skipped: int = 0
    rejected: int = 0
    newest_event_time: datetime | None = None


# --- Parsing: raw item -> Event, or Rejected -----------------------------------------------


# Each clean_* function checks the common well-formed case first, in one line: they run
# several times per event and dominated the ingestion profile.


def clean_text(value, *, name: str, max_length: int | None = None, required: bool = False) -> str:
    if type(value) is str and "\x00" not in value and (max_length is None or len(value) <= max_length):
        if not required or value.strip():
            return value
    if value is None:
        if required:
            raise Rejected(f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise Rejected(f"{name} is not text: {value!r:.60}")
    value = value.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    if required and not value.strip():
        raise Rejected(f"{name} is empty")
    if max_length is not None and len(value) > max_length:
        value = value[:max_length]
    return value


def clean_id(value, *, name: str, nullable: bool = False) -> int | None:
    if type(value) is int and 0 < value <= MAX_ID:
        return value
    if value is None:
        if nullable:
            return None
        raise Rejected(f"{name} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise Rejected(f"{name} is not a whole number: {value!r:.60}")
    if not 0 < value <= MAX_ID:
        raise Rejected(f"{name} is out of range: {value}")
    return value


@functools.lru_cache(maxsize=4096)
def utc_parse(value: str) -> datetime | None:
    """ISO 8601 text -> aware UTC datetime; None when it has no time zone. Cached: a page
    repeats times (created_at is the event_time of a `created` event) and replays repeat pages."""
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(timezone.utc) if parsed.tzinfo is not None else None


def clean_time(value, *, name: str) -> datetime:
    if not isinstance(value, str):
        raise Rejected(f"{name} is not a date-time: {value!r:.60}")
    try:
        parsed = utc_parse(value)
    except ValueError:
        raise Rejected(f"{name} is not an ISO 8601 date-time: {value!r:.60}") from None
    if parsed is None:
        raise Rejected(f"{name} has no time zone: {value!r:.60}")
    return parsed


def clean_coordinate(value, *, name: str, limit: float) -> float | None:
    if type(value) is float and -limit <= value <= limit:  # NaN and infinities fail the range
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        raise Rejected(f"{name} is not a number: {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise Rejected(f"{name} is not a number: {value!r:.60}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Rejected(f"{name} is not a number: {value!r:.60}")
    if not -limit <= value <= limit:
        raise Rejected(f"{name} {value} is outside -{limit:g}..{limit:g}")
    return float(value)


def envelope_parse(item) -> tuple[dict, dict, int, str, datetime, int]:
    """The parts every stream shares: data, meta, id, event type, event time, sequence."""
    if not isinstance(item, dict):
        raise Rejected("item is not an object")
    data, meta = item.get("data"), item.get("meta")
    if not isinstance(data, dict):
        raise Rejected("data is not an object")
    if not isinstance(meta, dict):
        raise Rejected("meta is not an object")
    event_type = meta.get("event_type")
    if event_type not in EVENT_TYPES:
        raise Rejected(f"unknown event_type {event_type!r:.60}")
    if "id" not in data:
        raise Rejected("data has no id")
    item_id = clean_id(data["id"], name="data.id")
    sequence = clean_id(meta.get("sequence"), name="meta.sequence")
    event_time = clean_time(meta.get("event_time"), name="meta.event_time")
    return data, meta, item_id, event_type, event_time, sequence


def visit_parse(item) -> Event:
    data, meta, visit_id, event_type, event_time, sequence = envelope_parse(item)
    if event_type == "deleted" and set(data) == {"id"}:
        return Event(visit_id, sequence, event_type, event_time, None)
    location = data.get("sales_rep_location")
    if not isinstance(location, dict):
        raise Rejected("sales_rep_location is not an object")
    status = location.get("verification_status")
    if status not in STATUSES:
        raise Rejected(f"unknown verification_status {status!r:.60}")
    latitude = clean_coordinate(location.get("latitude"), name="latitude", limit=90)
    longitude = clean_coordinate(location.get("longitude"), name="longitude", limit=180)
    if (latitude is None) != (longitude is None):
        raise Rejected("only one of latitude and longitude is set")
    outcome = data.get("outcome")
    outcome_id, outcome_name = None, None
    if outcome is not None:
        if not isinstance(outcome, dict):
            raise Rejected("outcome is not an object")
        outcome_id = clean_id(outcome.get("id"), name="outcome.id")
        outcome_name = clean_text(outcome.get("name"), name="outcome.name", max_length=255)
    resource_type = clean_text(data.get("resource_type"), name="resource_type", required=True)
    if len(resource_type) > 40:
        raise Rejected(f"resource_type is too long: {resource_type!r:.60}")
    fields = {
        "rep_id": clean_id(data.get("creator_id"), name="creator_id"),
        "resource_type": resource_type,
        "resource_id": clean_id(data.get("resource_id"), name="resource_id", nullable=True),
        "visited_at": clean_time(data.get("visited_at"), name="visited_at"),
        "created_at": clean_time(data.get("created_at"), name="created_at"),
        "summary": clean_text(data.get("summary"), name="summary"),
        "outcome_id": outcome_id,
        "latitude": latitude,
        "longitude": longitude,
        "verification_status": status,
    }
    return Event(visit_id, sequence, event_type, event_time, fields, outcome_name)


def user_parse(item) -> Event:
    data, meta, user_id, event_type, event_time, sequence = envelope_parse(item)
    fields = {
        "name": clean_text(data.get("name"), name="name", max_length=255),
        "email": clean_text(data.get("email"), name="email", max_length=255),
        "status": "deleted" if event_type == "deleted" else clean_text(data.get("status"), name="status", max_length=40),
        "role": clean_text(data.get("role"), name="role", max_length=40),
    }
    if event_type == "deleted" and set(data) == {"id"}:
        fields = {"status": "deleted"}  # keep what we knew of the rep; visits still point at it
    return Event(user_id, sequence, event_type, event_time, fields)


def raw_digest(item) -> tuple[str, str]:
    try:
        raw = json.dumps(item, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        raw = repr(item)
    return raw, hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


# --- Applying ------------------------------------------------------------------------------


def items_parse(*, stream: str, items: list, result: PageResult) -> tuple[dict[int, list[Event]], list[RejectedItem]]:
    parse = visit_parse if stream == Stream.VISITS else user_parse
    by_id: dict[int, list[Event]] = {}
    rejects: dict[str, RejectedItem] = {}
    for item in items:
        try:
            event = parse(item)
        except Rejected as exc:
            raw, digest = raw_digest(item)
            rejects.setdefault(digest, RejectedItem(stream=stream, digest=digest, raw=raw, reason=str(exc)))
            continue
        by_id.setdefault(event.id, []).append(event)
        if result.newest_event_time is None or event.event_time > result.newest_event_time:
            result.newest_event_time = event.event_time
    for events in by_id.values():
        events.sort(key=lambda e: e.sequence)
    return by_id, list(rejects.values())


def rejects_store(*, rejects: list[RejectedItem], stream: str, result: PageResult) -> None:
    if not rejects:
        return
    known = set(
        RejectedItem.objects.filter(stream=stream, digest__in=[r.digest for r in rejects]).values_list(
            "digest", flat=True
        )
    )
    fresh = [r for r in rejects if r.digest not in known]
    RejectedItem.objects.bulk_create(fresh, ignore_conflicts=True)
    result.rejected = len(fresh)


def sequences_of(*, model, ids: list[int]) -> dict[int, int]:
    """{id: sequence} of the stored rows among `ids`, in plain SQL: the ORM's per-value
    preparation of a thousand-id IN list costs more than the query."""
    table = connection.ops.quote_name(model._meta.db_table)
    found: dict[int, int] = {}
    if connection.vendor == "postgresql":  # one array parameter instead of a thousand
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, sequence FROM {table} WHERE id = ANY(%s)", [ids])
            return dict(cursor.fetchall())
    step = rows_per_statement(1)
    with connection.cursor() as cursor:
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            cursor.execute(f"SELECT id, sequence FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk)
            found.update(cursor.fetchall())
    return found


def visits_apply(*, by_id: dict[int, list[Event]], result: PageResult) -> None:
    ids = list(by_id)
    stored = sequences_of(model=Visit, ids=ids)
    tombstones = sequences_of(model=DeletedVisit, ids=ids)
    upserts: dict[int, dict] = {}  # id -> full row
    deletions: dict[int, tuple[int, datetime]] = {}  # stored id -> (sequence, deleted_at)
    new_tombstones: dict[int, DeletedVisit] = {}  # by id: the newest delete of an unseen visit
    outcome_names: dict[int, tuple[datetime, str]] = {}

    for visit_id, events in by_id.items():
        current = max(stored.get(visit_id, 0), tombstones.get(visit_id, 0))
        row: dict | None = None
        for event in events:
            if event.sequence <= current:
                result.skipped += 1
                continue
            current = event.sequence
            result.applied += 1
            if event.fields is not None:
                row = {**event.fields, "sequence": event.sequence, "event_time": event.event_time}
                row["deleted_at"] = event.event_time if event.event_type == "deleted" else None
                if event.fields["outcome_id"] is not None:
                    seen = outcome_names.get(event.fields["outcome_id"])
                    if seen is None or event.event_time >= seen[0]:
                        outcome_names[event.fields["outcome_id"]] = (event.event_time, event.outcome_name)
            elif row is not None:  # an id-only delete after a snapshot in this same page
                row.update(sequence=event.sequence, event_time=event.event_time, deleted_at=event.event_time)
            elif visit_id in stored:
                deletions[visit_id] = (event.sequence, event.event_time)
            else:
                new_tombstones[visit_id] = DeletedVisit(id=visit_id, sequence=event.sequence, deleted_at=event.event_time)
        if row is not None:
            upserts[visit_id] = row

    if upserts:
        rep_ids = list({r["rep_id"] for r in upserts.values()})
        known = sequences_of(model=Rep, ids=rep_ids)
        Rep.objects.bulk_create([Rep(id=rid) for rid in rep_ids if rid not in known], ignore_conflicts=True)
    if outcome_names:
        outcomes_name(seen=outcome_names)
    if upserts:
        visits_upsert(rows=upserts)
    for visit_id, (sequence, deleted_at) in deletions.items():
        Visit.objects.filter(id=visit_id).update(sequence=sequence, event_time=deleted_at, deleted_at=deleted_at)
    if new_tombstones:
        DeletedVisit.objects.bulk_create(
            list(new_tombstones.values()), update_conflicts=True, unique_fields=["id"], update_fields=["sequence", "deleted_at"]
        )


def sqlite_time(value: datetime | None) -> str | None:
    """An aware UTC datetime as Django keeps it in SQLite: naive UTC text.

    Django's adapt_datetimefield_value gives the same text but costs several times more,
    which showed in the ingestion benchmark; every time here is already UTC (clean_time).
    """
    if value is None:
        return None
    text = "%04d-%02d-%02d %02d:%02d:%02d" % (
        value.year, value.month, value.day, value.hour, value.minute, value.second,
    )  # fmt: skip
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def datetime_adapter():
    """What the database driver takes for a datetime: SQLite text, or the aware value."""
    return sqlite_time if connection.vendor == "sqlite" else (lambda value: value)


def rows_per_statement(columns: int) -> int:
    """How many rows fit in one multi-row INSERT under the database's parameter limit."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    else:
        limit = 10_000  # PostgreSQL allows 65,535; larger statements gain nothing
    return max(1, min(limit, 10_000) // columns)


def visits_upsert(*, rows: dict[int, dict]) -> None:
    """INSERT ... VALUES (...), (...) ON CONFLICT (id) DO UPDATE, a few hundred rows a statement.

    bulk_create(update_conflicts=True) writes the same SQL but spends most of a page's time
    preparing values field by field; here each value is adapted once. Multi-row statements
    (rather than executemany) also let the fetch thread run: sqlite3 releases the GIL around
    each statement step, and one step per row made the two threads queue for it. The
    sequence check already happened, under the stream's lock, so the update is unconditional.
    """
    ops = connection.ops
    columns = ["id", *VISIT_FIELDS, "ingested_at"]
    table = ops.quote_name(Visit._meta.db_table)
    names = [ops.quote_name(Visit._meta.get_field(c).column) for c in columns]
    adapt = datetime_adapter()
    now = adapt(dj_timezone.now())
    params = [
        (
            visit_id, row["rep_id"], row["resource_type"], row["resource_id"], adapt(row["visited_at"]),
            adapt(row["created_at"]), row["summary"], row["outcome_id"], row["latitude"], row["longitude"],
            row["verification_status"], row["sequence"], adapt(row["event_time"]), adapt(row["deleted_at"]), now,
        )  # fmt: skip
        for visit_id, row in rows.items()
    ]
    update = ", ".join(f"{n} = EXCLUDED.{n}" for n in names[1:])
    if connection.vendor == "postgresql":
        # COPY into a session-local table, then one INSERT ... SELECT: a third of the time of
        # executemany or of multi-row VALUES, whose per-row and parsing costs dominated.
        columns_sql = ", ".join(names)
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS visit_incoming (LIKE {table} INCLUDING DEFAULTS)")
            with cursor.cursor.copy(f"COPY visit_incoming ({columns_sql}) FROM STDIN") as copy:
                for row in params:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO {table} ({columns_sql}) SELECT {columns_sql} FROM visit_incoming "
                f"ON CONFLICT ({names[0]}) DO UPDATE SET {update}"
            )
            cursor.execute("DELETE FROM visit_incoming")
        return
    # SQLite: the statement is written with sqlite3's own "?" placeholders and run on the
    # driver's cursor, as Django's wrapper would spend a regex pass rewriting ten thousand "%s".
    step = rows_per_statement(len(names))
    row_marks = f"({', '.join(['?'] * len(names))})"
    with connection.cursor() as cursor:
        sqlite_cursor = cursor.cursor
        for start in range(0, len(params), step):
            chunk = params[start : start + step]
            sqlite3.Cursor.execute(
                sqlite_cursor,
                f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join([row_marks] * len(chunk))} "
                f"ON CONFLICT ({names[0]}) DO UPDATE SET {update}",
                [value for row in chunk for value in row],
            )


def outcomes_name(*, seen: dict[int, tuple[datetime, str]]) -> None:
    """Create unknown outcomes; rename known ones when this page's name is newer."""
    existing = {o.id: o for o in Outcome.objects.filter(id__in=list(seen))}
    missing = [Outcome(id=oid, name=name, name_seen_at=when) for oid, (when, name) in seen.items() if oid not in existing]
    Outcome.objects.bulk_create(missing, ignore_conflicts=True)
    for oid, (when, name) in seen.items():
        outcome = existing.get(oid)
        if outcome and outcome.name != name and (outcome.name_seen_at is None or when >= outcome.name_seen_at):
            Outcome.objects.filter(id=oid).update(name=name, name_seen_at=when)


def users_apply(*, by_id: dict[int, list[Event]], result: PageResult) -> None:
    stored = sequences_of(model=Rep, ids=list(by_id))
    full: dict[int, dict] = {}
    status_only: dict[int, dict] = {}
    for user_id, events in by_id.items():
        current = stored.get(user_id, 0)
        for event in events:
            if event.sequence <= current:
                result.skipped += 1
                continue
            current = event.sequence
            result.applied += 1
            if len(event.fields) == 1 and user_id not in full:
                status_only[user_id] = {**event.fields, "sequence": event.sequence}
            else:
                full[user_id] = {**full.get(user_id, {}), **event.fields, "sequence": event.sequence}
                status_only.pop(user_id, None)
    if full:
        Rep.objects.bulk_create(
            [Rep(id=uid, **row) for uid, row in full.items()],
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=["name", "email", "status", "role", "sequence", "updated_at"],
        )
    for user_id, row in status_only.items():
        updated = Rep.objects.filter(id=user_id).update(**row)
        if not updated:
            Rep.objects.create(id=user_id, **row)


def page_apply(
    *, stream: str, items: list, position: str, at_top: bool, owner: str, lease: timedelta, pages: int = 1
) -> PageResult:
    """Apply `items` (from one or more pages) and move the stream to `position`, all or nothing.

    Raises LockLost (and rolls back) if `owner` no longer holds the stream's lock.
    """
    result = PageResult()
    with transaction.atomic():
        by_id, rejects = items_parse(stream=stream, items=items, result=result)
        if by_id:
            (visits_apply if stream == Stream.VISITS else users_apply)(by_id=by_id, result=result)
        rejects_store(rejects=rejects, stream=stream, result=result)
        now = dj_timezone.now()
        changes = {
            "position": position,
            "at_top": at_top,
            "pages": F("pages") + pages,
            "events_applied": F("events_applied") + result.applied,
            "events_skipped": F("events_skipped") + result.skipped,
            "items_rejected": F("items_rejected") + result.rejected,
            "last_poll_at": now,
            "last_success_at": now,
            "lock_expires_at": now + lease,
        }
        if at_top:
            changes["caught_up_at"] = now
        moved = SyncState.objects.filter(stream=stream, lock_owner=owner).update(**changes)
        if not moved:
            raise LockLost(f"the {stream} stream lock was taken over; this page was not applied")
        if result.newest_event_time is not None:
            newer = Q(newest_event_time__isnull=True) | Q(newest_event_time__lt=result.newest_event_time)
            SyncState.objects.filter(newer, stream=stream).update(newest_event_time=result.newest_event_time)
    return result

"""Applies Firehose items (one page, or a batch of pages) and the stream's new position in a
single transaction.

Per id, only an event with a higher meta.sequence than the one stored changes anything, so
re-deliveries, stale events and a replay from `tail` are no-ops. An item that cannot be
understood is stored verbatim with the reason and never stops the rest of the page.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone as dj_timezone

from visits.geo.retention import retention_cutoff
from visits.ingest.tallies import local_day
from visits.models import (
    DeletedVisit,
    Outcome,
    RejectedItem,
    Rep,
    Stream,
    SyncState,
    Visit,
    VisitSource,
    as_is,
    column,
    datetime_adapter,
)
from visits.review.flags import changes_record
from visits.review.stored import reps_lock
from visits.review.timeline import Placed, facts_make, visits_placed
from visits.sell.events import Event, Reject

VISIT_FIELDS = [
    "rep_id", "resource_type", "resource_id", "visited_at", "created_at", "summary", "outcome_id",
    "latitude", "longitude", "verification_status", "sequence", "event_time", "deleted_at",
]  # fmt: skip
# The fields visits_upsert writes, in the order of each row's values.
UPSERT_FIELDS = ["id", *VISIT_FIELDS, "ingested_at", "local_day"]


class LockLost(Exception):
    """Another sync took this stream over (our lease ran out): this page must not land."""


@dataclass
class PageResult:
    applied: int = 0
    skipped: int = 0
    rejected: int = 0
    newest_event_time: datetime | None = None


# --- Applying ------------------------------------------------------------------------------


def events_group(
    *, stream: str, parsed: list[Event | Reject], result: PageResult
) -> tuple[dict[int, list[Event]], list[RejectedItem]]:
    """Events by id, each id's in sequence order, and the rejects (one per distinct item)."""
    by_id: dict[int, list[Event]] = {}
    rejects: dict[str, RejectedItem] = {}
    newest = result.newest_event_time
    for event in parsed:
        if isinstance(event, Reject):
            rejects.setdefault(
                event.digest, RejectedItem(stream=stream, digest=event.digest, raw=event.raw, reason=event.reason)
            )
            continue
        by_id.setdefault(event.id, []).append(event)
        if newest is None or event.event_time > newest:
            newest = event.event_time
    result.newest_event_time = newest
    for events in by_id.values():
        if len(events) > 1:
            events.sort(key=lambda e: e.sequence)
    return by_id, list(rejects.values())


def rejects_store(*, rejects: list[RejectedItem], stream: str) -> int:
    """Store each rejected item once (by its digest); returns how many were new."""
    if not rejects:
        return 0
    known = set(
        RejectedItem.objects.filter(stream=stream, digest__in=[r.digest for r in rejects]).values_list(
            "digest", flat=True
        )
    )
    fresh = [r for r in rejects if r.digest not in known]
    RejectedItem.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh)


@functools.cache
def _sequences_sql(model) -> str:
    """The start of a model's id-and-sequence query, up to "WHERE <id>", from its _meta: built once."""
    id_column, sequence = column(model, "id"), column(model, "sequence")
    return f"SELECT {id_column}, {sequence} FROM {connection.ops.quote_name(model._meta.db_table)} WHERE {id_column}"


def sequences_of(*, model, ids: list[int]) -> dict[int, int]:
    """{id: sequence} of the stored rows among `ids`, in plain SQL: the ORM's per-value
    preparation of a thousand-id IN list costs more than the query."""
    select = _sequences_sql(model)
    found: dict[int, int] = {}
    if connection.vendor == "postgresql":  # one array parameter instead of a thousand
        with connection.cursor() as cursor:
            cursor.execute(f"{select} = ANY(%s)", [ids])
            return dict(cursor.fetchall())
    step = rows_per_statement(1)
    with connection.cursor() as cursor:
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            cursor.execute(f"{select} IN ({', '.join(['%s'] * len(chunk))})", chunk)
            found.update(cursor.fetchall())
    return found


def placed_of_row(*, visit_id: int, row: dict) -> Placed:
    """A row to be written, as the flag rules read it."""
    facts = facts_make(visit_id, row["visited_at"], row["created_at"], row["latitude"], row["longitude"],
                       row["verification_status"], row["resource_type"], row["resource_id"])  # fmt: skip
    return Placed(rep_id=row["rep_id"], live=row["deleted_at"] is None, facts=facts)


def visits_apply(*, by_id: dict[int, list[Event]], result: PageResult) -> None:
    """Write the visit events of a batch (by id, each id's in sequence order: events_group).
    Runs inside page_apply's transaction, which also moves the stream's position.

    1. Read the stored sequence of every id in the batch, from the visits and from the
       tombstones (DeletedVisit: deletes of visits never held).
    2. Per id, walk its events: one at or below the sequence so far is skipped (a re-delivery,
       a stale event, a replay from `tail`). The newest snapshot (an event with fields) becomes
       the row to write, with deleted_at set if it is a delete; an id-only delete marks that
       row, or the stored visit, or else becomes a tombstone (a newer snapshot then overrides
       it: the visit was restored). The newest outcome names are kept.
    3. Record what the flags must recompute (flags.changes_record): the stored state of the
       visits written or deleted beside their state to be (a visit may move to another rep).
    4. Create the reps not seen yet, create or rename the outcomes, then write: the rows in
       one upsert (visits_upsert), the deletes of stored visits, the new tombstones.
    """
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
                # A newer snapshot overrides an id-only delete earlier in the batch.
                deletions.pop(visit_id, None)
                new_tombstones.pop(visit_id, None)
                if event.fields["outcome_id"] is not None:
                    seen = outcome_names.get(event.fields["outcome_id"])
                    if seen is None or event.event_time >= seen[0]:
                        # (an outcome with an id always has a name, "" at least)
                        outcome_names[event.fields["outcome_id"]] = (event.event_time, event.outcome_name or "")
            elif row is not None:  # an id-only delete after a snapshot in this same page
                row.update(sequence=event.sequence, event_time=event.event_time, deleted_at=event.event_time)
            elif visit_id in stored:
                deletions[visit_id] = (event.sequence, event.event_time)
            else:
                new_tombstones[visit_id] = DeletedVisit(
                    id=visit_id, sequence=event.sequence, deleted_at=event.event_time
                )
        if row is not None:
            upserts[visit_id] = row

    # The retention rule (geo/retention.py): a visit first seen already past the window is stored
    # without its position; one whose position was removed never gets it back (the upsert's SQL).
    cutoff = retention_cutoff()
    if cutoff is not None:
        for visit_id, row in upserts.items():
            if visit_id not in stored and row["visited_at"] < cutoff:
                row["latitude"] = row["longitude"] = None
    # What the flags must look at again (review/flags.py), before any write: where the visits
    # written and deleted were, and where they will be.
    before = visits_placed(ids=[vid for vid in (*upserts, *deletions) if vid in stored])
    after = {vid: placed_of_row(visit_id=vid, row=row) for vid, row in upserts.items()}
    after.update((vid, replace(before[vid], live=False)) for vid in deletions if vid in before)
    changes_record(before=before, after=after)
    written_reps = {r["rep_id"] for r in upserts.values()}
    if upserts:
        known = sequences_of(model=Rep, ids=list(written_reps))
        Rep.objects.bulk_create([Rep(id=rid) for rid in written_reps if rid not in known], ignore_conflicts=True)
    if outcome_names:
        outcomes_name(seen=outcome_names)
    if upserts:
        visits_upsert(rows=upserts)
    for visit_id, (sequence, deleted_at) in deletions.items():
        Visit.objects.filter(id=visit_id).update(
            sequence=sequence, event_time=deleted_at, deleted_at=deleted_at, source=VisitSource.FIREHOSE
        )
    if new_tombstones:
        DeletedVisit.objects.bulk_create(
            list(new_tombstones.values()),
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=["sequence", "deleted_at"],
        )


def rows_per_statement(columns: int) -> int:
    """How many rows fit in one multi-row INSERT under the database's parameter limit."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    else:
        limit = 10_000  # PostgreSQL allows 65,535; larger statements gain nothing
    return max(1, min(limit, 10_000) // columns)


@functools.cache
def _upsert_parts() -> tuple[str, str, str, str]:
    """The visits upsert's table, column list, conflict column and SET clause, quoted and taken
    from Visit._meta: built once per process."""
    quote = connection.ops.quote_name
    names = [quote(column(Visit, name)) for name in UPSERT_FIELDS]
    table = quote(Visit._meta.db_table)
    removed = f"{table}.{quote(column(Visit, 'coordinates_removed_at'))}"
    position = {quote(column(Visit, name)) for name in ("latitude", "longitude")}
    # A position the retention rule removed stays removed, whatever a later event sends.
    update = ", ".join(
        f"{n} = CASE WHEN {removed} IS NULL THEN EXCLUDED.{n} END" if n in position else f"{n} = EXCLUDED.{n}"
        for n in names[1:]
    )
    # A visit the history backfill stored (sequence 0) becomes the Firehose's: its values win,
    # and only resource_address, which the Firehose never sends, is kept. Inserted rows take
    # the column's default ("firehose"), so the rows carry no value for it.
    update += f", {quote(column(Visit, 'source'))} = '{VisitSource.FIREHOSE.value}'"
    return table, ", ".join(names), names[0], update


@functools.cache
def _postgres_upsert_sql() -> tuple[str, str, str, str]:
    """The temporary table, the COPY into it, the INSERT ... SELECT from it and its emptying."""
    table, columns, key, update = _upsert_parts()
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS visit_incoming (LIKE {table} INCLUDING DEFAULTS)",
        f"COPY visit_incoming ({columns}) FROM STDIN",
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM visit_incoming "
        f"ON CONFLICT ({key}) DO UPDATE SET {update}",
        "DELETE FROM visit_incoming",
    )


def postgres_copy_insert(*, statements: tuple[str, str, str, str], rows: Iterable[tuple]) -> None:
    """PostgreSQL: COPY `rows` into a session-local table, then one INSERT ... SELECT from it
    (`statements`: create, copy, insert, empty). A third of the time of executemany or of
    multi-row VALUES, whose per-row and parsing costs dominated."""
    create, copy_in, insert, empty = statements
    with connection.cursor() as cursor:
        cursor.execute(create)
        with cursor.cursor.copy(copy_in) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(insert)
        cursor.execute(empty)


@functools.lru_cache(maxsize=8)  # a page's row counts: the full statement and a few remainders
def _sqlite_upsert_sql(rows: int) -> str:
    """A multi-row INSERT ... ON CONFLICT of `rows` rows, with sqlite3's own "?" placeholders."""
    table, columns, key, update = _upsert_parts()
    marks = f"({', '.join(['?'] * len(UPSERT_FIELDS))})"
    return (
        f"INSERT INTO {table} ({columns}) VALUES {', '.join([marks] * rows)} ON CONFLICT ({key}) DO UPDATE SET {update}"
    )


def visits_upsert(*, rows: dict[int, dict]) -> None:
    """INSERT ... VALUES (...), (...) ON CONFLICT (id) DO UPDATE, a few hundred rows a statement.

    bulk_create(update_conflicts=True) writes the same SQL but spends most of a page's time
    preparing values field by field; here each value is adapted once. Multi-row statements
    (rather than executemany) take one driver step per statement instead of one per row. The
    sequence check already happened, under the stream's lock, so the update is unconditional.
    """
    adapt = datetime_adapter()
    now = adapt(dj_timezone.now())
    zone = settings.DISPLAY_TIME_ZONE
    day: Callable[[date], str | date] = date.isoformat if connection.vendor == "sqlite" else as_is
    params = [
        (  # in UPSERT_FIELDS order
            visit_id,
            row["rep_id"],
            row["resource_type"],
            row["resource_id"],
            adapt(row["visited_at"]),
            adapt(row["created_at"]),
            row["summary"],
            row["outcome_id"],
            row["latitude"],
            row["longitude"],
            row["verification_status"],
            row["sequence"],
            adapt(row["event_time"]),
            adapt(row["deleted_at"]),
            now,
            day(local_day(visited_at=row["visited_at"], zone_name=zone)),
        )
        for visit_id, row in rows.items()
    ]
    if connection.vendor == "postgresql":
        postgres_copy_insert(statements=_postgres_upsert_sql(), rows=params)
        return
    # SQLite: the statement is written with sqlite3's own "?" placeholders and run on the
    # driver's cursor, as Django's wrapper would spend a regex pass rewriting ten thousand "%s".
    step = rows_per_statement(len(UPSERT_FIELDS))
    with connection.cursor() as cursor:
        sqlite_cursor = cursor.cursor
        for start in range(0, len(params), step):
            chunk = params[start : start + step]
            sqlite3.Cursor.execute(
                sqlite_cursor, _sqlite_upsert_sql(len(chunk)), [value for row in chunk for value in row]
            )


def outcomes_name(*, seen: dict[int, tuple[datetime, str]]) -> None:
    """Create unknown outcomes; rename known ones when this page's name is newer."""
    existing = {o.id: o for o in Outcome.objects.filter(id__in=list(seen))}
    missing = [
        Outcome(id=oid, name=name, name_seen_at=when) for oid, (when, name) in seen.items() if oid not in existing
    ]
    Outcome.objects.bulk_create(missing, ignore_conflicts=True)
    for oid, (when, name) in seen.items():
        outcome = existing.get(oid)
        if outcome and outcome.name != name and (outcome.name_seen_at is None or when >= outcome.name_seen_at):
            Outcome.objects.filter(id=oid).update(name=name, name_seen_at=when)


def users_apply(*, by_id: dict[int, list[Event]], result: PageResult) -> None:
    # The reps' rows locked at once, in id order, before they are written in the page's order:
    # the lock order of the writers of a rep's visits (review/stored.py: reps_lock).
    reps_lock(rep_ids=by_id)
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
            assert event.fields is not None  # a users event always carries its fields
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
    *,
    stream: str,
    events: list[Event | Reject],
    position: str,
    at_top: bool,
    owner: str,
    lease: timedelta,
    pages: int = 1,
) -> PageResult:
    """Apply parsed `events` (from one or more pages, see events.items_parse) and move the stream
    to `position`, all or nothing.

    Raises LockLost (and rolls back) if `owner` no longer holds the stream's lock.
    """
    result = PageResult()
    with transaction.atomic():
        by_id, rejects = events_group(stream=stream, parsed=events, result=result)
        if by_id:
            (visits_apply if stream == Stream.VISITS else users_apply)(by_id=by_id, result=result)
        result.rejected = rejects_store(rejects=rejects, stream=stream)
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

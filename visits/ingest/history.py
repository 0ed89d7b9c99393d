"""Storing a page of the Core API's visits (the history backfill's store step), with the Firehose
authoritative for what it delivered: its coordinates, sequences, statuses and deletes.

A history visit is stored with `source="core_api"`, no coordinates, sequence 0 and event_time its
`updated_at`, so that any Firehose event for it wins later (ingest/pages.py then sets `source` to
"firehose" and keeps `resource_address`). The tallies follow by their triggers; the flags by the
same changes_record() ingestion calls, and flags_refresh() afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from django.conf import settings
from django.db import connection
from django.db.models import Subquery

from visits.ingest.pages import postgres_copy_insert, rejects_store, rows_per_statement
from visits.ingest.tallies import local_day
from visits.models import (
    DeletedVisit,
    Outcome,
    RejectedItem,
    Rep,
    Stream,
    Visit,
    VisitSource,
    as_is,
    column,
    datetime_adapter,
)
from visits.review.flags import changes_record
from visits.review.stored import reps_lock
from visits.review.timeline import Placed, facts_make, visits_placed
from visits.sell.core_items import HistoryVisit
from visits.sell.events import Reject

HELD_FIELDS = ("id", "rep_id", "source", "sequence", "deleted_at", "event_time", "resource_address")


@dataclass
class StoreResult:
    stored: int = 0  # visits visitsdash did not hold
    updated: int = 0  # history visits (never seen by the Firehose) changed in Sell since
    addresses: int = 0  # held visits whose resource_address was filled or changed
    deleted_kept: int = 0  # visits the Firehose deleted, still listed by the Core API: left deleted
    rejected: int = 0
    stored_ids: list[int] = field(default_factory=list)


def placed_of(visit: HistoryVisit) -> Placed:
    """A history visit as the flag rules read it: live, without a position."""
    facts = facts_make(visit.id, visit.visited_at, visit.created_at, None, None, visit.verification_status,
                       visit.resource_type, visit.resource_id)  # fmt: skip
    return Placed(rep_id=visit.rep_id, live=True, facts=facts)


def held_of(*, ids: list[int]) -> dict[int, dict]:
    """What is held of these visits, by id (a few hundred ids: a page)."""
    found: dict[int, dict] = {}
    step = rows_per_statement(1) if connection.vendor == "sqlite" else len(ids) or 1
    for start in range(0, len(ids), step):
        for row in Visit.objects.filter(id__in=ids[start : start + step]).values(*HELD_FIELDS):
            found[row["id"]] = row
    return found


def visit_row(visit: HistoryVisit, *, zone: str, now: datetime) -> Visit:
    return Visit(
        id=visit.id, rep_id=visit.rep_id, resource_type=visit.resource_type, resource_id=visit.resource_id,
        visited_at=visit.visited_at, created_at=visit.created_at, summary=visit.summary, outcome_id=visit.outcome_id,
        latitude=None, longitude=None, verification_status=visit.verification_status, sequence=0,
        event_time=visit.updated_at, deleted_at=None, ingested_at=now,
        local_day=local_day(visited_at=visit.visited_at, zone_name=zone),
        source=VisitSource.CORE_API, resource_address=visit.resource_address,
    )  # fmt: skip


INSERT_FIELDS = (
    "id", "rep_id", "resource_type", "resource_id", "visited_at", "created_at", "summary", "outcome_id",
    "verification_status", "sequence", "event_time", "ingested_at", "local_day", "source", "resource_address",
)  # fmt: skip


@functools.cache
def _insert_sql() -> tuple[str, str, str]:
    """The history insert's head (up to VALUES) and tail, and its column list, the names from
    Visit._meta: once a process."""
    quote = connection.ops.quote_name
    names = ", ".join(quote(column(Visit, name)) for name in INSERT_FIELDS)
    return (
        f"INSERT INTO {quote(Visit._meta.db_table)} ({names}) VALUES ",
        f" ON CONFLICT ({quote(column(Visit, 'id'))}) DO NOTHING",
        names,
    )


@functools.cache
def _postgres_insert_sql() -> tuple[str, str, str, str]:
    """The temporary table, the COPY into it, the INSERT ... SELECT from it and its emptying."""
    _, tail, names = _insert_sql()
    table = connection.ops.quote_name(Visit._meta.db_table)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS visit_history_incoming (LIKE {table} INCLUDING DEFAULTS)",
        f"COPY visit_history_incoming ({names}) FROM STDIN",
        f"INSERT INTO {table} ({names}) SELECT {names} FROM visit_history_incoming{tail}",
        "DELETE FROM visit_history_incoming",
    )


def history_insert(*, visits: list[HistoryVisit], zone: str, now: datetime) -> None:
    """The new history visits in multi-row INSERTs; a visit the Firehose wrote meanwhile wins
    (DO NOTHING). Plain SQL, as pages.visits_upsert: bulk_create's preparation of each value,
    field by field, took two thirds of a backfill's time without the rate limit."""
    adapt = datetime_adapter()
    day: Callable[[date], str | date] = date.isoformat if connection.vendor == "sqlite" else as_is
    at = adapt(now)
    rows = [
        (v.id, v.rep_id, v.resource_type, v.resource_id, adapt(v.visited_at), adapt(v.created_at), v.summary,
         v.outcome_id, v.verification_status, 0, adapt(v.updated_at), at,
         day(local_day(visited_at=v.visited_at, zone_name=zone)), VisitSource.CORE_API.value, v.resource_address)
        for v in visits
    ]  # fmt: skip
    if connection.vendor == "postgresql":
        # psycopg's parsing of a statement of 1,500 parameters cost more than the insert itself.
        postgres_copy_insert(statements=_postgres_insert_sql(), rows=rows)
        return
    head, tail, _ = _insert_sql()
    marks = f"({', '.join(['%s'] * len(INSERT_FIELDS))})"
    step = rows_per_statement(len(INSERT_FIELDS))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            cursor.execute(head + ", ".join([marks] * len(chunk)) + tail, [value for row in chunk for value in row])


def history_store(*, parsed: list[HistoryVisit | Reject], now: datetime) -> StoreResult:
    """Store a page of parsed Core API visits; runs in the caller's transaction (the backfill
    moves its part's progress in the same one).

    1. Keep each id's last item; keep the rejects (RejectedItem, once per distinct item).
    2. Read what is held of those ids, and the tombstones of visits deleted unseen.
    3. Per visit: one the Firehose deleted (deleted_at, or a tombstone) stays deleted; one the
       Firehose delivered (sequence above 0) gets only its resource_address; a history visit
       changed in Sell since (a newer updated_at) is rewritten; one not held is new.
    4. Record what the flags must recompute (changes_record), before any write.
    5. Create the reps and outcomes not known yet (their names come from the users stream and the
       Core API's users and outcomes), insert the new visits (a visit the Firehose wrote meanwhile
       wins: ON CONFLICT DO NOTHING), rewrite the changed ones, fill the addresses.
    """
    result = StoreResult()
    rejects: dict[str, Reject] = {}
    visits: dict[int, HistoryVisit] = {}
    for item in parsed:
        if isinstance(item, Reject):
            rejects.setdefault(item.digest, item)
        else:
            visits[item.id] = item
    result.rejected = rejects_store(
        rejects=[RejectedItem(stream=Stream.VISITS, digest=d, raw=r.raw, reason=r.reason) for d, r in rejects.items()],
        stream=Stream.VISITS,
    )
    if not visits:
        return result
    ids = list(visits)
    held = held_of(ids=ids)
    tombstones = set(DeletedVisit.objects.filter(id__in=ids).values_list("id", flat=True))
    new: list[HistoryVisit] = []
    changed: list[HistoryVisit] = []
    addresses: dict[int, str] = {}
    for visit_id, visit in visits.items():
        row = held.get(visit_id)
        if visit_id in tombstones or (row is not None and row["deleted_at"] is not None):
            result.deleted_kept += 1
        elif row is None:
            new.append(visit)
        elif row["source"] == VisitSource.CORE_API and row["sequence"] == 0 and visit.updated_at > row["event_time"]:
            changed.append(visit)
        elif visit.resource_address and visit.resource_address != row["resource_address"]:
            addresses[visit_id] = visit.resource_address

    # The reps of the visits whose address alone is written are locked too (review/stored.py:
    # reps_lock), with the others' if there are any.
    address_reps = {held[visit_id]["rep_id"] for visit_id in addresses}
    if new or changed:
        before = visits_placed(ids=[v.id for v in changed])
        changes_record(before=before, after={v.id: placed_of(v) for v in (*new, *changed)}, writing=address_reps)
        reps = {v.rep_id for v in (*new, *changed)}
        Rep.objects.bulk_create([Rep(id=rep_id) for rep_id in reps], ignore_conflicts=True)
        outcomes = {v.outcome_id for v in (*new, *changed) if v.outcome_id is not None}
        if outcomes:
            Outcome.objects.bulk_create([Outcome(id=oid) for oid in outcomes], ignore_conflicts=True)
    else:
        reps_lock(rep_ids=address_reps)
    zone = settings.DISPLAY_TIME_ZONE
    if new:
        history_insert(visits=new, zone=zone, now=now)
        result.stored = len(new)
        result.stored_ids = [v.id for v in new]
    for visit in changed:
        changed_row = visit_row(visit, zone=zone, now=now)
        fields = ("rep_id", "resource_type", "resource_id", "visited_at", "created_at", "summary", "outcome_id",
                  "verification_status", "event_time", "local_day", "resource_address")  # fmt: skip
        # Still a history visit: a Firehose event that landed meanwhile wins.
        result.updated += Visit.objects.filter(id=visit.id, source=VisitSource.CORE_API, sequence=0).update(
            ingested_at=now, **{name: getattr(changed_row, name) for name in fields}
        )
    if addresses:
        Visit.objects.bulk_update(
            [Visit(id=vid, resource_address=text) for vid, text in addresses.items()], ["resource_address"],
            batch_size=500,
        )  # fmt: skip
        result.addresses = len(addresses)
    return result


def resurrections_undo() -> int:
    """History visits that a tombstone says were deleted (a delete the Firehose applied while a
    backfill's page stored the visit, on PostgreSQL): deleted again, as the Firehose said."""
    revived = list(
        Visit.objects.filter(
            source=VisitSource.CORE_API, deleted_at__isnull=True, id__in=Subquery(DeletedVisit.objects.values("id"))
        ).values_list("id", flat=True)
    )
    if not revived:
        return 0
    before = visits_placed(ids=revived)
    changes_record(before=before, after={vid: Placed(p.rep_id, False, p.facts) for vid, p in before.items()})
    for tomb in DeletedVisit.objects.filter(id__in=revived):
        Visit.objects.filter(id=tomb.id).update(
            deleted_at=tomb.deleted_at, sequence=tomb.sequence, event_time=tomb.deleted_at, source=VisitSource.FIREHOSE
        )
    return len(revived)

"""Parsing a Core API v2 visit item (`GET /v2/visits`): a HistoryVisit the database can store, or
a Reject with the reason; never an exception. Without Django, as events.py, whose checks it shares:
the Core API's strings are as hostile as the Firehose's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from visits.sell.events import (
    DEFAULT_TIME_BOUNDS,
    STATUSES,
    Reject,
    Rejected,
    TimeBounds,
    clean_id,
    clean_text,
    clean_time,
    raw_digest,
    reason_storable,
)

REASON_PREFIX = "Core API visit: "  # a reject's reason says where it came from (RejectedItem has no source)


@dataclass(frozen=True, slots=True)
class HistoryVisit:
    """A visit as the Core API lists it: statuses, outcome, resource, times; no coordinates."""

    id: int
    rep_id: int
    outcome_id: int | None
    resource_type: str
    resource_id: int | None
    visited_at: datetime
    created_at: datetime
    updated_at: datetime
    summary: str
    verification_status: str
    resource_address: str


def history_parse(item, bounds: TimeBounds = DEFAULT_TIME_BOUNDS) -> HistoryVisit:
    """One list item ({"data": {...}, "meta": {"type": "visit"}}, or the bare data) -> HistoryVisit."""
    if not isinstance(item, dict):
        raise Rejected("item is not an object")
    data = item.get("data", item)
    if not isinstance(data, dict):
        raise Rejected("data is not an object")
    status = data.get("rep_location_verification_status")
    if type(status) is not str or status not in STATUSES:
        raise Rejected(f"unknown rep_location_verification_status {status!r:.60}")
    resource_type = clean_text(data.get("resource_type"), name="resource_type", required=True)
    if len(resource_type) > 40:
        raise Rejected(f"resource_type is too long: {resource_type!r:.60}")
    created_at = clean_time(data.get("created_at"), name="created_at", bounds=bounds)
    updated = data.get("updated_at")
    return HistoryVisit(
        id=clean_id(data.get("id"), name="id"),
        rep_id=clean_id(data.get("creator_id"), name="creator_id"),
        outcome_id=clean_id(data.get("outcome_id"), name="outcome_id", nullable=True),
        resource_type=resource_type,
        resource_id=clean_id(data.get("resource_id"), name="resource_id", nullable=True),
        visited_at=clean_time(data.get("visited_at"), name="visited_at", bounds=bounds),
        created_at=created_at,
        # A visit never edited may come without updated_at: it is then as old as its creation.
        updated_at=created_at if updated is None else clean_time(updated, name="updated_at", bounds=bounds),
        summary=clean_text(data.get("summary"), name="summary"),
        verification_status=status,
        resource_address=clean_text(data.get("resource_address"), name="resource_address", max_length=2000),
    )


def history_items_parse(*, items: list, bounds: TimeBounds = DEFAULT_TIME_BOUNDS) -> list[HistoryVisit | Reject]:
    """A page's items, each a HistoryVisit or a Reject (kept with the reason), in the page's order."""
    parsed: list[HistoryVisit | Reject] = []
    for item in items:
        try:
            parsed.append(history_parse(item, bounds))
        except Rejected as exc:
            parsed.append(Reject(*raw_digest(item), reason_storable(REASON_PREFIX + str(exc))))
        except Exception as exc:  # noqa: BLE001 - whatever an item holds, it never stops a backfill
            reason = f"{REASON_PREFIX}could not be parsed: {type(exc).__name__}: {exc}"
            parsed.append(Reject(*raw_digest(item), reason_storable(reason)))
    return parsed

"""Parsing: a raw Firehose item -> an Event, or a Rejected reason.

Free of Django (beyond nothing at all), so that the fetch process (`visits/sell/fetcher.py`) can
parse pages on its own core, ahead of the process that writes them. Whatever an item holds,
parsing gives an Event the database can store, or a Reject with the reason: never an exception.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, overload

MAX_ID = 2**63 - 1
EVENT_TYPES = ("created", "updated", "deleted")
# Spelled as models.VerificationStatus; a test keeps the two equal.
STATUSES = frozenset(("verified", "resource_location_too_far", "location_unknown", "location_services_disabled"))


class Rejected(ValueError):
    """An item that cannot be applied; the message is the reason admins read."""


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """The times an event may carry (SELL_TIME_MIN_YEAR to SELL_TIME_MAX_YEAR in the app), as
    plain values, since this module has no settings. A time far outside any real visit (year 1,
    year 9999) is a broken item, and overflows when turned into UTC or the display time zone."""

    earliest: datetime
    latest: datetime
    label: str  # for reasons: "1990 to 2100"

    @classmethod
    def years(cls, *, min_year: int, max_year: int) -> TimeBounds:
        if not 1 < min_year <= max_year < 9999:
            raise ValueError(f"time bounds must be years from 2 to 9998, earliest first, not {min_year} to {max_year}")
        return cls(
            earliest=datetime(min_year, 1, 1, tzinfo=UTC),
            latest=datetime(max_year, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            label=f"{min_year} to {max_year}",
        )


# The defaults of SELL_TIME_MIN_YEAR and SELL_TIME_MAX_YEAR; the sync always passes the settings.
DEFAULT_TIME_BOUNDS = TimeBounds.years(min_year=1990, max_year=2100)


@dataclass(slots=True)
class Event:
    id: int
    sequence: int
    event_type: str
    event_time: datetime
    fields: dict | None  # the snapshot's columns; None for a `deleted` event carrying only the id
    outcome_name: str | None = None


# --- Parsing: raw item -> Event, or Rejected -----------------------------------------------


# Each clean_* function checks the common well-formed case first, in one line: they run
# several times per event and dominated the ingestion profile.


def utf8_encodable(value: str) -> bool:
    """False for text that UTF-8 cannot hold (a lone surrogate such as "\\ud800", which JSON
    allows): the database driver would fail on it, and with it the whole batch."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(value, *, name: str, max_length: int | None = None, required: bool = False) -> str:
    if (
        type(value) is str and "\x00" not in value and (value.isascii() or utf8_encodable(value))
        and (max_length is None or len(value) <= max_length)
    ):  # fmt: skip
        if not required or value.strip():
            return value
    if value is None:
        if required:
            raise Rejected(f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise Rejected(f"{name} is not text: {value!r:.60}")
    if not utf8_encodable(value):
        raise Rejected(f"{name} holds text that cannot be stored as UTF-8 (a lone surrogate): {value!r:.60}")
    value = value.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    if required and not value.strip():
        raise Rejected(f"{name} is empty")
    if max_length is not None and len(value) > max_length:
        value = value[:max_length]
    return value


@overload
def clean_id(value, *, name: str, nullable: Literal[False] = False) -> int: ...
@overload
def clean_id(value, *, name: str, nullable: bool) -> int | None: ...
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
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def clean_time(value, *, name: str, bounds: TimeBounds) -> datetime:
    if not isinstance(value, str):
        raise Rejected(f"{name} is not a date-time: {value!r:.60}")
    try:
        parsed = utc_parse(value)
    except ValueError:
        raise Rejected(f"{name} is not an ISO 8601 date-time: {value!r:.60}") from None
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        parsed = datetime.min.replace(tzinfo=UTC)
    if parsed is None:
        raise Rejected(f"{name} has no time zone: {value!r:.60}")
    if not bounds.earliest <= parsed <= bounds.latest:
        raise Rejected(
            f"{name} {value!r:.60} is outside the years {bounds.label} (SELL_TIME_MIN_YEAR, SELL_TIME_MAX_YEAR)"
        )
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
    if not isinstance(value, (int, float)) or (type(value) is float and not math.isfinite(value)):
        raise Rejected(f"{name} is not a number: {value!r:.60}")
    if not -limit <= value <= limit:
        raise Rejected(f"{name} {value} is outside -{limit:g}..{limit:g}")
    return float(value)


def envelope_parse(item, bounds: TimeBounds) -> tuple[dict, dict, int, str, datetime, int]:
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
    event_time = clean_time(meta.get("event_time"), name="meta.event_time", bounds=bounds)
    return data, meta, item_id, event_type, event_time, sequence


def visit_parse(item, bounds: TimeBounds = DEFAULT_TIME_BOUNDS) -> Event:
    data, meta, visit_id, event_type, event_time, sequence = envelope_parse(item, bounds)
    if event_type == "deleted" and set(data) == {"id"}:
        return Event(visit_id, sequence, event_type, event_time, None)
    location = data.get("sales_rep_location")
    if not isinstance(location, dict):
        raise Rejected("sales_rep_location is not an object")
    status = location.get("verification_status")
    if type(status) is not str or status not in STATUSES:  # a list or an object is unhashable
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
        "visited_at": clean_time(data.get("visited_at"), name="visited_at", bounds=bounds),
        "created_at": clean_time(data.get("created_at"), name="created_at", bounds=bounds),
        "summary": clean_text(data.get("summary"), name="summary"),
        "outcome_id": outcome_id,
        "latitude": latitude,
        "longitude": longitude,
        "verification_status": status,
    }
    return Event(visit_id, sequence, event_type, event_time, fields, outcome_name)


def user_parse(item, bounds: TimeBounds = DEFAULT_TIME_BOUNDS) -> Event:
    data, meta, user_id, event_type, event_time, sequence = envelope_parse(item, bounds)
    fields = {
        "name": clean_text(data.get("name"), name="name", max_length=255),
        "email": clean_text(data.get("email"), name="email", max_length=255),
        "status": "deleted"
        if event_type == "deleted"
        else clean_text(data.get("status"), name="status", max_length=40),
        "role": clean_text(data.get("role"), name="role", max_length=40),
    }
    if event_type == "deleted" and set(data) == {"id"}:
        fields = {"status": "deleted"}  # keep what we knew of the rep; visits still point at it
    return Event(user_id, sequence, event_type, event_time, fields)


def raw_digest(item) -> tuple[str, str]:
    """The item as JSON text that can always be stored, and its digest. Non-ASCII text is kept
    readable unless UTF-8 cannot hold it (a lone surrogate): then the JSON is ASCII-escaped."""
    try:
        raw = json.dumps(item, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        raw = repr(item)
    if not raw.isascii() and not utf8_encodable(raw):
        try:
            raw = json.dumps(item, ensure_ascii=True, sort_keys=True)
        except (TypeError, ValueError, RecursionError):
            raw = ascii(item)
    return raw, hashlib.sha256(raw.encode("utf-8")).hexdigest()


def reason_storable(reason: str) -> str:
    """A reason as text the database takes: no NUL, no lone surrogate, a readable length."""
    reason = reason.replace("\x00", "\\x00")[:500]
    return reason if reason.isascii() or utf8_encodable(reason) else reason.encode("utf-8", "backslashreplace").decode()


@dataclass(slots=True)
class Reject:
    """An item that could not be parsed: kept verbatim (`raw`) with the reason."""

    raw: str
    digest: str
    reason: str


def items_parse(*, stream: str, items: list, bounds: TimeBounds = DEFAULT_TIME_BOUNDS) -> list[Event | Reject]:
    """A page's items, each parsed to an Event or to a Reject, in the page's order.

    Never raises for an item: whatever goes wrong in parsing one (a check this module lacks
    included) rejects that item with the reason, so that no item can stop the stream for good.
    """
    parse = visit_parse if stream == "visits" else user_parse
    parsed: list[Event | Reject] = []
    for item in items:
        try:
            parsed.append(parse(item, bounds))
        except Rejected as exc:
            parsed.append(Reject(*raw_digest(item), reason_storable(str(exc))))
        except Exception as exc:  # noqa: BLE001 - see the docstring
            reason = f"could not be parsed: {type(exc).__name__}: {exc}"
            parsed.append(Reject(*raw_digest(item), reason_storable(reason)))
    return parsed

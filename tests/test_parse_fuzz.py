"""Fuzzing the parser: every field of well-formed items (nested ones too) replaced by every JSON
type, or removed. items_parse must never raise; every Event it gives must be storable, and the
whole lot must go through page_apply on the database without an error."""

import copy
import math
from datetime import datetime, timedelta

import pytest

from visits.ingest.pages import page_apply
from visits.models import DeletedVisit, RejectedItem, Rep, SyncState, Visit
from visits.sell import events
from visits.sell.events import Event, Reject

BOUNDS = events.TimeBounds.years(min_year=1990, max_year=2100)
REMOVED = object()  # not a value: the field is taken out
VALUES = [
    None, True, False, 0, -1, 2**64, 1.5, float("nan"), float("inf"), "", "text", "\ud800", "a\x00b",
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2026-03-01T10:00:00", [], [1], {}, {"a": 1},
]  # fmt: skip

META = {"type": "visit", "event_type": "created", "event_cause": "interaction", "sequence": 1,
        "event_id": "BJ5093YlSV6LcM6mO6Re7g", "event_time": "2026-03-01T10:05:00Z",
        "previous": {"summary": "before"}}  # fmt: skip
VISIT = {
    "data": {
        "id": 48210001, "resource_type": "lead", "resource_id": 3100001, "creator_id": 174401,
        "visited_at": "2026-03-01T10:00:00Z", "created_at": "2026-03-01T10:04:00Z", "summary": "Met the buyer, café",
        "outcome": {"id": 4101, "name": "Interested", "has_original_name": True},
        "sales_rep_location": {"latitude": 41.8781, "longitude": -87.6298, "verification_status": "verified"},
    },
    "meta": META,
}  # fmt: skip
VISIT_DELETED = {"data": {"id": 48210002}, "meta": {**META, "event_type": "deleted", "sequence": 3}}
USER = {
    "data": {"id": 174401, "name": "José Ramírez", "email": "jose.ramirez@fieldteam.example.com", "status": "active",
             "role": "user", "confirmed": True, "created_at": "2025-01-01T00:00:00Z"},
    "meta": {**META, "type": "user"},
}  # fmt: skip
BASES = {"visit": ("visits", VISIT), "visit deleted by id": ("visits", VISIT_DELETED), "user": ("users", USER)}


def paths(node: dict, prefix: tuple = ()):
    for key, value in node.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from paths(value, (*prefix, key))


def variants(base: dict, *, first_id: int = 0):
    """(description, item) for the whole item replaced, then for each field replaced or removed.
    With first_id, each item gets an id of its own (unless its id is what is fuzzed)."""
    yield from ((f"item = {value!r}", value) for value in VALUES)
    for number, (path, value) in enumerate((p, v) for p in paths(base) for v in [*VALUES, REMOVED]):
        item = copy.deepcopy(base)
        if first_id:
            item["data"]["id"] = first_id + number
        target = item
        for key in path[:-1]:
            target = target[key]
        if value is REMOVED:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        yield f"{'.'.join(path)} = {'(removed)' if value is REMOVED else repr(value)}", item


def storable_text(value, *, max_length: int | None = None, required: bool = False) -> bool:
    if type(value) is not str or "\x00" in value or (max_length and len(value) > max_length):
        return False
    if required and not value.strip():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_id(value, *, nullable: bool = False) -> bool:
    return (nullable and value is None) or (type(value) is int and 0 < value <= events.MAX_ID)


def storable_time(value) -> bool:
    return (
        isinstance(value, datetime) and value.utcoffset() == timedelta(0) and BOUNDS.earliest <= value <= BOUNDS.latest
    )


def event_problems(event: Event, *, stream: str) -> list[str]:
    """What in `event` the database could not store, or must not."""
    problems = []
    if not storable_id(event.id) or not storable_id(event.sequence):
        problems.append(f"id {event.id!r} or sequence {event.sequence!r}")
    if event.event_type not in events.EVENT_TYPES or not storable_time(event.event_time):
        problems.append(f"event_type {event.event_type!r} or event_time {event.event_time!r}")
    fields = event.fields
    if fields is None:
        return problems + ([] if event.event_type == "deleted" else ["no fields on an event that is not a delete"])
    if stream == "users":
        for name, length in (("name", 255), ("email", 255), ("status", 40), ("role", 40)):
            if name in fields and not storable_text(fields[name], max_length=length):
                problems.append(f"{name} {fields[name]!r}")
        return problems
    checks = {
        "rep_id": storable_id(fields["rep_id"]),
        "resource_type": storable_text(fields["resource_type"], max_length=40, required=True),
        "resource_id": storable_id(fields["resource_id"], nullable=True),
        "visited_at": storable_time(fields["visited_at"]),
        "created_at": storable_time(fields["created_at"]),
        "summary": storable_text(fields["summary"]),
        "outcome_id": storable_id(fields["outcome_id"], nullable=True),
        "outcome_name": event.outcome_name is None or storable_text(event.outcome_name, max_length=255),
        "verification_status": fields["verification_status"] in events.STATUSES,
    }
    latitude, longitude = fields["latitude"], fields["longitude"]
    if latitude is None or longitude is None:
        checks["coordinates"] = latitude is None and longitude is None
    else:
        checks["coordinates"] = (
            type(latitude) is float and type(longitude) is float and math.isfinite(latitude + longitude)
            and -90 <= latitude <= 90 and -180 <= longitude <= 180
        )  # fmt: skip
    return problems + [f"{name} {fields.get(name, event.outcome_name)!r}" for name, ok in checks.items() if not ok]


@pytest.mark.parametrize("base_name", list(BASES))
def test_items_parse_never_raises_and_every_event_is_storable(base_name):
    stream, base = BASES[base_name]
    assert type(events.items_parse(stream=stream, items=[base], bounds=BOUNDS)[0]) is Event  # the baseline is good
    problems, kinds = [], set()
    for description, item in variants(base):
        try:
            (result,) = events.items_parse(stream=stream, items=[item], bounds=BOUNDS)
        except Exception as exc:  # noqa: BLE001 - the very thing under test
            problems.append(f"{description}: raised {type(exc).__name__}: {exc}")
            continue
        kinds.add(type(result))
        if type(result) is Reject:
            if not (storable_text(result.raw, required=True) and storable_text(result.reason, required=True)):
                problems.append(f"{description}: reject not storable: {result.raw!r:.80} / {result.reason!r:.80}")
            if len(result.digest) != 64:
                problems.append(f"{description}: digest {result.digest!r}")
        elif type(result) is Event:
            problems += [f"{description}: {problem}" for problem in event_problems(result, stream=stream)]
        else:
            problems.append(f"{description}: gave {result!r:.80}, neither an Event nor a Reject")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
    assert kinds == {Event, Reject}, kinds  # some variants stay good (e.g. another summary), most do not


def test_hostile_times_are_rejected_naming_the_field():
    for field in ("visited_at", "created_at"):
        for value in (
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00+01:00",
            "1989-12-31T23:59:59Z",
            "2101-01-01T00:00:00Z",
        ):
            item = copy.deepcopy(VISIT)
            item["data"][field] = value
            (result,) = events.items_parse(stream="visits", items=[item], bounds=BOUNDS)
            assert type(result) is Reject and result.reason.startswith(
                f"{field} {value!r} is outside the years 1990 to 2100"
            )
    edge = copy.deepcopy(VISIT)
    edge["data"]["visited_at"] = "2100-12-31T23:59:59Z"
    assert type(events.items_parse(stream="visits", items=[edge], bounds=BOUNDS)[0]) is Event


@pytest.mark.django_db
def test_every_fuzzed_item_goes_through_page_apply():
    lease = timedelta(seconds=60)
    stored = {}
    for number, (stream, base) in enumerate(sorted(BASES.values(), key=lambda b: b[0] != "users")):
        SyncState.objects.get_or_create(stream=stream, defaults={"lock_owner": "fuzz"})
        items = [item for _, item in variants(base, first_id=1_000_000 * (number + 1))]
        parsed = events.items_parse(stream=stream, items=items, bounds=BOUNDS)
        page_apply(stream=stream, events=parsed, position=f"p{number}", at_top=True, owner="fuzz", lease=lease)
        for event in parsed:
            stored.setdefault(stream, {"events": {}, "rejects": set()})
            if type(event) is Reject:
                stored[stream]["rejects"].add(event.digest)
            else:
                stored[stream]["events"].setdefault(event.id, event)
    for stream, kept in stored.items():
        assert set(RejectedItem.objects.filter(stream=stream).values_list("digest", flat=True)) == kept["rejects"]
    visits = stored["visits"]["events"]
    written = {vid for vid, e in visits.items() if e.fields is not None}
    assert set(Visit.objects.values_list("id", flat=True)) == written
    assert set(DeletedVisit.objects.values_list("id", flat=True)) == set(visits) - written
    for visit in Visit.objects.all():
        assert visit.summary == visits[visit.id].fields["summary"]
    users = stored["users"]["events"]
    assert set(users) <= set(Rep.objects.values_list("id", flat=True))
    for rep in Rep.objects.filter(id__in=list(users)):
        assert rep.name == users[rep.id].fields.get("name", rep.name)

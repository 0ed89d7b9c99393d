"""A hostile Firehose's data: every text field of every event carries an attack, and malformed
items of every kind sit between the good ones, for tests/test_hostile.py; the good events'
expected state is computed here, from the events themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

# What the pages must never evaluate: 12345*6789 is 83810205.
EVALUATED = "83810205"


def payloads(*, marker: Path) -> list[str]:
    """Text that tries to run script (each calls alert), to be read as a template, or to break
    a page or a spreadsheet. `marker` is a file a template injection would create."""
    return [
        "<script>alert('script')</script>",
        "<img src=x onerror=alert('img')>",
        "\"><svg onload=alert('svg')>",
        "'); alert('quote'); ('",
        "javascript:alert('href')",
        "${alert('literal')}`",
        "\\x3cimg src=x onerror=alert('x3c')\\x3e",  # backslash escapes, as text
        "\\u003cimg src=x onerror=alert('u003c')\\u003e",
        "\\u{3c}img src=x onerror=alert('ubrace')\\u{3e}",
        "</script><script>alert('end')</script><!--",
        "{{ 12345*6789 }}",
        "{% debug %}{% now 'Y' %}",
        "{{ lipsum.__globals__.os.popen('touch " + str(marker) + "').read() }}",
        "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}",
        "Bob {{ unclosed",
        "{% for x in y %}",
        "NUL\x00byte",
        "line\u2028separator\u2029paragraph",
        "\u202eRTL override txt.exe",
        '=HYPERLINK("http://evil.example/","click")',
        "+1+1",
        "@SUM(A1)",
        "]]><![CDATA[",
        "long " + "A" * 100_000 + "<img src=x onerror=alert('long')>",
    ]


def stored(text: str, *, max_length: int | None = None) -> str:
    """How a text is kept: NUL removed (PostgreSQL text cannot hold it), cut to the column."""
    text = text.replace("\x00", "")
    return text[:max_length] if max_length else text


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class HostileData:
    """Quacks like visits.demo.generator.DemoData for the demo server."""

    users_events: list = field(default_factory=list)
    visits_events: list = field(default_factory=list)
    expected_visits: dict[int, dict] = field(default_factory=dict)  # id -> the fields stored
    expected_reps: dict[int, str] = field(default_factory=dict)  # id -> name
    malformed: dict[str, int] = field(default_factory=lambda: {"users": 0, "visits": 0})


def envelope(data, *, sequence, at: datetime, event_type: str = "created", kind: str = "visit") -> dict:
    return {"data": data, "meta": {"type": kind, "event_type": event_type, "sequence": sequence,
                                   "event_time": iso(at)}}  # fmt: skip


def visit_data(visit_id: int, *, rep_id: int, at: datetime, summary: str, outcome: str, status: str,
               lat: float | None, lng: float | None) -> dict:  # fmt: skip
    return {
        "id": visit_id, "resource_type": "lead", "resource_id": 4000 + visit_id, "creator_id": rep_id,
        "visited_at": iso(at), "created_at": iso(at + timedelta(minutes=3)), "summary": summary,
        "outcome": {"id": 70 + visit_id % 4, "name": outcome},
        "sales_rep_location": {"latitude": lat, "longitude": lng, "verification_status": status},
    }  # fmt: skip


def malformed_visits(*, at: datetime) -> list:
    """Items that no parser may accept, each of another shape; none may stop the stream."""
    good = visit_data(1, rep_id=501, at=at, summary="x", outcome="o", status="verified", lat=1.0, lng=2.0)

    def damaged(path: tuple, value, *, meta: dict | None = None) -> dict:
        data = {**good, "sales_rep_location": dict(good["sales_rep_location"]), "outcome": dict(good["outcome"])}
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        event = envelope(data, sequence=1, at=at)
        event["meta"].update(meta or {})
        return event

    items: list = [
        damaged(("sales_rep_location", "verification_status"), ["verified"]),
        damaged(("sales_rep_location", "verification_status"), {"a": 1}),
        damaged(("sales_rep_location",), ["verified"]),
        damaged(("sales_rep_location", "latitude"), [1.5]),
        damaged(("creator_id",), ["7"]),
        damaged(("creator_id",), 2**64),
        damaged(("resource_type",), ["lead"]),
        damaged(("summary",), {"text": "x"}),
        damaged(("summary",), "lone \ud800 surrogate"),
        damaged(("outcome", "name"), "lone \udfff low surrogate"),
        damaged(("outcome",), ["won"]),
        damaged(("visited_at",), "0001-01-01T00:00:00+01:00"),
        damaged(("visited_at",), "9999-12-31T23:59:59-01:00"),
        damaged(("created_at",), "9999-12-31T23:59:59-01:00"),
        damaged(("visited_at",), 1700000000),
        damaged(("id",), 2**64),
        damaged(("id",), 12.5),
        damaged(("id",), [1]),
        damaged(("summary",), "fine", meta={"event_time": "0001-01-01T00:00:00+01:00"}),
        damaged(("summary",), "fine", meta={"sequence": "1"}),
        damaged(("summary",), "fine", meta={"event_type": ["created"]}),
        {"data": ["not", "an", "object"], "meta": {"sequence": 1}},
        {"data": good, "meta": ["not", "an", "object"]},
        "a bare string",
        12345,
        None,
        [good],
    ]
    for n, item in enumerate(items):  # a distinct id each, so none is taken for another's replay
        if isinstance(item, dict) and isinstance(item.get("data"), dict) and item["data"].get("id") == 1:
            item["data"]["id"] = 990_000 + n
    return items


def hostile_data(*, marker: Path, now: datetime | None = None) -> HostileData:
    """Four reps and a visit per payload (names, summaries and outcomes all payloads), the
    malformed items spread among them, and bad users too."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    texts = payloads(marker=marker)
    out = HostileData()
    statuses = ["verified", "resource_location_too_far", "location_unknown", "location_services_disabled"]
    for n in range(4):
        rep_id = 501 + n
        name = texts[(n * 5) % len(texts)]
        short = [t for t in texts if len(t) <= 40]  # what a 40-character column takes whole
        user = {"id": rep_id, "name": name, "email": texts[(n * 5 + 1) % len(texts)][:200],
                "status": short[(n * 5 + 2) % len(short)], "role": short[(n * 5 + 3) % len(short)]}  # fmt: skip
        out.users_events.append(envelope(user, sequence=1, at=now - timedelta(days=3), kind="user"))
        out.expected_reps[rep_id] = stored(name, max_length=255)
    bad_users = [
        envelope({"id": 601, "name": "lone \ud800", "email": "", "status": "active", "role": "user"},
                 sequence=1, at=now - timedelta(days=3), kind="user"),
        envelope({"id": 602, "name": ["list"], "email": "", "status": "active", "role": "user"},
                 sequence=1, at=now - timedelta(days=3), kind="user"),
        envelope({"id": "603", "name": "x"}, sequence=1, at=now - timedelta(days=3), kind="user"),
        "not a user",
    ]  # fmt: skip
    out.users_events[2:2] = bad_users
    out.malformed["users"] = len(bad_users)
    start = now - timedelta(days=2)
    for i, text in enumerate(texts):
        visit_id = 1001 + i
        at = start + timedelta(minutes=37 * i)
        status = statuses[i % 4]
        located = status in ("verified", "resource_location_too_far")
        lat, lng = (41.8 + i * 0.01, -87.6 + i * 0.01) if located else (None, None)
        outcome = texts[(i + 7) % len(texts)]
        data = visit_data(visit_id, rep_id=501 + i % 4, at=at, summary=text, outcome=outcome, status=status,
                          lat=lat, lng=lng)  # fmt: skip
        resource_type = stored(texts[(i + 3) % len(texts)])
        if resource_type.strip() and len(resource_type) <= 40:  # else Sell's own: longer ones are rejected
            data["resource_type"] = texts[(i + 3) % len(texts)]
        out.visits_events.append(envelope(data, sequence=1, at=at))
        out.expected_visits[visit_id] = {"summary": stored(text), "rep_id": 501 + i % 4, "latitude": lat,
                                         "verification_status": status,
                                         "resource_type": stored(data["resource_type"])}  # fmt: skip
    bad = malformed_visits(at=start)
    for n, item in enumerate(bad):  # between the good ones
        out.visits_events.insert(1 + n * 2 % max(len(out.visits_events), 1), item)
    out.malformed["visits"] = len(bad)
    return out

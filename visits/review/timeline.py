"""A rep's visits as the flag rules read them (rules.VisitFacts), in plain SQL: the whole
timeline, or the parts of it a change can reach (the located visits around a moment, the
visits at some spots, those logged within some stretches of time). At a million visits the
ORM's conversions, per row and per value, cost more than the rules themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

from django.db import connection

from visits.geo import distance
from visits.models import Visit, column, datetime_adapter
from visits.review.rules import VisitFacts

FACTS = (
    "id",
    "visited_at",
    "created_at",
    "latitude",
    "longitude",
    "verification_status",
    "resource_type",
    "resource_id",
    "customer_distance_m",
    "customer_location",
    "customer_address_wrong",
)
CHUNK = 5000  # ids to one `IN` list on SQLite (its limit on parameters is 32,766)
RULES_ORDER = attrgetter("visited_at", "id")  # the order the rules read a rep's visits in


@dataclass(frozen=True)
class Timeline:
    """All of one rep's visits: the live ones in (visited_at, id) order, every id, the flagged ones,
    the stored risk of those with one (risk, risk_tier), and the live ones whose position the
    retention rule removed (their flags are frozen: review/frozen.py)."""

    live: list[VisitFacts]
    ids: list[int]
    flagged: set[int]
    risks: dict[int, tuple[int, str]]
    removed: set[int] = field(default_factory=set)

    @property
    def dead(self) -> set[int]:
        """The rep's visits deleted in Sell."""
        return set(self.ids) - {v.id for v in self.live}


@dataclass(frozen=True)
class Placed:
    """A visit's rep, whether it is live, and its facts."""

    rep_id: int
    live: bool
    facts: VisitFacts

    def ingested_same(self, other: Placed) -> bool:
        """The same rep, liveness and facts, but for what geo/ keeps (the customer's distance,
        location and mark), which ingestion neither writes nor knows."""
        return self.rep_id == other.rep_id and self.live == other.live and self.facts[:7] == other.facts[:7]


@functools.cache
def _parts() -> tuple[str, str, dict[str, str]]:
    """The visits table, the facts' select list and every column by field name, quoted: once
    per process. Each time comes as ISO text in UTC, with its zone, which datetime.fromisoformat
    turns into an aware time in one step: the drivers' own conversions (Django's converter and
    a replace on SQLite, Django's time zone loader on PostgreSQL) cost ten times more, at two
    times a visit, and held a rebuild's reading at PostgreSQL four times longer."""
    quote = connection.ops.quote_name
    names = {
        name: quote(column(Visit, name))
        for name in (*FACTS, "rep", "deleted_at", "flagged", "risk", "risk_tier", "coordinates_removed_at")
    }
    if connection.vendor == "postgresql":  # whatever the server's DateStyle
        text = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
    else:  # as Django keeps them: naive UTC text
        text = "{} || '+00:00'"
    select = [text.format(names[n]) if n in ("visited_at", "created_at") else names[n] for n in FACTS]
    return quote(Visit._meta.db_table), ", ".join(select), names


def facts_make(
    vid: int,
    at: datetime,
    created: datetime,
    lat: float | None,
    lng: float | None,
    status: str,
    rtype: str,
    rid: int | None,
    distance_m: float | None = None,
    location: str = "",
    address_wrong: bool = False,
) -> VisitFacts:
    """A visit's facts from its columns (FACTS): a visit of a customer without an id is its own customer.
    Ingestion builds them without the customer's distance, location and mark (geo/ keeps those):
    Placed.ingested_same compares without them."""
    customer = (rtype, rid if rid is not None else f"visit {vid}")
    return VisitFacts(vid, at, created, lat, lng, status, customer, distance_m, location, bool(address_wrong))


def _facts(rows: Iterable[tuple]) -> Iterator[tuple[VisitFacts, tuple]]:
    """Each row's VisitFacts (from its first columns, FACTS, times as _parts() gives them) and the
    columns after those."""
    parse = datetime.fromisoformat
    for vid, at, created, lat, lng, status, rtype, rid, metres, location, wrong, *rest in rows:
        yield (
            facts_make(vid, parse(at), parse(created), lat, lng, status, rtype, rid, metres, location, wrong),
            tuple(rest),
        )


def id_chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    """`ids` in lists for id_in: of CHUNK on SQLite (its limit on parameters), all in one on
    PostgreSQL, which takes them as one array. One statement also suits PostgreSQL's statement
    triggers: 313,000 visits' Visit.flagged took 18 s in statements of 5,000, 10 s in one."""
    if connection.vendor == "postgresql":
        every = list(ids)
        if every:
            yield every
        return
    chunk: list[int] = []
    for vid in ids:
        chunk.append(vid)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def id_in(name: str, ids: list[int]) -> tuple[str, list]:
    """`name` among `ids` as SQL and its parameters: one array on PostgreSQL."""
    if connection.vendor == "postgresql":
        return f"{name} = ANY(%s)", [ids]
    return f"{name} IN ({', '.join(['%s'] * len(ids))})", list(ids)


def _select(where: str, params: list, *, extra: str = "", tail: str = "") -> list[tuple]:
    table, facts, _ = _parts()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {facts}{extra} FROM {table} WHERE {where} {tail}", params)
        return cursor.fetchall()


def rep_timeline(*, rep_id: int) -> Timeline:
    """Every visit of the rep, in one query. (Reading many reps in one pass over the table, in
    its own order, read fewer pages but cost more: the rules then walk facts spread over the
    whole pass's memory.) The loop is written out: a rebuild runs it a million times."""
    _, _, c = _parts()
    extra = (
        f", {c['deleted_at']} IS NULL, {c['flagged']}, {c['risk']}, {c['risk_tier']}, "
        f"{c['coordinates_removed_at']} IS NOT NULL"
    )
    rows = _select(f"{c['rep']} = %s", [rep_id], extra=extra)
    parse = datetime.fromisoformat
    live, ids, flagged, risks, removed = [], [], set(), {}, set()
    for (
        vid,
        at,
        created,
        lat,
        lng,
        status,
        rtype,
        rid,
        metres,
        location,
        wrong,
        is_live,
        is_flagged,
        risk,
        tier,
        is_removed,
    ) in rows:
        ids.append(vid)
        if is_live:
            if is_removed:
                removed.add(vid)
            customer = (rtype, rid if rid is not None else f"visit {vid}")
            live.append(VisitFacts(vid, parse(at), parse(created), lat, lng, status, customer, metres, location,
                                   bool(wrong)))  # fmt: skip
        if is_flagged:
            flagged.add(vid)
        if risk or tier:
            risks[vid] = (risk, tier)
    live.sort(key=RULES_ORDER)  # the index gives them in nearly that order already
    return Timeline(live=live, ids=ids, flagged=flagged, risks=risks, removed=removed)


def visits_placed(*, ids: Iterable[int]) -> dict[int, Placed]:
    """The visits among `ids` that exist: their rep, whether live, their facts."""
    _, _, c = _parts()
    placed = {}
    for chunk in id_chunks(ids):
        where, params = id_in(c["id"], chunk)
        rows = _select(where, params, extra=f", {c['rep']}, {c['deleted_at']} IS NULL")
        for facts, (rep_id, live) in _facts(rows):
            placed[facts.id] = Placed(rep_id=rep_id, live=bool(live), facts=facts)
    return placed


def _live_located(rep_id: int) -> tuple[str, list]:
    """The rep's live visits with a position other than 0,0 (VisitFacts.point is not None)."""
    _, _, c = _parts()
    lat, lng = c["latitude"], c["longitude"]
    where = f"{c['rep']} = %s AND {c['deleted_at']} IS NULL AND {lat} IS NOT NULL AND NOT ({lat} = 0 AND {lng} = 0)"
    return where, [rep_id]


def located_around(*, rep_id: int, visited_at: datetime, visit_id: int) -> tuple[list[VisitFacts], list[VisitFacts]]:
    """The rep's live located visits nearest to the place (visited_at, visit_id) in the rules'
    order: up to three at or before it, nearest first, and up to two after it, in order.

    Each query is a range of the (rep, visited_at) index, the id deciding among equal times.
    """
    _, _, c = _parts()
    at, vid = c["visited_at"], c["id"]
    where, params = _live_located(rep_id)
    when = datetime_adapter()(visited_at)
    before = _select(f"{where} AND {at} <= %s AND ({at} < %s OR {vid} <= %s)", [*params, when, when, visit_id],
                     tail=f"ORDER BY {at} DESC, {vid} DESC LIMIT 3")  # fmt: skip
    after = _select(f"{where} AND {at} >= %s AND ({at} > %s OR {vid} > %s)", [*params, when, when, visit_id],
                    tail=f"ORDER BY {at}, {vid} LIMIT 2")  # fmt: skip
    return [f for f, _ in _facts(before)], [f for f, _ in _facts(after)]


def at_spots(*, rep_id: int, spots: set[tuple[float, float]]) -> list[VisitFacts]:
    """The rep's live visits whose spot (distance.spot) is one of `spots`."""
    if not spots:
        return []
    _, _, c = _parts()
    lat, lng = c["latitude"], c["longitude"]
    # A box twice the rounding around each spot finds every candidate; spot() then decides.
    boxes = " OR ".join([f"({lat} BETWEEN %s AND %s AND {lng} BETWEEN %s AND %s)"] * len(spots))
    params: list = [rep_id]
    for s_lat, s_lng in spots:
        params += [s_lat - 1e-5, s_lat + 1e-5, s_lng - 1e-5, s_lng + 1e-5]
    rows = _select(f"{c['rep']} = %s AND {c['deleted_at']} IS NULL AND ({boxes})", params)
    found = [f for f, _ in _facts(rows)]
    return [f for f in found if (point := f.point) is not None and distance.spot(*point) in spots]


def logged_within(*, rep_id: int, ranges: list[tuple[datetime, datetime]]) -> list[VisitFacts]:
    """The rep's live visits logged (created_at) within one of the closed `ranges`."""
    if not ranges:
        return []
    _, _, c = _parts()
    adapt = datetime_adapter()
    spans = " OR ".join([f"{c['created_at']} BETWEEN %s AND %s"] * len(ranges))
    params: list = [rep_id]
    for start, end in ranges:
        params += [adapt(start), adapt(end)]
    rows = _select(f"{c['rep']} = %s AND {c['deleted_at']} IS NULL AND ({spans})", params)
    return [f for f, _ in _facts(rows)]

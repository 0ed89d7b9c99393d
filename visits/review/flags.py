"""Keeping the stored flags equal to the rules' findings, recomputing only what a change reaches.

Ingestion records, in the transaction of its writes (changes_record), where in each rep's
timeline a visit changed: a FlagWindow at its former place (its facts before) and at its
current one, and the rep as dirty (DirtyRep). flags_refresh() then recomputes, per rep, only the
flags that read a visit at one of those places and writes the differences; a rep marked
`whole` (flags_rebuild, or more than WINDOW_LIMIT windows) is recomputed from its whole
timeline. Either way the stored flags equal a computation from scratch (flags_expected()).

What a visit at a place P can change, by group of rules (rules.py says what each reads):
- its own rules: the visit itself;
- impossible travel: the located visit just before P, the one at P, the one just after P
  (their legs changed), each read with its own neighbours;
- coordinate reuse: every visit at P's spot;
- bursts: the visits logged within FLAG_BURST_MINUTES of P's created_at, each read with the
  visits logged within FLAG_BURST_MINUTES of it.
A visit that moved to another rep, or was deleted, is recomputed in the rep it is in now (its
flags then go); its former rep recomputes around where it was.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from visits.geo import distance
from visits.models import DecisionKind, DirtyRep, Flag, FlagRule, FlagWindow, Rep, Visit, column, datetime_adapter
from visits.review import rules
from visits.review.frozen import FROZEN, findings_frozen, frozen_keys, removed_of
from visits.review.rules import Finding, VisitFacts
from visits.review.stored import (
    FlagChanges,
    StoredFlag,
    changes_write,
    flags_diff,
    flags_stored,
    rejected_of,
    reps_lock,
    risk_refresh,
)
from visits.review.timeline import (
    RULES_ORDER,
    Placed,
    Timeline,
    located_around,
    logged_within,
    rep_timeline,
    visits_placed,
)
from visits.review.timeline import at_spots as visits_at_spots

# More windows than this in one rep and it is recomputed whole: about where windows, at a few
# small queries each, cost as much as the rep's whole timeline (at 5,000 visits a rep, 48
# windows took 51 ms on SQLite and 100 ms on PostgreSQL, the whole rep 70 and 85 ms).
WINDOW_LIMIT = 48
SLACK = timedelta(seconds=1)  # widens the bursts' time ranges: more context never changes a finding


@dataclass(frozen=True)
class Window:
    """A FlagWindow as read: a visit, and its former facts (None: its current place only)."""

    visit_id: int
    visited_at: datetime | None
    created_at: datetime | None
    point: tuple[float, float] | None


# --- What ingestion records ------------------------------------------------------------------


def changes_record(*, before: dict[int, Placed], after: dict[int, Placed], writing: Iterable[int] = ()) -> None:
    """Record what flags_refresh() must recompute after ingestion writes the visits `after`
    (every visit to be written, as it will be); `before` holds the stored state of those that
    exist. Called in the transaction of the writes, before them.

    1. A visit whose rep, liveness and facts all stay the same changes no flag: nothing.
    2. Otherwise a window at its former place, if it was live (its rep and facts before); and
       a window at its current place, in its rep now, unless the first is in that same rep
       (the refresh reads the current place of every visit a window names).
    3. Mark each rep with windows in DirtyRep, counting them; past WINDOW_LIMIT it is marked
       whole. On PostgreSQL the upsert waits for a refresh holding the mark, which is why this
       runs before the visit writes (that refresh updates visits too).
    4. Lock the rows of every rep of `before` and `after`, and of `writing` (the reps of other
       visits the transaction writes: stored.reps_lock): a decision or a refresh of one of them
       waits for the visit writes that follow, or is waited for.
    5. Write the windows of the reps not marked whole.
    """
    windows: dict[int, list[tuple]] = defaultdict(list)
    for visit_id, now in after.items():
        was = before.get(visit_id)
        if was is not None and was.ingested_same(now):
            continue
        if was is not None and was.live:
            old = was.facts
            windows[was.rep_id].append((visit_id, old.visited_at, old.created_at, old.latitude, old.longitude))
        if was is None or not was.live or was.rep_id != now.rep_id:
            windows[now.rep_id].append((visit_id, None, None, None, None))
    whole = reps_mark(counts={rep_id: len(rows) for rep_id, rows in windows.items()}) if windows else {}
    reps_lock(rep_ids={*writing, *(placed.rep_id for placed in (*before.values(), *after.values()))})
    rows = [(rep_id, *row) for rep_id, rep_rows in sorted(windows.items()) if not whole[rep_id] for row in rep_rows]
    if rows:
        windows_insert(rows=rows)


def visits_mark(*, visits: Mapping[int, Iterable[int]], writing: Iterable[int] = ()) -> None:
    """Record, in the transaction of a write to some visits (rep id: visit ids) that changes what a
    rule reads of them but not their place in the timeline (geo/ writing a customer's distance or
    mark), a window at each one's current place; a rep with more than WINDOW_LIMIT is marked whole.
    Then lock the rows of those reps and of `writing` (the reps of the other visits written, whose
    change moves no flag), as changes_record does. Called before the writes, as changes_record is."""
    rows = {rep_id: sorted(set(ids)) for rep_id, ids in visits.items() if ids}
    whole = reps_mark(counts={rep_id: len(ids) for rep_id, ids in rows.items()}) if rows else {}
    reps_lock(rep_ids={*rows, *writing})
    windows = [(rep_id, vid, None, None, None, None) for rep_id, ids in sorted(rows.items()) if not whole[rep_id]
               for vid in ids]  # fmt: skip
    if windows:
        windows_insert(rows=windows)


@functools.cache
def _mark_sql() -> tuple[str, str]:
    """DirtyRep's upsert, up to VALUES and from ON CONFLICT: its table and columns from _meta."""
    quote = connection.ops.quote_name
    table = quote(DirtyRep._meta.db_table)
    rep, whole, count = (quote(column(DirtyRep, name)) for name in ("rep_id", "whole", "windows"))
    return (
        f"INSERT INTO {table} ({rep}, {whole}, {count}) VALUES ",
        f" ON CONFLICT ({rep}) DO UPDATE SET {count} = {table}.{count} + EXCLUDED.{count}, "
        f"{whole} = {table}.{whole} OR EXCLUDED.{whole} OR {table}.{count} + EXCLUDED.{count} > %s "
        f"RETURNING {rep}, {whole}",
    )


def reps_mark(*, counts: dict[int, int]) -> dict[int, bool]:
    """Add `counts` windows to each rep's DirtyRep (created if need be); whether each rep is
    now marked whole. In rep order, as flags_refresh locks them."""
    head, tail = _mark_sql()
    reps = sorted(counts)
    whole: dict[int, bool] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(reps), 1000):
            chunk = reps[start : start + 1000]
            values = ", ".join(["(%s, %s, %s)"] * len(chunk))
            params = [value for rep_id in chunk for value in (rep_id, counts[rep_id] > WINDOW_LIMIT, counts[rep_id])]
            cursor.execute(head + values + tail, [*params, WINDOW_LIMIT])
            whole.update((rep_id, bool(is_whole)) for rep_id, is_whole in cursor.fetchall())
    return whole


def windows_insert(*, rows: list[tuple]) -> None:
    quote = connection.ops.quote_name
    names = ("rep_id", "visit_id", "visited_at", "created_at", "latitude", "longitude")
    columns = ", ".join(quote(column(FlagWindow, name)) for name in names)
    adapt = datetime_adapter()
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {quote(FlagWindow._meta.db_table)} ({columns}) VALUES (%s, %s, %s, %s, %s, %s)",
            [(rep, vid, adapt(at), adapt(created), lat, lng) for rep, vid, at, created, lat, lng in rows],
        )


# --- Refreshing --------------------------------------------------------------------------------


def flags_refresh(*, chunk: int = 50) -> tuple[int, int]:
    """Recompute the flags of every rep ingestion marked, `chunk` reps to a transaction whose
    writes go at once (stored.changes_write); returns (reps, flag changes)."""
    reps = changes = 0
    while True:
        with transaction.atomic():
            # skip_locked: two workers refreshing at once take different reps (PostgreSQL;
            # SQLite runs one writing transaction at a time anyway).
            dirty = DirtyRep.objects.select_for_update(skip_locked=True).order_by("rep_id")
            marked = list(dirty.values_list("rep_id", "whole")[:chunk])
            if not marked:
                return reps, changes
            rep_ids = [rep_id for rep_id, _ in marked]
            windows = windows_read(rep_ids=[rep_id for rep_id, whole in marked if not whole])
            # The rejected visits among the windows' (moved or deleted: their reps' risk follows,
            # below); their reps are locked with the chunk's, before any read the writes follow
            # and any write: the lock order (stored.reps_lock).
            whole_reps = [rep_id for rep_id, whole in marked if whole or len(windows.get(rep_id, ())) > WINDOW_LIMIT]
            windowed = [(w.visit_id, rep_id) for rep_id, rep_windows in windows.items() if rep_id not in whole_reps
                        for w in rep_windows]  # fmt: skip
            moved = dict(
                Visit.objects.filter(id__in=sorted({vid for vid, _ in windowed}), review_status=DecisionKind.REJECT)
                .values_list("id", "rep_id")
            )  # fmt: skip
            reps_lock(rep_ids=[*rep_ids, *moved.values()])
            found = FlagChanges()
            any_stored = bool(whole_reps) and Flag.objects.exists()  # none on a first build: no look-ups
            rejected = rejected_of(rep_ids=whole_reps)
            for rep_id in whole_reps:
                rep_flag(timeline=rep_timeline(rep_id=rep_id), any_stored=any_stored, into=found,
                         rejected=rejected.get(rep_id, set()))  # fmt: skip
            for rep_id, rep_windows in windows.items():
                if rep_id not in whole_reps:
                    windows_flag(rep_id=rep_id, windows=rep_windows, into=found)
            changes_write(found)
            # A rejected visit deleted or moved to another rep changes the risk of its reps' other
            # flagged visits (each counts the rep's rejected visits): those reps' risk, recomputed.
            reps_again = {rep for vid, rep in windowed if vid in moved} | set(moved.values())
            if reps_again - set(whole_reps):
                risk_refresh(rep_ids=reps_again - set(whole_reps))
            FlagWindow.objects.filter(rep_id__in=rep_ids).delete()
            DirtyRep.objects.filter(rep_id__in=rep_ids).delete()
            reps += len(rep_ids)
            changes += found.count


def flags_rebuild(*, chunk: int = 200) -> tuple[int, int]:
    """Every rep's flags from scratch (e.g. after the thresholds changed). In bigger transactions
    than a refresh's: the writes of a first build reach every page of the visits, and each
    commit writes the pages it changed (four commits took a tenth longer than one, at a million
    visits on SQLite)."""
    DirtyRep.objects.bulk_create(
        [DirtyRep(rep_id=r, whole=True) for r in Rep.objects.values_list("id", flat=True)],
        update_conflicts=True,
        unique_fields=["rep_id"],
        update_fields=["whole"],
    )
    return flags_refresh(chunk=chunk)


def windows_read(*, rep_ids: list[int]) -> dict[int, list[Window]]:
    found: dict[int, list[Window]] = defaultdict(list)
    if not rep_ids:
        return found
    rows = FlagWindow.objects.filter(rep_id__in=rep_ids).values_list(
        "rep_id", "visit_id", "visited_at", "created_at", "latitude", "longitude"
    )
    for rep_id, visit_id, at, created, lat, lng in rows:
        point = None if lat is None or lng is None or distance.is_null_island(lat, lng) else (lat, lng)
        found[rep_id].append(Window(visit_id, at, created, point))
    return found


def rep_flag(
    *, timeline: Timeline, into: FlagChanges, any_stored: bool = True, rejected: AbstractSet[int] = frozenset()
) -> None:
    """All of one rep's flags, recomputed from its timeline: the differences added to `into`.
    Every visit's stored flags are looked up, not only the flagged ones': a rebuild also mends
    flags that Visit.flagged would not show, and the risk of every visit whose stored risk differs
    from its wanted flags' (`rejected`: the rep's rejected live visits) is set again."""
    wanted = {(f.visit_id, f.rule): f for f in rules.rep_findings(timeline.live)}
    stored = flags_stored(visit_ids=timeline.ids) if any_stored else {}
    # The flags frozen by the retention rule stay as they stood (frozen.py): wanted as stored.
    wanted = findings_frozen(wanted=wanted, stored=stored, removed=timeline.removed, dead=timeline.dead)
    flags_diff(wanted=wanted, stored=stored, into=into)
    now = {visit_id for visit_id, _ in wanted}
    into.flagged.update((visit_id, visit_id in now) for visit_id in now ^ timeline.flagged)
    by_visit: dict[int, list[tuple[str, dict]]] = defaultdict(list)
    for f in wanted.values():
        by_visit[f.visit_id].append((f.rule, f.numbers))
    given = rules.risk_settings()
    for visit_id in by_visit.keys() | timeline.risks.keys():
        if visit_id in into.touched or visit_id in into.flagged:
            continue  # visits_flagged_set sets it anyway
        risk = rules.risk_score(flags=by_visit.get(visit_id, ()), rejected=len(rejected) - (visit_id in rejected),
                                given=given)  # fmt: skip
        if risk != timeline.risks.get(visit_id, (0, "")):
            into.touched.add(visit_id)


def windows_flag(*, rep_id: int, windows: list[Window], into: FlagChanges) -> None:
    """The flags of one rep that its windows reach (see the module's docstring), recomputed:
    the differences added to `into`."""
    placed = visits_placed(ids={w.visit_id for w in windows})
    own = {visit_id for visit_id, p in placed.items() if p.rep_id == rep_id}  # every rule, for these
    own_live = sorted((placed[vid].facts for vid in own if placed[vid].live), key=RULES_ORDER)
    places = [(w.visit_id, w.visited_at, w.created_at, w.point) for w in windows if w.visited_at is not None]
    places += [(v.id, v.visited_at, v.created_at, v.point) for v in own_live]
    # Per rule, the visits whose flags of that rule are recomputed, and what they should be.
    scope: dict[str, set[int]] = {}
    wanted: dict[tuple[int, str], Finding] = {}

    def found(rule_names: Iterable[str], visits: set[int], findings: list[Finding]) -> None:
        for rule in rule_names:
            scope.setdefault(rule, set()).update(visits | own)
        wanted.update(((f.visit_id, f.rule), f) for f in findings if f.visit_id in visits)

    found(rules.VISIT_RULES, own, rules.visit_findings(own_live))
    for visited_at, visit_id in {(at, vid) for vid, at, _, _ in places}:
        middle, run = travel_run(rep_id=rep_id, visited_at=visited_at, visit_id=visit_id)
        found([FlagRule.IMPOSSIBLE_TRAVEL], middle, rules.travel_findings(run))
    spotted = visits_at_spots(rep_id=rep_id, spots={distance.spot(*p) for _, _, _, p in places if p is not None})
    found([FlagRule.COORDINATE_REUSE], {v.id for v in spotted}, rules.reuse_findings(spotted))
    reached, logged = burst_context(rep_id=rep_id, times=[created for _, _, created, _ in places if created])
    found([FlagRule.BURST], reached, rules.burst_findings(logged))

    every = flags_stored(visit_ids={vid for visits in scope.values() for vid in visits})
    stored = {key: flag for key, flag in every.items() if key[0] in scope.get(key[1], ())}
    # The flags frozen by the retention rule are left alone (frozen.py): neither wanted nor stored.
    reached = {vid for visits in scope.values() for vid in visits}
    removed = removed_of(visit_ids=reached)
    dead = {vid for vid in own if not placed[vid].live}
    frozen = frozen_keys(stored=every, removed=removed, dead=dead)
    wanted = {key: f for key, f in wanted.items() if key[0] not in removed and key not in frozen}
    stored = {key: flag for key, flag in stored.items() if key not in frozen}
    moved = flags_diff(wanted=wanted, stored=stored, into=into)
    if moved:  # a visit is flagged if any flag is left, of the rules recomputed or the others
        left = {visit_id for visit_id, rule in every if (visit_id, rule) not in moved} | {vid for vid, _ in wanted}
        into.flagged.update((visit_id, visit_id in left) for visit_id, _ in moved)


def travel_run(*, rep_id: int, visited_at: datetime, visit_id: int) -> tuple[set[int], list[VisitFacts]]:
    """The located visits whose legs a visit at this place (arriving or leaving) changes: the
    one just before it, the one at it, the one just after it; and the run of located visits
    that holds each of them with both neighbours."""
    before, after = located_around(rep_id=rep_id, visited_at=visited_at, visit_id=visit_id)
    middle = before[:1] + after[:1]
    if before and (before[0].visited_at, before[0].id) == (visited_at, visit_id):
        middle += before[1:2]  # the visit at the place, and the one before it
    return {v.id for v in middle}, [*reversed(before), *after]


def burst_context(*, rep_id: int, times: list[datetime]) -> tuple[set[int], list[VisitFacts]]:
    """The live visits logged within FLAG_BURST_MINUTES of one of `times` (their burst windows
    may have changed), and those within twice that: every visit their windows hold."""
    if not times:
        return set(), []
    reach = timedelta(minutes=settings.FLAG_BURST_MINUTES) + SLACK
    logged = logged_within(rep_id=rep_id, ranges=ranges_merge([(t - 2 * reach, t + 2 * reach) for t in times]))
    near = ranges_merge([(t - reach, t + reach) for t in times])
    return {v.id for v in logged if any(start <= v.created_at <= end for start, end in near)}, logged


def ranges_merge(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


# --- From scratch --------------------------------------------------------------------------


def rep_visits(*, rep_id: int) -> list[VisitFacts]:
    """One rep's live visits in the rules' order, read through the ORM: not the way the refresh
    reads them (timeline.py), so that flags_expected() is a check of that too."""
    rows = (
        Visit.objects.live().filter(rep_id=rep_id)
        .order_by("visited_at", "id")
        .values_list("id", "visited_at", "created_at", "latitude", "longitude", "verification_status",
                     "resource_type", "resource_id", "customer_distance_m", "customer_location",
                     "customer_address_wrong")
    )  # fmt: skip
    return [
        VisitFacts(vid, at, created, lat, lng, status, (rtype, rid if rid is not None else f"visit {vid}"), metres,
                   location, wrong)
        for vid, at, created, lat, lng, status, rtype, rid, metres, location, wrong in rows
    ]  # fmt: skip


def rep_expected(*, rep_id: int) -> list[Finding]:
    """One rep's flags as a computation from scratch would store them, but for those frozen by the
    retention rule (frozen.py): read as stored, through the ORM too."""
    wanted = {(f.visit_id, f.rule): f for f in rules.rep_findings(rep_visits(rep_id=rep_id))}
    live = Visit.objects.live().filter(rep_id=rep_id)
    removed = set(live.filter(coordinates_removed_at__isnull=False).values_list("id", flat=True))
    frozen = Flag.objects.filter(visit__rep_id=rep_id, visit__deleted_at__isnull=True).filter(
        Q(visit__coordinates_removed_at__isnull=False) | Q(numbers__has_key=FROZEN)
    )
    stored = {
        (flag.visit_id, flag.rule): StoredFlag(flag.id, flag.visit_id, flag.rule, json.dumps(flag.numbers),
                                               flag.sentence)
        for flag in frozen
    }  # fmt: skip
    return list(findings_frozen(wanted=wanted, stored=stored, removed=removed).values())


def flags_expected(*, rep_ids: Iterable[int] | None = None) -> dict[tuple[int, str], Finding]:
    """Every flag (of these reps) as a computation from scratch would store it, those frozen by the
    retention rule as they stood (for tests and checks)."""
    reps = Rep.objects.values_list("id", flat=True) if rep_ids is None else rep_ids
    return {(f.visit_id, f.rule): f for rep_id in reps for f in rep_expected(rep_id=rep_id)}


def risk_expected(*, rep_ids: Iterable[int] | None = None) -> dict[int, rules.Risk]:
    """Every flagged visit's risk (of these reps) as a computation from scratch would store it: from
    flags_expected()'s findings and the reps' rejected visits, read through the ORM (for tests and checks)."""
    reps = list(Rep.objects.values_list("id", flat=True) if rep_ids is None else rep_ids)
    rejected: dict[int, set[int]] = defaultdict(set)
    for visit_id, rep_id in Visit.objects.filter(
        rep_id__in=reps, deleted_at__isnull=True, review_status=DecisionKind.REJECT
    ).values_list("id", "rep_id"):
        rejected[rep_id].add(visit_id)  # fmt: skip
    found: dict[int, rules.Risk] = {}
    for rep_id in reps:
        by_visit: dict[int, list[tuple[str, dict]]] = defaultdict(list)
        for f in rep_expected(rep_id=rep_id):
            by_visit[f.visit_id].append((f.rule, f.numbers))
        for visit_id, found_flags in by_visit.items():
            found[visit_id] = rules.visit_risk(flags=found_flags, rejected=len(rejected[rep_id] - {visit_id}))
    return found

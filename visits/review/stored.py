"""The stored flags as flags.py reads and writes them, in plain SQL: the flags of a rep or of
some visits; the differences from the wanted findings (FlagChanges), collected over many reps
and written at once in the order of the indexes; and the per-visit state that follows them
(visits_flagged_set). At a million visits the ORM's model instances and per-value preparation
cost more than the rules.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from visits.ingest import tallies
from visits.models import RULE_BITS, DecisionKind, Flag, FlagRule, Rep, Visit, column
from visits.review.rules import NO_RISK, Finding, Risk, risk_score, risk_settings, visit_risk
from visits.review.timeline import id_chunks, id_in


def reps_lock(*, rep_ids: Iterable[int] | QuerySet) -> None:
    """Lock these reps' rows (FOR NO KEY UPDATE, in id order; nothing on SQLite, one writer at a
    time): the lock order of every transaction that writes visits while a rep's visits' review
    state (review_status, flags, flagged, flag_rules, risk, risk_tier) may be written beside it.

    1. The DirtyRep rows first, if any: ingestion and geo/ mark them (flags.reps_mark, in rep
       order), flags_refresh claims them (skip_locked).
    2. Then the Rep rows of every rep whose visits the transaction writes, all in this one
       statement, before any visit is written: a decision (models.review_status_refresh), a bulk
       accept (queue.low_tier_accept), a flags refresh (flags.flags_refresh), ingestion and the
       backfill (flags.changes_record), the customers' fields (flags.visits_mark), and the users'
       writers of Rep rows (pages.users_apply, ingest/core.py).
    3. Then the visits, in any order: two transactions that write visits of one rep never hold
       them at once. Without this, a decision holding its visit's row and wanting the rep's
       other visits for their risk deadlocked with a flags refresh (or an ingested page) holding
       those and wanting the decided visit (tests/test_review_locks.py).

    A later call in the same transaction must name only reps already locked (risk_refresh after a
    decision): a new rep locked after others breaks the order. NO KEY UPDATE, not UPDATE: the
    foreign-key checks of visits and DirtyRep written meanwhile (KEY SHARE) do not wait for it.
    `rep_ids` may be a query of rep ids (a subquery: one statement)."""
    chosen = rep_ids if isinstance(rep_ids, QuerySet) else sorted(set(rep_ids))
    locking = Rep.objects.select_for_update(no_key=True).filter(id__in=chosen).order_by("id")
    list(locking.values_list("id", flat=True))


class StoredFlag(NamedTuple):  # a tuple: a rebuild reads 330,000 of them
    id: int
    visit_id: int
    rule: str
    numbers: str  # the JSON text as stored, parsed only to compare
    sentence: str


@dataclass
class FlagChanges:
    """What to write to make the stored flags the wanted ones."""

    gone: list[int] = field(default_factory=list)  # flag ids to delete
    fresh: list[tuple[int, str, str, str]] = field(default_factory=list)  # (visit, rule, numbers JSON, sentence)
    changed: list[tuple[int, str, str]] = field(default_factory=list)  # (flag id, numbers JSON, sentence)
    flagged: dict[int, bool] = field(default_factory=dict)  # Visit.flagged to set, where it changes
    # visits that gain or lose a flag, or whose flags' numbers change (their flag_rules and risk follow)
    touched: set[int] = field(default_factory=set)

    @property
    def count(self) -> int:
        return len(self.gone) + len(self.fresh) + len(self.changed)


@functools.cache
def _sql() -> tuple[str, str, dict[str, str]]:
    """The flags table, the select list (with the numbers as text) and the columns, quoted."""
    quote = connection.ops.quote_name
    names = {name: quote(column(Flag, name)) for name in ("id", "visit", "rule", "numbers", "sentence")}
    numbers = names["numbers"] + ("::text" if connection.vendor == "postgresql" else "")
    select = f"SELECT {names['id']}, {names['visit']}, {names['rule']}, {numbers}, {names['sentence']}"
    return quote(Flag._meta.db_table), select, names


def flags_stored(*, visit_ids: Iterable[int]) -> dict[tuple[int, str], StoredFlag]:
    """The stored flags of these visits, by (visit, rule). In ascending order of the visits the
    look-ups walk the index in order: a rep's flags so read took half the time of a join on
    the rep's visits, which probes it at random."""
    table, select, f = _sql()
    stored = {}
    with connection.cursor() as cursor:
        for chunk in id_chunks(sorted(visit_ids)):
            where, params = id_in(f["visit"], chunk)
            cursor.execute(f"{select} FROM {table} WHERE {where}", params)
            for row in cursor.fetchall():
                flag = StoredFlag._make(row)
                stored[(flag.visit_id, flag.rule)] = flag
    return stored


def flags_diff(
    *, wanted: dict[tuple[int, str], Finding], stored: dict[tuple[int, str], StoredFlag], into: FlagChanges
) -> set[tuple[int, str]]:
    """Add to `into` what turns `stored` into `wanted`; returns the keys of the flags deleted
    or created (the visits whose state may follow)."""
    moved = set()
    for key, flag in stored.items():
        if key not in wanted:
            into.gone.append(flag.id)
            moved.add(key)
    for key, finding in wanted.items():
        old = stored.get(key)
        if old is None:
            into.fresh.append((finding.visit_id, finding.rule, json.dumps(finding.numbers), finding.sentence))
            moved.add(key)
        elif old.sentence != finding.sentence or json.loads(old.numbers) != finding.numbers:
            into.changed.append((old.id, json.dumps(finding.numbers), finding.sentence))
            into.touched.add(finding.visit_id)  # its risk may read the numbers
    into.touched.update(visit_id for visit_id, _ in moved)
    return moved


def changes_write(changes: FlagChanges) -> None:
    """Write the changes, each kind in the order of its table's or index's keys: 330,000 new
    flags took 2.3 s so against 6 s in the order of the reps (tried on the bench's data)."""
    table, _, f = _sql()
    numbers = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    with connection.cursor() as cursor:
        for chunk in id_chunks(sorted(changes.gone)):
            where, params = id_in(f["id"], chunk)
            cursor.execute(f"DELETE FROM {table} WHERE {where}", params)
        columns = f"{f['visit']}, {f['rule']}, {f['numbers']}, {f['sentence']}"
        if changes.fresh and connection.vendor == "postgresql":
            # COPY: a row-by-row INSERT is a statement for the server each, 330,000 of them in a
            # first build took 15 s; pages.visits_upsert does the same for the visits.
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in sorted(changes.fresh):
                    copy.write_row(row)
        elif changes.fresh:
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s)", sorted(changes.fresh))
        if changes.changed:
            cursor.executemany(
                f"UPDATE {table} SET {f['numbers']} = {numbers}, {f['sentence']} = %s WHERE {f['id']} = %s",
                [(text, sentence, flag_id) for flag_id, text, sentence in sorted(changes.changed)],
            )
    visits_flagged_set(flagged=changes.flagged, touched=changes.touched)


def rejected_of(*, rep_ids: Iterable[int]) -> dict[int, set[int]]:
    """The live visits of these reps whose latest decision rejects them, by rep (the risk counts
    them; the index of decided visits finds them)."""
    reps = sorted(set(rep_ids))
    found: dict[int, set[int]] = defaultdict(set)
    if reps:
        rows = Visit.objects.live().filter(review_status=DecisionKind.REJECT, rep_id__in=reps)
        for visit_id, rep_id in rows.values_list("id", "rep_id"):
            found[rep_id].add(visit_id)
    return found


def visits_flagged_set(*, flagged: dict[int, bool], touched: Collection[int] = ()) -> None:
    """The per-visit state that follows the flags, for the visits whose flags changed (`touched`)
    or whose Visit.flagged is wrong (`flagged`), read back from the flags as written: Visit.flagged
    (whether any rule flags it), which the tallies count for the reports (in bulk when there are
    many: tallies.flagged_in_bulk), Visit.flag_rules (a bit per rule, models.RULE_BITS), which
    the review queue filters on, and Visit.risk and risk_tier (rules.risk_score, from the flags'
    rules and numbers and the rep's rejected visits), which it sorts on. Only the rows whose
    values change are written."""
    table, _, f = _sql()
    quote = connection.ops.quote_name
    visits, key, rep = quote(Visit._meta.db_table), quote(column(Visit, "id")), quote(column(Visit, "rep"))
    numbers = f"t.{f['numbers']}" + ("::text" if connection.vendor == "postgresql" else "")
    far = FlagRule.FAR_FROM_CUSTOMER.value
    ids = sorted({*flagged, *touched})
    masks = dict.fromkeys(ids, 0)
    found: dict[int, list[tuple[str, dict]]] = defaultdict(list)
    rep_of: dict[int, int] = {}
    with connection.cursor() as cursor:
        for chunk in id_chunks(ids):
            where, params = id_in(f"t.{f['visit']}", chunk)
            cursor.execute(
                f"SELECT t.{f['visit']}, t.{f['rule']}, {numbers}, v.{rep} FROM {table} t "
                f"JOIN {visits} v ON v.{key} = t.{f['visit']} WHERE {where}",
                params,
            )
            for visit_id, rule, text, rep_id in cursor.fetchall():
                masks[visit_id] |= RULE_BITS.get(rule, 0)
                found[visit_id].append((rule, json.loads(text) if rule == far else {}))  # only far's are read
                rep_of[visit_id] = rep_id
    rejected = rejected_of(rep_ids=rep_of.values())
    rows = []
    given = risk_settings()
    for visit_id, mask in masks.items():
        if visit_id in found:
            others = rejected.get(rep_of[visit_id], set())
            score, tier = risk_score(flags=found[visit_id], rejected=len(others) - (visit_id in others), given=given)
        else:
            score, tier = 0, ""
        rows.append((visit_id, visit_id in found, mask, score, tier))
    with tallies.flagged_in_bulk(visit_ids=ids):
        visits_state_write(rows=rows)


def visits_state_write(*, rows: list[tuple[int, bool, int, int, str]]) -> None:
    """Write (visit id, flagged, flag_rules, risk, risk_tier) where any differs: on PostgreSQL in one
    statement from arrays (its statement triggers then run once: 313,000 visits' Visit.flagged
    took 18 s in statements of 5,000, 10 s in one); on SQLite a statement per set of values."""
    quote = connection.ops.quote_name
    visits, key = quote(Visit._meta.db_table), quote(column(Visit, "id"))
    names = [quote(column(Visit, name)) for name in ("flagged", "flag_rules", "risk", "risk_tier")]
    differs = " OR ".join(f"{visits}.{name} <> v.{name}" for name in names)
    if not rows:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            arrays = [list(values) for values in zip(*rows, strict=True)]
            cursor.execute(
                f"UPDATE {visits} SET {', '.join(f'{name} = v.{name}' for name in names)} "
                f"FROM unnest(%s::bigint[], %s::boolean[], %s::integer[], %s::smallint[], %s::varchar[]) "
                f"AS v({key}, {', '.join(names)}) WHERE {visits}.{key} = v.{key} AND ({differs})",
                arrays,
            )
            return
        groups: dict[tuple, list[int]] = defaultdict(list)
        for visit_id, *state in rows:
            groups[tuple(state)].append(visit_id)
        sets = ", ".join(f"{name} = %s" for name in names)
        changed = " OR ".join(f"{name} <> %s" for name in names)
        for values, group in groups.items():
            for chunk in id_chunks(group):
                where, params = id_in(key, chunk)
                cursor.execute(f"UPDATE {visits} SET {sets} WHERE {where} AND ({changed})", [*values, *params, *values])


def risk_refresh(*, rep_ids: Iterable[int]) -> None:
    """The risk of these reps' flagged visits (and of any visit with a risk left) computed again:
    after a decision changes whether one of their visits is rejected, or the RISK_* settings."""
    reps = sorted(set(rep_ids))
    if not reps:
        return
    with transaction.atomic():
        reps_lock(rep_ids=reps)  # already held after a decision or in a refresh: see reps_lock
        ids = list(
            Visit.objects.filter(rep_id__in=reps)
            .filter(Q(flagged=True) | Q(risk__gt=0) | ~Q(risk_tier=""))
            .values_list("id", flat=True)
        )
        visits_flagged_set(flagged={}, touched=ids)


def risk_explained(*, visit: Visit, flags: Iterable[Flag]) -> Risk:
    """A visit's risk with what made it (rules.visit_risk, for its page): from its flags and its
    rep's other rejected live visits (one count)."""
    found = [(flag.rule, flag.numbers) for flag in flags]
    if not found:
        return NO_RISK
    others = (
        Visit.objects.live().filter(rep_id=visit.rep_id, review_status=DecisionKind.REJECT).exclude(id=visit.id).count()
    )
    return visit_risk(flags=found, rejected=others)

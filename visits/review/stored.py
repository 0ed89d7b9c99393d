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

from django.db import connection

from visits.ingest import tallies
from visits.models import RULE_BITS, Flag, Visit, column
from visits.review.rules import Finding
from visits.review.timeline import id_chunks, id_in


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
    touched: set[int] = field(default_factory=set)  # visits that gain or lose a flag (their flag_rules follow)

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


def visits_flagged_set(*, flagged: dict[int, bool], touched: Collection[int] = ()) -> None:
    """The per-visit state that follows the flags, for the visits whose flags changed (`touched`)
    or whose Visit.flagged is wrong (`flagged`), read back from the flags as written: Visit.flagged
    (whether any rule flags it), which the tallies count for the reports (in bulk when there are
    many: tallies.flagged_in_bulk), and Visit.flag_rules (a bit per rule, models.RULE_BITS), which
    the review queue filters on. Only the rows whose values change are written."""
    table, _, f = _sql()
    ids = sorted({*flagged, *touched})
    masks = dict.fromkeys(ids, 0)
    has_flags: set[int] = set()
    with connection.cursor() as cursor:
        for chunk in id_chunks(ids):
            where, params = id_in(f["visit"], chunk)
            cursor.execute(f"SELECT {f['visit']}, {f['rule']} FROM {table} WHERE {where}", params)
            for visit_id, rule in cursor.fetchall():
                masks[visit_id] |= RULE_BITS.get(rule, 0)
                has_flags.add(visit_id)
    groups: dict[tuple[bool, int], list[int]] = defaultdict(list)
    for visit_id, mask in masks.items():
        groups[(visit_id in has_flags, mask)].append(visit_id)
    quote = connection.ops.quote_name
    visits, key = quote(Visit._meta.db_table), quote(column(Visit, "id"))
    flag, rules = quote(column(Visit, "flagged")), quote(column(Visit, "flag_rules"))
    with connection.cursor() as cursor, tallies.flagged_in_bulk(visit_ids=ids):
        for (is_flagged, mask), group in groups.items():
            for chunk in id_chunks(group):
                where, params = id_in(key, chunk)
                cursor.execute(
                    f"UPDATE {visits} SET {flag} = %s, {rules} = %s WHERE {where} AND ({flag} <> %s OR {rules} <> %s)",
                    [is_flagged, mask, *params, is_flagged, mask],
                )

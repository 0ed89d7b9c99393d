"""Flags frozen by the retention rule (geo/retention.py): the refresh, the rebuild and every check
leave them as they stood, since the positions they were computed from are gone.

Frozen are every flag of a live visit whose position was removed (Visit.coordinates_removed_at),
and the few flags of visits still located that read a removed position when it went: the travel
flag of a rep's first located visit after the removed ones (its leg to the last of them) and the
coordinate-reuse flags at a spot where a removed visit was. Those carry FROZEN in their numbers.
Everything else is still computed by the rules from what is stored, so "the stored flags equal a
recomputation" holds for every flag that is not frozen, and the frozen ones stay as they stood.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from django.db import connection

from visits.models import Visit, column
from visits.review.rules import Finding

FROZEN = "frozen"  # the key set to true in a frozen flag's numbers (no rule writes it)
_MARK = f'"{FROZEN}"'


def numbers_frozen(numbers: str) -> bool:
    """Whether a flag's numbers (its JSON text) carry the frozen mark: a substring test first, as a
    rebuild asks it of every stored flag."""
    return _MARK in numbers and json.loads(numbers).get(FROZEN) is True


def removed_of(*, visit_ids: Iterable[int]) -> set[int]:
    """The live visits among these whose position the retention rule removed (by their ids)."""
    from visits.review.timeline import id_chunks, id_in  # timeline reads this module's rule

    quote = connection.ops.quote_name
    table = quote(Visit._meta.db_table)
    key, removed, deleted = (quote(column(Visit, n)) for n in ("id", "coordinates_removed_at", "deleted_at"))
    found: set[int] = set()
    with connection.cursor() as cursor:
        for chunk in id_chunks(sorted(set(visit_ids))):
            where, params = id_in(key, chunk)
            cursor.execute(
                f"SELECT {key} FROM {table} WHERE {where} AND {removed} IS NOT NULL AND {deleted} IS NULL", params
            )
            found.update(row[0] for row in cursor.fetchall())
    return found


def frozen_keys(
    *, stored: Mapping[tuple[int, str], object], removed: AbstractSet[int], dead: AbstractSet[int] = frozenset()
) -> set[tuple[int, str]]:
    """The (visit, rule) keys of `stored` (StoredFlags, whose `numbers` is JSON text) that are frozen:
    every flag of a visit in `removed`, and the flags marked FROZEN, but none of a visit in `dead`
    (deleted in Sell: its flags go, as any deleted visit's do)."""
    return {
        key
        for key, flag in stored.items()
        if key[0] not in dead and (key[0] in removed or numbers_frozen(flag.numbers))  # type: ignore[attr-defined]
    }


def findings_frozen(
    *,
    wanted: Mapping[tuple[int, str], Finding],
    stored: Mapping[tuple[int, str], object],
    removed: AbstractSet[int],
    dead: AbstractSet[int] = frozenset(),
) -> dict[tuple[int, str], Finding]:
    """The flags the visits should have: the rules' findings (`wanted`), except that a visit in
    `removed` (live) has exactly its stored flags, and a stored flag marked FROZEN stays as it is,
    unless its visit is in `dead`."""
    frozen = frozen_keys(stored=stored, removed=removed, dead=dead)
    kept = {key: f for key, f in wanted.items() if key[0] not in removed and key not in frozen}
    for key in frozen:
        flag = stored[key]
        kept[key] = Finding(key[0], key[1], json.loads(flag.numbers), flag.sentence)  # type: ignore[attr-defined]
    return kept

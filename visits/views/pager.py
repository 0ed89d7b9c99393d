"""Keyset pagination for the long lists (the visits list, the review queue): a page starts after
(or ends before) a visit named by its id, `?after=<id>` / `?before=<id>`, so a deep page costs
what the first does (no OFFSET), and a link keeps pointing at the same place while new visits
arrive.

A list is ordered by an optional group (rep, outcome, status or risk, in the order of `groups`), then
by visited_at and id, newest first (or oldest first). Each group's rows are read from its own
index range with a LIMIT: the rest of the cursor's group in one query, then the heads of the next
FIRST_BATCH groups in one statement (a UNION ALL) and their rows in another, and only if the
page is still not full, the heads of all the other groups at once: a handful of queries a page
however many rows it spans (with more than MAX_BATCH groups, two more per MAX_BATCH).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet

from visits.models import Visit
from visits.reports.filters import id_coerce

# The sortable groups: the field a group value sits in.
GROUP_FIELDS = {"rep": "rep_id", "outcome": "outcome_id", "status": "verification_status", "risk": "risk"}
FIRST_BATCH = 8  # the groups read first after the cursor's: a page usually ends within them
MAX_BATCH = 400  # the most groups one statement reads (SQLite's limit is 500 SELECTs in a UNION)


class CursorError(ValueError):
    """The `after` or `before` visit is not in the list (a stale or edited link)."""


@dataclass(frozen=True)
class Order:
    group: str | None = None  # a GROUP_FIELDS key, or None: time order alone
    groups_descending: bool = False
    newest_first: bool = True


@dataclass
class KeysetPage:
    object_list: list[Visit]
    newer: int | None  # the first row's id when rows come before it (the "newer" link: ?before=)
    older: int | None  # the last row's id when rows come after it (the "older" link: ?after=)

    @property
    def has_other_pages(self) -> bool:
        return self.newer is not None or self.older is not None


def _value(visit: Visit, group: str) -> Any:
    return getattr(visit, GROUP_FIELDS[group])


def _in_group(rows: QuerySet, group: str | None, value: Any) -> QuerySet:
    if group is None:
        return rows
    field = GROUP_FIELDS[group]
    return rows.filter(**{f"{field}__isnull": True} if value is None else {field: value})


def _past(rows: QuerySet, cursor: Visit, *, newest_first: bool) -> QuerySet:
    """The rows after `cursor` in time order: a range on visited_at (which the indexes serve) and
    the ties at the cursor's instant cut by id."""
    at, vid = cursor.visited_at, cursor.id
    if newest_first:
        return rows.filter(visited_at__lte=at).exclude(visited_at=at, id__gte=vid)
    return rows.filter(visited_at__gte=at).exclude(visited_at=at, id__lte=vid)


def _ordered(rows: QuerySet, *, newest_first: bool) -> QuerySet:
    return rows.order_by("-visited_at", "-id") if newest_first else rows.order_by("visited_at", "id")


def _walk(visits: QuerySet, *, order: Order, groups: list, cursor: Visit | None, forward: bool, want: int) -> list:
    """Up to `want` rows after `cursor` (from the start if None), in the list's order if
    `forward`, else in reverse (the rows before it, nearest first)."""
    newest_first = order.newest_first == forward
    if order.group is None:
        rows = visits if cursor is None else _past(visits, cursor, newest_first=newest_first)
        # The ids first, then their rows: the ids can come from an index alone (PostgreSQL then
        # filters without visiting the table for every row it passes over).
        ids = list(_ordered(rows, newest_first=newest_first).values_list("id", flat=True)[:want])
        by_id = visits.in_bulk(ids)
        return [by_id[vid] for vid in ids if vid in by_id]
    walk = list(groups) if order.groups_descending != forward else list(reversed(groups))
    found: list[Visit] = []
    if cursor is not None:
        value = _value(cursor, order.group)
        if value not in walk:
            raise CursorError(f"visit {cursor.id} is not in this list")
        start = walk.index(value)
        rows = _past(_in_group(visits, order.group, value), cursor, newest_first=newest_first)
        found = list(_ordered(rows, newest_first=newest_first)[:want])
        walk = walk[start + 1 :]
    batch = FIRST_BATCH
    while walk and len(found) < want:
        chosen, walk = walk[:batch], walk[batch:]
        batch = MAX_BATCH
        need = want - len(found)
        ids = _group_heads(visits, order.group, chosen, newest_first, need)
        by_id = visits.in_bulk(ids)
        found += [by_id[vid] for vid in ids if vid in by_id]
    return found


def _group_heads(visits: QuerySet, group: str, values: list, newest_first: bool, need: int) -> list[int]:
    """The ids of the first `need` rows of `values`' groups taken in turn, each group's in time
    order: one statement, a UNION ALL of one LIMIT query per group, each read from its own index
    range (an OR of them made PostgreSQL test every row against every group)."""
    parts, params = [], []
    compiled: dict[type, tuple[str, tuple, int]] = {}
    for rank, value in enumerate(values):
        try:
            sql, head_params = _head_sql(visits, group, value, newest_first, need, compiled)
        except EmptyResultSet:  # a filter on no ids (a team and reps that do not meet): no rows
            continue
        parts.append(f"SELECT {rank}, head{rank}.* FROM ({sql}) AS head{rank}")
        params.extend(head_params)
    if not parts:
        return []
    with connections[visits.db].cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        rows = cursor.fetchall()
    # Each group's rows by (visited_at, id), as the database wrote them (text on SQLite: the same
    # fixed layout, so it sorts as the times do).
    parts: dict[int, list[tuple]] = {}
    for rank, at, visit_id in rows:
        parts.setdefault(rank, []).append((at, visit_id))
    ordered: list[int] = []
    for rank in sorted(parts):
        ordered += [visit_id for _, visit_id in sorted(parts[rank], reverse=newest_first)]
        if len(ordered) >= need:
            break
    return ordered[:need]


# A value no group holds, per type: a group's head query is compiled once with it and reused for
# every value of that type (the queue's risk order reads up to 101 groups: compiling each was most
# of a page's time).
# (-32761: negative, as no Sell id is, and within a SmallIntegerField's range, as Visit.risk is:
# outside it, Django compiles the lookup to an empty result.)
_SENTINELS: dict[type, Any] = {int: -32761, str: "\x00pager-sentinel"}


def _head_sql(visits: QuerySet, group: str, value: Any, newest_first: bool, need: int, compiled: dict) -> tuple:
    """The SQL and parameters of one group's head query (its first `need` rows' visited_at and id)."""

    def sql_of(of_value: Any) -> tuple[str, tuple]:
        head = _ordered(_in_group(visits, group, of_value), newest_first=newest_first).values_list("visited_at", "id")
        return head[:need].query.sql_with_params()

    sentinel = _SENTINELS.get(type(value))
    if sentinel is None:  # None (IS NULL), or a type without a sentinel: compiled for itself
        return sql_of(value)
    if type(value) not in compiled:
        try:
            sql, head_params = sql_of(sentinel)
        except EmptyResultSet:
            return sql_of(value)
        places = [i for i, p in enumerate(head_params) if p == sentinel]
        if len(places) != 1:  # not where it can be told apart: compile every value for itself
            return sql_of(value)
        compiled[type(value)] = (sql, tuple(head_params), places[0])
    sql, head_params, place = compiled[type(value)]
    return sql, (*head_params[:place], value, *head_params[place + 1 :])


def keyset_page(
    visits: QuerySet, *, order: Order, groups: list | None = None, after: int | None, before: int | None, size: int
) -> KeysetPage:
    """The page of `visits` (already filtered, with select_related as the page needs) after the
    visit `after`, before the visit `before`, or the first. `groups`: every group value the list
    can hold, ascending (the reps by name, say), when `order.group` is set."""
    groups = groups or []
    cursor_id = after if after is not None else before
    cursor = None
    if cursor_id is not None:
        cursor = visits.filter(id=cursor_id).first()
        if cursor is None:
            raise CursorError(f"visit {cursor_id} is not in this list")
    if before is not None:
        rows = _walk(visits, order=order, groups=groups, cursor=cursor, forward=False, want=size + 1)
        if len(rows) > size:  # more before these: a page in the middle
            page = list(reversed(rows[:size]))
            return KeysetPage(page, newer=page[0].id, older=page[-1].id)
        cursor = None  # within a page of the start: show the first page, whole
    rows = _walk(visits, order=order, groups=groups, cursor=cursor, forward=True, want=size + 1)
    page = rows[:size]
    return KeysetPage(
        page, newer=page[0].id if cursor is not None and page else None, older=page[-1].id if len(rows) > size else None
    )


def cursor_params(request) -> tuple[dict[str, int | None], list[str]]:
    """`after` and `before` from the query string, as ids ({"after": .., "before": ..}), and the
    problems with them, one line each (for the 400 page)."""
    cursors: dict[str, int | None] = {"after": None, "before": None}
    problems = []
    for name in cursors:
        text = request.GET.get(name, "")
        if text:
            try:
                cursors[name] = id_coerce(text)
            except ValueError:
                problems.append(f"{name}: must be the id of a visit in this list")
    if cursors["after"] is not None and cursors["before"] is not None:
        problems.append("after, before: give one of them, not both")
    return cursors, problems

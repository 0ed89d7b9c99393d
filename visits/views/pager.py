"""Keyset pagination for the long lists (the visits list, the review queue): a page starts after
(or ends before) a visit named by its id, `?after=<id>` / `?before=<id>`, so a deep page costs
what the first does (no OFFSET), and a link keeps pointing at the same place while new visits
arrive.

A list is ordered by an optional group (rep, outcome or status, in the order of `groups`), then
by visited_at and id, newest first (or oldest first). Each group's rows are read from its own
index range with a LIMIT; the groups after the cursor's are read a growing batch at a time (1,
4, 16... groups per query), so a page takes a few queries however many rows or groups it spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from visits.models import Visit
from visits.reports.filters import id_coerce

# The sortable groups: the field a group value sits in.
GROUP_FIELDS = {"rep": "rep_id", "outcome": "outcome_id", "status": "verification_status"}
FIRST_BATCH, BATCH_GROWTH = 4, 4


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
        return list(_ordered(rows, newest_first=newest_first)[:want])
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
        need = want - len(found)
        # One query for the batch: each group's first `need` rows, by their own LIMIT subquery.
        heads = Q()
        for value in chosen:
            head = _ordered(_in_group(visits, order.group, value), newest_first=newest_first)
            heads |= Q(id__in=head.values("id")[:need])
        rank = {value: i for i, value in enumerate(chosen)}
        rows = list(visits.filter(heads))
        sign = -1 if newest_first else 1
        rows.sort(key=lambda v: (rank[_value(v, order.group)], sign * v.visited_at.timestamp(), sign * v.id))
        found += rows[:need]
        batch *= BATCH_GROWTH
    return found


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

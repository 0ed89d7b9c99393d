"""The review tally: the live flagged visits per rep, rule bits, risk tier and review status
(ReviewTally), from which the queue counted per rep (review/queue.py: rep_queues) and the rules'
precision (review/precision.py) read a few thousand rows instead of every flagged visit.

Kept like the tallies (tallies.py): SQLite row triggers whose conditions fail at once for a visit
not flagged (every new visit: ingestion does not flag), PostgreSQL statement triggers over the
transition tables; rebuilt by tallies.tallies_rebuild with the other tallies, and built after a
`migrate` that left it empty beside flagged visits (migration 0020). On SQLite, many visits flagged
at once (tallies.flagged_in_bulk) move it by one grouped statement, its triggers dropped meanwhile.

It counts no dates, outcomes, statuses or resource types: a page filtered on one of them counts
the visits themselves (review_filter says when the tally answers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection as default_connection
from django.db.models import F, Sum
from django.db.models.lookups import GreaterThan

from visits import triggers
from visits.models import ReviewTally, Visit, column, rules_mask
from visits.reports.scope import Scope

TABLE = ReviewTally._meta.db_table
VISIT_TABLE = Visit._meta.db_table
VISIT = {
    name: column(Visit, name)
    for name in ("id", "rep", "flag_rules", "risk_tier", "review_status", "flagged", "deleted_at")
}
KEY = tuple(f.column for f in ReviewTally._meta.pk_fields)  # rep_id, flag_rules, risk_tier, review_status
COUNT = column(ReviewTally, "visits")
GROUPS = ", ".join(str(i) for i in range(1, len(KEY) + 1))


def values(row: str = "") -> list[str]:
    """SQL for the key's values from a visit row (`row` with its dot, or the bare columns)."""
    return [
        f"{row}{VISIT['rep']}",
        f"{row}{VISIT['flag_rules']}",
        f"coalesce({row}{VISIT['risk_tier']}, '')",
        f"coalesce({row}{VISIT['review_status']}, '')",
    ]


def named(row: str = "") -> str:
    """The key's values from a visit row, each named as its tally column (SQLite's subqueries take
    no list of column names)."""
    return ", ".join(f"{value} AS {key}" for value, key in zip(values(row), KEY, strict=True))


def counted(row: str = "") -> str:
    """SQL true for a visit row the tally counts: live and flagged."""
    return f"{row}{VISIT['deleted_at']} IS NULL AND {row}{VISIT['flagged']}"


def rebuild_sql() -> str:
    return (
        f"INSERT INTO {TABLE} ({', '.join(KEY)}, {COUNT}) SELECT {', '.join(values())}, count(*) "
        f"FROM {VISIT_TABLE} WHERE {counted()} GROUP BY {GROUPS}"
    )


def sqlite_triggers() -> list[str]:
    add = (
        f"INSERT INTO {TABLE} ({', '.join(KEY)}, {COUNT}) VALUES ({', '.join(values('NEW.'))}, 1) "
        f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {COUNT} = {COUNT} + 1;"
    )
    remove = (
        f"UPDATE {TABLE} SET {COUNT} = {COUNT} - 1 WHERE "
        + " AND ".join(f"{k} = {v}" for k, v in zip(KEY, values("OLD."), strict=True))
        + ";"
    )
    moved = " OR ".join(
        f"NEW.{VISIT[name]} IS NOT OLD.{VISIT[name]}" for name in ("rep", "flag_rules", "risk_tier", "review_status")
    )
    # Each condition starts with the visit's deletion and flag: a new visit (not flagged) stops there.
    return [
        f"CREATE TRIGGER visits_review_insert AFTER INSERT ON {VISIT_TABLE} WHEN {counted('NEW.')}\nBEGIN {add} END",
        f"CREATE TRIGGER visits_review_update_old AFTER UPDATE ON {VISIT_TABLE}\n"
        f"WHEN {counted('OLD.')} AND (NOT ({counted('NEW.')}) OR {moved})\nBEGIN {remove} END",
        f"CREATE TRIGGER visits_review_update_new AFTER UPDATE ON {VISIT_TABLE}\n"
        f"WHEN {counted('NEW.')} AND (NOT ({counted('OLD.')}) OR {moved})\nBEGIN {add} END",
        f"CREATE TRIGGER visits_review_delete AFTER DELETE ON {VISIT_TABLE} WHEN {counted('OLD.')}\nBEGIN {remove} END",
    ]


def delta_sql(delta: str) -> str:
    """The upsert moving the tally by `delta`, a SELECT of rows (the key's columns, n)."""
    columns = ", ".join(KEY)
    return (
        f"INSERT INTO {TABLE} ({columns}, {COUNT}) SELECT {columns}, sum(n) "
        f"FROM ({delta}) AS delta WHERE true GROUP BY {GROUPS} HAVING sum(n) <> 0 "
        f"ON CONFLICT ({columns}) DO UPDATE SET {COUNT} = {TABLE}.{COUNT} + excluded.{COUNT}"
    )


def _pg_delta(tables: list[tuple[str, int]]) -> str:
    delta = " UNION ALL ".join(
        f"SELECT {named()}, {sign} * count(*) AS n FROM {table} WHERE {counted()} GROUP BY {GROUPS}"
        for table, sign in tables
    )
    return delta_sql(delta) + ";"


def postgres_triggers() -> list[str]:
    return triggers.statement_triggers(prefix="visits_review", table=VISIT_TABLE, body=_pg_delta)


def _statements(vendor: str) -> list[str]:
    return postgres_triggers() if vendor == "postgresql" else sqlite_triggers()


def triggers_drop(*, connection=default_connection) -> None:
    triggers.trigger_set_drop(connection=connection, trigger_set=TRIGGER_SET)


def triggers_install(*, connection=default_connection) -> None:
    triggers.trigger_set_install(connection=connection, trigger_set=TRIGGER_SET)


def bulk_delta_sql(*, snapshot: str) -> str:
    """For tallies.flagged_in_bulk (SQLite, this set's triggers dropped): the tally moved from the
    visits as they were (`snapshot`: a table of the live visits' id, was (flagged), rep,
    flag_rules, risk_tier and review_status as the tally keys them, in KEY's names, before the write)
    to the same visits as they are. The visits are looked up from the snapshot (CROSS JOIN:
    SQLite's planner otherwise scans every visit)."""
    was = f"SELECT {', '.join(f'w.{key}' for key in KEY)}, -1 AS n FROM {snapshot} w WHERE w.was"
    now = (
        f"SELECT {named('v.')}, 1 AS n FROM {snapshot} w CROSS JOIN {VISIT_TABLE} v "
        f"ON v.{VISIT['id']} = w.id WHERE {counted('v.')}"
    )
    return delta_sql(f"{was} UNION ALL {now}")


def review_tally_rebuild(*, connection=default_connection) -> None:
    """The tally counted afresh from the visits, its triggers off meanwhile; inside
    tallies.tallies_rebuild's transaction, or after a `migrate` (review_tally_unbuilt)."""
    triggers_drop(connection=connection)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")
        cursor.execute(rebuild_sql())
    triggers_install(connection=connection)


def review_tally_unbuilt(*, connection=default_connection) -> bool:
    """True when the tally counts nothing while a live visit is flagged: never built (migration
    0020 adds it empty; its triggers count from then on, the visits flagged before need a build)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {TABLE} WHERE {COUNT} <> 0 LIMIT 1")
        if cursor.fetchone():
            return False
        cursor.execute(f"SELECT 1 FROM {VISIT_TABLE} WHERE {counted()} LIMIT 1")
        return cursor.fetchone() is not None


# --- Reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewFilter:
    """A choice of flagged visits that the tally can count: by rep (None: every rep), rule (one
    of them flags it), tier and review state (queue.REVIEW_STATES: "awaiting", a decision's
    kind, or "all")."""

    reps: frozenset[int] | None = None
    rules: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    state: str = "all"


def review_filter(
    *,
    scope: Scope,
    reps: frozenset[int] | None,
    rules: Iterable[str] | None = None,
    tiers: Iterable[str] | None = None,
    state: str = "all",
) -> ReviewFilter | None:
    """The tally's filter for a scope's flagged visits (the user's visible `reps` from
    visits.access, None for every rep) of these rules, tiers and state; None when the scope
    filters on what the tally does not keep (dates, outcomes, statuses, a resource type).

    A tier is read as the visits' risk_tier; the queue reads it as that and its range of risks
    (queue.flagged_visits), the same visits while each tier is its risk's, as the flags store
    them (after a change of the RISK_* settings, once `flags_rebuild` has run)."""
    if scope.start or scope.end or scope.outcomes is not None or scope.statuses is not None or scope.resource_type:
        return None
    chosen = scope.reps
    if reps is not None:
        chosen = reps if chosen is None else chosen & reps
    return ReviewFilter(reps=chosen, rules=tuple(rules or ()), tiers=tuple(tiers or ()), state=state)


def review_counts(*, chosen: ReviewFilter, by: tuple[str, ...]) -> list[tuple]:
    """(the `by` columns of ReviewTally..., visits) for the flagged visits `chosen`, rows of zero
    left out: what a GROUP BY of those visits by the same columns counts (review_status "" for
    none)."""
    rows = ReviewTally.objects.filter(visits__gt=0)
    if chosen.reps is not None:
        rows = rows.filter(rep_id__in=chosen.reps)
    if chosen.tiers:
        rows = rows.filter(risk_tier__in=chosen.tiers)
    if chosen.rules:
        rows = rows.filter(GreaterThan(F("flag_rules").bitand(rules_mask(list(chosen.rules))), 0))
    if chosen.state == "awaiting":
        rows = rows.filter(review_status="")
    elif chosen.state != "all":
        rows = rows.filter(review_status=chosen.state)
    grouped = rows.order_by().values_list(*by).annotate(n=Sum("visits"))
    return [row for row in grouped if row[-1]]


# Installed after the tallies' set; its rebuild runs in theirs (tallies.tallies_ensure).
TRIGGER_SET = triggers.TriggerSet(
    label="review tally",
    table=VISIT_TABLE,
    names=triggers.tally_trigger_names("visits_review"),
    statements=_statements,
    needs=(TABLE,),
)

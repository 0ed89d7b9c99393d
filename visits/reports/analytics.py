"""Read-side selectors: report rows, rates and trends over a filtered set of visits.

Rates are shares of all the visits in the row (every status counts in the denominator). Distances:
the far visits (any status, more than DISTANCE_FAR_KM from the customer) are counted exactly; the
median and 90th percentile of the too-far visits' distances are read from log-spaced bins
(ingest/distance_tally.py), within distance_tally.PRECISION of the nearest-rank value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Case, Count, DateField, F, Func, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, TruncWeek

from visits.ingest import distance_tally
from visits.ingest.tallies import far_metres, tallies_current
from visits.models import (
    AllTimeTally,
    DecisionKind,
    DistanceTally,
    FlagRule,
    MonthTally,
    Outcome,
    OutcomeDistanceTally,
    Rep,
    RepDistanceTally,
    StatusTally,
    VerificationStatus,
    WeekTally,
    YearTally,
    column,
)
from visits.reports.scope import Scope

MIN_VISITS_FOR_RANKING = 20  # the overview ranks reps by too-far rate only from this many visits


@dataclass
class Counts:
    visits: int = 0
    verified: int = 0
    resource_location_too_far: int = 0
    location_unknown: int = 0
    location_services_disabled: int = 0
    flagged: int = 0  # visits with at least one flag
    rejected: int = 0  # visits whose latest decision is a rejection
    far: int = 0  # visits more than DISTANCE_FAR_KM from their customer
    # The too-far visits' distances (from bins: see the module); None when unknown. Not summed by
    # `add`: a percentile of a sum of rows is read again for it (matrix()).
    too_far_median_m: float | None = None
    too_far_p90_m: float | None = None

    def add(self, other: Counts) -> None:
        self.visits += other.visits
        self.flagged += other.flagged
        self.rejected += other.rejected
        self.far += other.far
        self.verified += other.verified
        self.resource_location_too_far += other.resource_location_too_far
        self.location_unknown += other.location_unknown
        self.location_services_disabled += other.location_services_disabled

    def rate(self, count: int) -> float | None:
        return count / self.visits if self.visits else None

    @property
    def verified_rate(self) -> float | None:
        return self.rate(self.verified)

    @property
    def too_far_rate(self) -> float | None:
        return self.rate(self.resource_location_too_far)

    @property
    def unknown_rate(self) -> float | None:
        return self.rate(self.location_unknown)

    @property
    def disabled_rate(self) -> float | None:
        return self.rate(self.location_services_disabled)


@dataclass
class Row:
    """One report row: who or what (id and name) and its counts."""

    id: int | None
    name: str
    counts: Counts


@dataclass
class Cell:
    visits: int
    too_far: int
    counts: Counts  # the cell's counts, its distances with them

    @property
    def too_far_rate(self) -> float | None:
        return self.too_far / self.visits if self.visits else None


SORTS = (
    "name", "visits", *VerificationStatus.values, "verified_rate", "too_far_rate", "flagged", "rejected",
    "too_far_median_m", "too_far_p90_m", "far",
)  # fmt: skip


def rows_sort(rows: list[Row], *, sort: str) -> list[Row]:
    """Sort by a column name, '-name' for descending; empty rates sort last either way."""
    key, descending = sort.lstrip("-"), sort.startswith("-")
    if key == "name":
        return sorted(rows, key=lambda r: (r.name.casefold(), r.id or 0), reverse=descending)
    present = [r for r in rows if getattr(r.counts, key) is not None]
    missing = [r for r in rows if getattr(r.counts, key) is None]
    present.sort(key=lambda r: (getattr(r.counts, key), r.name.casefold()), reverse=descending)
    return present + missing


# --- Counting ------------------------------------------------------------------------------
#
# Counts come from the tallies (tallies.py) for the whole years and months (or weeks) inside the range,
# plus the visits themselves for the days at its edges, read from the covering index on
# (visited_at, ...). With no tallies for today's DISPLAY_TIME_ZONE, everything is counted
# from the visits.


class WeekStart(Func):
    """The Monday of a date's week, in SQL."""

    output_field = DateField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="date(%(expressions)s, '-6 days', 'weekday 1')", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="date_trunc('week', %(expressions)s)::date", **extra)


@dataclass(frozen=True)
class Grain:
    tally: type[YearTally] | type[MonthTally] | type[WeekTally]
    period: str  # the tally's period column
    first: Callable[[date], date]  # day -> the first day of its period
    following: Callable[[date], date]  # a period's first day -> the next period's first day


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


YEARS = Grain(YearTally, "year", lambda d: d.replace(month=1, day=1), lambda d: d.replace(year=d.year + 1))
MONTHS = Grain(MonthTally, "month", lambda d: d.replace(day=1), _next_month)
WEEKS = Grain(WeekTally, "week", lambda d: d - timedelta(days=d.weekday()), lambda d: d + timedelta(days=7))
ONE_DAY = timedelta(days=1)


def range_split(*, start: date | None, end: date | None, grain: Grain) -> tuple[tuple | None, list[tuple]]:
    """[start, end] as (first, last) period starts read from the tally (None: no whole period;
    either end None: open) and the (from, to) day ranges left at the edges."""
    first = start if start is None or grain.first(start) == start else grain.following(grain.first(start))
    if end is None:
        last = None
    else:
        period = grain.first(end)
        if grain.following(period) - ONE_DAY != end:  # the period holding `end` is not whole
            period = grain.first(period - ONE_DAY)
            end_edge = (grain.following(period), end)
        else:
            end_edge = None
        last = period
    if first is not None and last is not None and first > last:
        return None, [(start, end)]
    edges = []
    if start is not None and first is not None and first != start:  # first is set whenever start is
        edges.append((start, first - ONE_DAY))
    if end is not None and end_edge is not None:
        edges.append(end_edge)
    return (first, last), edges


def range_plan(
    *, start: date | None, end: date | None, grains: tuple[Grain, ...]
) -> tuple[list[tuple[Grain, tuple]], list[tuple]]:
    """[start, end] as tally reads, coarsest grain first, and the day ranges left over."""
    periods, edges = range_split(start=start, end=end, grain=grains[0])
    reads = [(grains[0], periods)] if periods is not None else []
    if len(grains) == 1:
        return reads, edges
    days = []
    for low, high in edges:
        finer, left = range_plan(start=low, end=high, grains=grains[1:])
        reads += finer
        days += left
    return reads, days


StatusRow = tuple[tuple, str, int, int, int]


def status_rows(*, scope: Scope, by: tuple[str, ...]) -> Iterator[StatusRow]:
    """(key, status, visits, flagged visits, far visits) rows; `by` names the key's parts among
    "rep", "outcome", "week" (weekly rows count no far visits: the week tally has none)."""
    if not tallies_current():
        yield from _visit_rows(
            scope.visits(), by=by, week=TruncWeek("visited_at", tzinfo=ZoneInfo(settings.DISPLAY_TIME_ZONE))
        )
        return
    weekly = "week" in by
    if weekly and (scope.outcomes is not None or scope.resource_type or "outcome" in by):
        yield from _visit_rows(_days(scope, scope.start, scope.end), by=by)  # dimensions the week tally lacks
        return
    if not weekly and _all_time(scope):  # the coarsest tally
        yield from _tally_rows(scope, tally=AllTimeTally, period=None, periods=(None, None), by=by)
        return
    reads, days = range_plan(start=scope.start, end=scope.end, grains=(WEEKS,) if weekly else (YEARS, MONTHS))
    for low, high in days:
        yield from _visit_rows(_days(scope, low, high), by=by)
    for grain, periods in reads:
        yield from _tally_rows(scope, tally=grain.tally, period=grain.period, periods=periods, by=by)


def _all_time(scope: Scope) -> bool:
    """Whether the scope's range is open at both ends: read from the all-time tallies."""
    return scope.start is None and scope.end is None


def _days(scope: Scope, low: date | None, high: date | None) -> QuerySet:
    """Live visits in scope on the days low..high: bounded on visited_at (the same visits as
    local_day low..high, as the tallies are current), which the covering index leads with."""
    return replace(scope, start=low, end=high).visits()


def _visit_rows(visits: QuerySet, *, by: tuple[str, ...], week=None) -> Iterator[StatusRow]:
    columns = {"rep": "rep_id", "outcome": "outcome_id", "week": "week_start"}
    rows = visits.order_by()
    if "week" in by:
        rows = rows.annotate(week_start=week if week is not None else WeekStart("local_day"))
    names = [columns[b] for b in by]
    counted = {
        "n": Count("verification_status"),
        "f": Count("verification_status", filter=Q(flagged=True)),
        "far": Count("verification_status", filter=Q(customer_distance_m__gt=far_metres())),
    }
    grouped = rows.values(*names, "verification_status").annotate(**counted)
    if "week" not in by:  # integers and text: plain tuples from the cursor (a 30-day matrix: 6,500 rows)
        for *values, status, n, flagged, far in _cursor_rows(
            grouped.values_list(*names, "verification_status", "n", "f", "far")
        ):
            yield tuple(values), status, n, flagged, far
        return
    for row in grouped:  # the ORM makes the weeks dates
        key = tuple(row[n].date() if isinstance(row[n], datetime) else row[n] for n in names)
        yield key, row["verification_status"], row["n"], row["f"], row["far"]


def _tally_rows(
    scope: Scope, *, tally: type[StatusTally | WeekTally], period: str | None, periods: tuple, by: tuple[str, ...]
) -> Iterator[StatusRow]:
    """The tally's rows summed by `by` and status, its periods first..last (period None: all time)."""
    first, last = periods
    weekly = tally is WeekTally
    rows = scope._narrow(tally._default_manager.all(), rep="rep_id", outcome=None if weekly else "outcome_id")
    if first is not None:
        rows = rows.filter(**{f"{period}__gte": first})
    if last is not None:
        rows = rows.filter(**{f"{period}__lte": last})
    names = [{"rep": "rep_id", "outcome": "outcome_id", "week": period or ""}[b] for b in by]
    sums = {"n": Sum("visits"), "f": Sum("flagged"), "far": Value(0) if weekly else Sum("far")}
    outcome = names.index("outcome_id") if "outcome_id" in names else None
    grouped = (
        rows.order_by().values(*names, "verification_status").annotate(**sums)
        .values_list(*names, "verification_status", "n", "f", "far")
    )  # fmt: skip
    # The ORM makes SQLite's text dates dates (a few hundred weeks); integers and text come as plain
    # tuples from the cursor, for the matrix's ten thousand rows.
    found: Iterable[tuple] = grouped if weekly else _cursor_rows(grouped)
    for *key, status, n, flagged, far in found:
        if n:
            if outcome is not None and key[outcome] == 0:
                key[outcome] = None
            yield tuple(key), status, n, flagged, far


def _cursor_rows(rows: QuerySet) -> list[tuple]:
    """A values_list queryset's rows as the cursor gives them, without the ORM's per-row
    converters (a tenth of the matrix's time); for integer and text columns only."""
    try:
        sql, params = rows.query.sql_with_params()
    except EmptyResultSet:  # a filter on no ids (a team and reps that do not meet): no rows
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


class DistanceBin(Func):
    """A distance's bin of the distance tally, in SQL (distance_tally.bin_sql)."""

    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra):
        template = distance_tally.bin_sql(vendor="sqlite", distance="%(expressions)s")
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(self, compiler, connection, **extra):
        template = distance_tally.bin_sql(vendor="postgresql", distance="%(expressions)s")
        return self.as_sql(compiler, connection, template=template, **extra)


_KEYS = {"rep": "rep_id", "outcome": "outcome_id"}


def too_far_bin_parts(*, scope: Scope, by: tuple[str, ...]) -> list[QuerySet]:
    """Querysets of (k0, ..., bin_key, n) rows (keys `by` among "rep" and "outcome", no outcome as
    0): too-far visits with a distance by bin, whole months from the distance tally, the days at
    the edges from the visits, as status_rows splits them. For too_far_percentiles, which has
    checked the statuses and read the all-time distance tallies itself where they hold the scope."""
    if not tallies_current():
        return [_bin_visits(scope.visits(), by=by)]
    reads, days = range_plan(start=scope.start, end=scope.end, grains=(MONTHS,))
    parts = [_bin_visits(_days(scope, low, high), by=by) for low, high in days]
    for _, (first, last) in reads:
        # The tally holds too-far visits only: the status filter is met already.
        rows = replace(scope, statuses=None)._narrow(DistanceTally.objects.all(), rep="rep_id", outcome="outcome_id")
        if first is not None:
            rows = rows.filter(month__gte=first)
        if last is not None:
            rows = rows.filter(month__lte=last)
        keys = {f"k{i}": F(_KEYS[b]) for i, b in enumerate(by)}
        parts.append(
            rows.order_by().annotate(**keys, bin_key=F("bin")).values(*keys, "bin_key").annotate(n=Sum("visits"))
        )
    return parts


def _all_time_tally(
    *, scope: Scope, by: tuple[str, ...]
) -> tuple[type[RepDistanceTally | OutcomeDistanceTally], str, frozenset[int] | None] | None:
    """The all-time distance tally that holds the scope's bins by `by` (its model, key column and
    the keys chosen, None for all), when there is one: all time, by rep or by outcome, narrowed by
    nothing else (the callers have checked the statuses and that the tallies are current)."""
    if not _all_time(scope) or scope.resource_type:
        return None
    if by == ("rep",) and scope.outcomes is None:
        return RepDistanceTally, "rep_id", scope.reps
    if by == ("outcome",) and scope.reps is None:
        return OutcomeDistanceTally, "outcome_id", scope.outcomes
    return None


def _bin_visits(visits: QuerySet, *, by: tuple[str, ...]) -> QuerySet:
    keys = {f"k{i}": Coalesce(_KEYS[b], 0) if b == "outcome" else F(_KEYS[b]) for i, b in enumerate(by)}
    return (
        visits.filter(verification_status=VerificationStatus.TOO_FAR, customer_distance_m__isnull=False)
        .order_by().annotate(**keys, bin_key=DistanceBin("customer_distance_m"))
        .values(*keys, "bin_key").annotate(n=Count("id"))
    )  # fmt: skip


def too_far_percentiles(*, scope: Scope, by: tuple[str, ...]) -> dict[tuple, tuple[float, float]]:
    """{key: (median, 90th percentile)} of the too-far visits' distances, in metres, read from the
    bins (the nearest rank: the ceil(p * n)-th smallest, as distance_tally.bins_percentile). On
    PostgreSQL the ranks are found in the database, which returns a row per key, not a row per key
    and bin; on SQLite, whose window functions are slow, the bins are walked in their order here."""
    if scope.statuses is not None and VerificationStatus.TOO_FAR not in scope.statuses:
        return {}
    if scope.reps is not None and not scope.reps:  # no rep: no bins (and no SQL: an empty IN)
        return {}
    whole = _all_time_tally(scope=scope, by=by)
    if whole is not None and tallies_current():
        return {
            (None if by == ("outcome",) and key == 0 else key,): (
                distance_tally.bin_metres(median),
                distance_tally.bin_metres(p90),
            )
            for key, median, p90 in _ranks_stepped(*whole)
        }
    parts = too_far_bin_parts(scope=scope, by=by)
    if not parts:
        return {}
    keys = [f"k{i}" for i in range(len(by))]
    lead = "".join(f"{k}, " for k in keys)
    sqls, params = [], []
    for part in parts:
        sql, part_params = part.query.get_compiler(using=part.db).as_sql()
        # Integers: PostgreSQL sums bigints as numeric, several times slower.
        sqls.append(f"SELECT {lead}bin_key, CAST(n AS integer) AS n FROM ({sql}) AS p WHERE n > 0")
        params.extend(part_params)
    bins = sqls[0]
    if len(sqls) > 1:  # edge days and months: a bin's visits summed across them
        bins = (
            f"SELECT {lead}bin_key, CAST(sum(n) AS integer) AS n FROM ({' UNION ALL '.join(sqls)}) AS parts "
            f"GROUP BY {lead}bin_key"
        )
    if connection.vendor == "sqlite":
        ranked = _ranks_walked(
            sql=f"SELECT * FROM ({bins}) AS bins ORDER BY {lead}bin_key", params=params, keys=len(keys)
        )
    else:
        ranked = _ranks_windowed(bins=bins, params=params, keys=keys)
    found = {}
    for key, median, p90 in ranked:
        named = tuple(None if b == "outcome" and k == 0 else k for b, k in zip(by, key, strict=True))
        found[named] = (distance_tally.bin_metres(median), distance_tally.bin_metres(p90))
    return found


def _ranks_windowed(*, bins: str, params: list, keys: list[str]) -> Iterator[tuple[tuple, int, int]]:
    """(key, median bin, 90th percentile bin) ranked by window functions (PostgreSQL)."""
    lead = "".join(f"{k}, " for k in keys)
    partition = f"PARTITION BY {', '.join(keys)} " if keys else ""
    sql = (
        f"SELECT {lead}min(CASE WHEN cum >= (total + 1) / 2 THEN bin_key END), "
        "min(CASE WHEN cum >= (9 * total + 9) / 10 THEN bin_key END) "
        f"FROM (SELECT {lead}bin_key, sum(n) OVER ({partition}ORDER BY bin_key) AS cum, "
        f"sum(n) OVER ({partition.strip()}) AS total FROM ({bins}) AS bins) AS ranked"
        + (f" GROUP BY {', '.join(keys)}" if keys else "")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for *key, median, p90 in cursor.fetchall():
            if median is not None:
                yield tuple(key), median, p90


STEP = 12  # bins a coarse group of _ranks_stepped: a fifth of a decade


def _ranks_stepped(
    model: type[RepDistanceTally | OutcomeDistanceTally], key: str, chosen: frozenset[int] | None
) -> Iterator[tuple[int, int, int]]:
    """(key, median bin, 90th percentile bin) from an all-time distance tally, as _ranks_windowed
    finds them, in two steps: each key's bins summed by STEP in the database, the groups holding
    its median and 90th percentile found here, then those groups' bins read and walked. At 200
    reps, 2,800 and 4,000 rows where every bin is 27,000 (ranking them took 35-100 ms)."""
    table, count = model._meta.db_table, column(model, "visits")
    where, params = f"{count} > 0", []
    if chosen is not None:
        if not chosen:
            return
        where += f" AND {key} IN ({', '.join(['%s'] * len(chosen))})"
        params = sorted(chosen)
    picks: dict[int, list[tuple[int, int, int]]] = {}  # key -> (rank, visits before its group, group)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {key}, bin / {STEP}, sum({count}) FROM {table} WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2", params
        )
        for k, rows in groupby(cursor.fetchall(), key=itemgetter(0)):
            groups = [(g, n) for _, g, n in rows]
            total = sum(n for _, n in groups)
            picks[k] = []
            for rank in ((total + 1) // 2, (9 * total + 9) // 10):  # as the window query's
                before = 0
                for g, n in groups:
                    if before + n >= rank:
                        picks[k].append((rank, before, g))
                        break
                    before += n
        wanted = sorted({(k, g) for k, chosen_groups in picks.items() for _, _, g in chosen_groups})
        if not wanted:
            return
        cursor.execute(  # each group a range of the primary key
            f"WITH w (k, low, high) AS (VALUES {', '.join(['(%s, %s, %s)'] * len(wanted))}) "
            f"SELECT t.{key}, t.bin, t.{count} FROM w JOIN {table} t "
            f"ON t.{key} = w.k AND t.bin BETWEEN w.low AND w.high WHERE t.{count} > 0 ORDER BY 1, 2",
            [value for k, g in wanted for value in (k, g * STEP, g * STEP + STEP - 1)],
        )
        bins: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for k, b, n in cursor.fetchall():
            bins[k].append((b, n))
    for k, ranks in picks.items():
        found = []
        for rank, before, g in ranks:
            for b, n in bins[k]:
                if b // STEP == g:
                    before += n
                    if before >= rank:
                        found.append(b)
                        break
        if len(found) == 2:
            yield k, found[0], found[1]


def _ranks_walked(*, sql: str, params: list, keys: int) -> Iterator[tuple[tuple, int, int]]:
    """As _ranks_windowed, from the bins in key and bin order walked here (SQLite: its window
    functions took 100 ms over the 27,000 bins of the reps of all time, the walk a third of that)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    for key, group in groupby(rows, key=itemgetter(*range(keys)) if keys else lambda row: ()):
        bins = [(row[keys], row[keys + 1]) for row in group]
        total = sum(n for _, n in bins)
        median_rank, p90_rank = (total + 1) // 2, (9 * total + 9) // 10  # as the window query's
        cum, median = 0, None
        for bin_key, n in bins:
            cum += n
            if median is None and cum >= median_rank:
                median = bin_key
            if cum >= p90_rank:
                if median is not None:
                    yield (key if keys > 1 else (key,) if keys else ()), median, bin_key
                break


def counts_by(*, scope: Scope, by: tuple[str, ...], distances: bool = False) -> dict[tuple, Counts]:
    """Counts per key (see status_rows); keys with no visits are absent. With `distances`, also
    each key's too-far median and 90th percentile (`by` among "rep" and "outcome")."""
    counts: dict[tuple, Counts] = defaultdict(Counts)
    for key, status, n, flagged, far in status_rows(scope=scope, by=by):
        row = counts[key]
        row.visits += n
        row.flagged += flagged
        row.far += far
        setattr(row, status, getattr(row, status) + n)
    if distances:
        for key, (median, p90) in too_far_percentiles(scope=scope, by=by).items():
            if key in counts:
                counts[key].too_far_median_m, counts[key].too_far_p90_m = median, p90
    return dict(counts)


# --- Reports -------------------------------------------------------------------------------


def totals(*, scope: Scope) -> Counts:
    return counts_by(scope=scope, by=()).get((), Counts())


def rows_named(
    counts: Iterable[tuple[int | None, Counts]], *, names: dict[int, str], model: type[Rep] | type[Outcome]
) -> list[Row]:
    """Report rows named by the model's own label rule (Rep.label_for, Outcome.label_for)."""
    missing = f"(no {model._meta.model_name})"
    return [
        Row(id=key, name=model.label_for(key, names.get(key)) if key is not None else missing, counts=c)
        for key, c in counts
    ]


def rep_rows(*, scope: Scope, sort: str = "name", review: bool = False, distances: bool = True) -> list[Row]:
    """A row per rep, with its flagged visits and (unless not `distances`) its too-far distances;
    with `review`, also those rejected after review."""
    names = dict(Rep.objects.values_list("id", "name"))
    counts = counts_by(scope=scope, by=("rep",), distances=distances)
    if review:
        for rep_id, rejected in rejected_by_rep(scope=scope).items():
            if (rep_id,) in counts:
                counts[(rep_id,)].rejected = rejected
    return rows_sort(rows_named(((k[0], c) for k, c in counts.items()), names=names, model=Rep), sort=sort)


def rejected_by_rep(*, scope: Scope) -> dict[int, int]:
    """Per rep: visits in scope whose latest decision is a rejection (Visit.review_status, which
    the index of decided visits holds)."""
    rows = scope.visits().filter(review_status=DecisionKind.REJECT).order_by().values("rep_id")
    return {row["rep_id"]: row["n"] for row in rows.annotate(n=Count("id"))}


def any_without_outcome() -> bool:
    """Whether any live visit has no outcome (the year tallies' outcome 0): a few hundred rows."""
    return YearTally.objects.filter(outcome_id=0, visits__gt=0).exists()


def outcome_rows(*, scope: Scope, sort: str = "name") -> list[Row]:
    names = dict(Outcome.objects.values_list("id", "name"))
    counts = counts_by(scope=scope, by=("outcome",), distances=True)
    return rows_sort(rows_named(((k[0], c) for k, c in counts.items()), names=names, model=Outcome), sort=sort)


def matrix(
    *, scope: Scope, cell_distances: bool = False
) -> tuple[list[Row], list[Row], dict[tuple[int, int | None], Cell]]:
    """Reps (rows) by outcomes (columns); each cell the visits and too-far visits; each rep its
    too-far distances; each cell too with `cell_distances` (the CSV: a hundred thousand bins to
    rank at a million visits, where the page's rows rank a few thousand)."""
    counts = counts_by(scope=scope, by=("rep", "outcome"), distances=cell_distances)
    cells = {key: Cell(visits=c.visits, too_far=c.resource_location_too_far, counts=c) for key, c in counts.items()}
    reps: dict[int, Counts] = defaultdict(Counts)
    outcomes: dict[int | None, Counts] = defaultdict(Counts)
    for (rep_id, outcome_id), c in counts.items():
        reps[rep_id].add(c)
        outcomes[outcome_id].add(c)
    for (rep_id,), (median, p90) in too_far_percentiles(scope=scope, by=("rep",)).items():
        if rep_id in reps:
            reps[rep_id].too_far_median_m, reps[rep_id].too_far_p90_m = median, p90
    rep_names = dict(Rep.objects.values_list("id", "name"))
    outcome_names = dict(Outcome.objects.values_list("id", "name"))
    return (
        rows_sort(rows_named(reps.items(), names=rep_names, model=Rep), sort="name"),
        rows_sort(rows_named(outcomes.items(), names=outcome_names, model=Outcome), sort="name"),
        cells,
    )


def weekly_trend(*, scope: Scope) -> list[tuple[date, Counts]]:
    """Counts per week (weeks start on Monday in DISPLAY_TIME_ZONE), oldest first."""
    return sorted(((key[0], c) for key, c in counts_by(scope=scope, by=("week",)).items()), key=lambda kc: kc[0])


def too_far_leaders(*, rows: list[Row], limit: int = 5) -> list[Row]:
    """The reps of `rows` (see rep_rows) most often too far, from MIN_VISITS_FOR_RANKING visits."""
    ranked = [r for r in rows if r.counts.visits >= MIN_VISITS_FOR_RANKING]
    return rows_sort(ranked, sort="-too_far_rate")[:limit]


def counts_sum(rows: Iterable[Row]) -> Counts:
    total = Counts()
    for row in rows:
        total.add(row.counts)
    return total


@dataclass
class Risk:
    """A rep's review picture for the rep page."""

    by_rule: list[tuple[str, int]]  # rule label, visits flagged by it
    flagged: int
    rejected: int
    follow_up: int
    weeks: list[tuple[date, int, int]]  # week, visits, flagged visits


def rep_risk(*, scope: Scope, totals: Counts, trend: list[tuple[date, Counts]]) -> Risk:
    """Flags by rule, decisions and weekly flagged visits, for a scope narrowed to one rep
    (Scope.for_rep); `totals` and `trend` are that scope's, which the rep page has already."""
    visits = scope.visits()
    labels = dict(FlagRule.choices)
    by_rule = (
        visits.filter(flags__isnull=False).order_by().values("flags__rule").annotate(n=Count("id", distinct=True))
        .order_by("-n")
    )  # fmt: skip
    kinds = dict(
        visits.filter(flagged=True, review_status__isnull=False).order_by().values_list("review_status")
        .annotate(n=Count("id")).values_list("review_status", "n")
    )  # fmt: skip
    return Risk(
        by_rule=[(labels.get(row["flags__rule"], row["flags__rule"]), row["n"]) for row in by_rule],
        flagged=totals.flagged,
        rejected=kinds.get(DecisionKind.REJECT, 0),
        follow_up=kinds.get(DecisionKind.FOLLOW_UP, 0),
        weeks=[(week, c.visits, c.flagged) for week, c in trend][-12:],
    )


# The rep page's histogram: upper bounds in metres (the last bin has none).
HISTOGRAM_EDGES = (100, 250, 500, 1000, 2000, 5000, 10_000, 50_000)


@dataclass
class HistogramBin:
    label: str  # "0-100 m", "0.5-1 km", ">50 km"
    too_far: int  # the too-far visits in it
    other: int  # the other visits in it (any other status)

    @property
    def visits(self) -> int:
        return self.too_far + self.other


def _edge_text(metres: int) -> str:
    return f"{metres} m" if metres < 1000 else f"{metres / 1000:g} km"


def histogram_labels() -> list[str]:
    labels, low = [], 0
    for high in HISTOGRAM_EDGES:
        if high < 1000:
            labels.append(f"{low}-{high} m")
        else:  # a kilometre range reads in km at both ends: "0.5-1 km"
            labels.append(f"{low / 1000:g}-{high / 1000:g} km")
        low = high
    return [*labels, f">{_edge_text(low)}"]


def distance_histogram(*, scope: Scope) -> list[HistogramBin]:
    """The visits in scope with a distance (a scope narrowed to one rep: Scope.for_rep) by
    distance from the customer, too-far visits apart; a bin's upper bound is in it."""
    whens = [When(customer_distance_m__lte=edge, then=Value(i)) for i, edge in enumerate(HISTOGRAM_EDGES)]
    rows = (
        scope.visits().filter(customer_distance_m__isnull=False).order_by()
        .annotate(distance_bin=Case(*whens, default=Value(len(HISTOGRAM_EDGES)), output_field=IntegerField()))
        .values("distance_bin")
        .annotate(n=Count("id"), too_far=Count("id", filter=Q(verification_status=VerificationStatus.TOO_FAR)))
    )  # fmt: skip
    found = {row["distance_bin"]: (row["too_far"], row["n"] - row["too_far"]) for row in rows}
    return [HistogramBin(label, *found.get(i, (0, 0))) for i, label in enumerate(histogram_labels())]

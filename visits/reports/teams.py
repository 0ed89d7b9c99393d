"""Teams: the reps' Sell groups (Rep.group_id, from the Core API's users) as report rows, their
rates summed from the reps' rows and their too-far distances ranked from the reps' bins grouped
by team in the database; a rep's team and manager for the reps' CSV.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection

from visits.ingest import distance_tally
from visits.ingest.tallies import tallies_current
from visits.models import Rep, RepDistanceTally, VerificationStatus, column
from visits.reports import analytics
from visits.reports.filters import NO_GROUP_LABEL, team_value, teams_of
from visits.reports.scope import Scope


@dataclass(frozen=True)
class RepTeam:
    """A rep's team as the reps' CSV shows it: its name and the rep's manager."""

    group_id: int | None
    team: str  # the group's name, else the rep's free-text team_name
    manager_id: int | None  # Rep.reports_to


def rep_teams(*, rep_ids: Iterable[int] | None = None) -> dict[int, RepTeam]:
    """Each rep's team (those of `rep_ids`, every rep if None), one query."""
    reps = Rep.objects.all() if rep_ids is None else Rep.objects.filter(id__in=list(rep_ids))
    return {
        rep_id: RepTeam(group_id, group_name or team_name, reports_to)
        for rep_id, group_id, group_name, team_name, reports_to in reps.order_by().values_list(
            "id", "group_id", "group_name", "team_name", "reports_to"
        )
    }


def team_rows(*, scope: Scope, sort: str = "name") -> list[analytics.Row]:
    """A row per Sell group with visits in scope (id None: the reps without a group): the sums of
    its reps' rows (analytics.rep_rows, flagged and rejected included), named as the team filter
    names it, and the too-far distances of all its visits (ranked from the bins, not from its
    reps' medians)."""
    reps = analytics.rep_rows(scope=scope, review=True, distances=False)
    teams = rep_teams(rep_ids=[row.id for row in reps if row.id is not None])
    group_of = {rep_id: team.group_id for rep_id, team in teams.items()}
    _, labels = teams_of((rep_id, team.group_id, team.team) for rep_id, team in teams.items())
    counts: dict[int | None, analytics.Counts] = defaultdict(analytics.Counts)
    for row in reps:
        counts[group_of.get(row.id) if row.id is not None else None].add(row.counts)
    for group_id, (median, p90) in team_percentiles(scope=scope).items():
        if group_id in counts:
            counts[group_id].too_far_median_m, counts[group_id].too_far_p90_m = median, p90
    rows = [
        analytics.Row(id=group_id, name=labels.get(team_value(group_id), NO_GROUP_LABEL), counts=c)
        for group_id, c in counts.items()
    ]
    return analytics.rows_sort(rows, sort=sort)


def team_percentiles(*, scope: Scope) -> dict[int | None, tuple[float, float]]:
    """{group id (None: no group): (median, 90th percentile)} of the too-far visits' distances in
    scope, in metres: the reps' bins (as analytics.too_far_percentiles reads them) summed by the
    rep's group in one query (a few hundred rows), ranked as distance_tally.bins_percentile."""
    if scope.statuses is not None and VerificationStatus.TOO_FAR not in scope.statuses:
        return {}
    if scope.reps is not None and not scope.reps:
        return {}
    whole = analytics._all_time_tally(scope=scope, by=("rep",))
    if whole is not None and tallies_current():
        table, count = RepDistanceTally._meta.db_table, column(RepDistanceTally, "visits")
        rep, bin_column = column(RepDistanceTally, "rep_id"), column(RepDistanceTally, "bin")
        where, params = f"{count} > 0", []
        if scope.reps is not None:
            where += f" AND {rep} IN ({', '.join(['%s'] * len(scope.reps))})"
            params = sorted(scope.reps)
        parts = [f"SELECT {rep} AS k0, {bin_column} AS bin_key, {count} AS n FROM {table} WHERE {where}"]
    else:
        parts, params = [], []
        for part in analytics.too_far_bin_parts(scope=scope, by=("rep",)):
            sql, part_params = part.query.get_compiler(using=part.db).as_sql()
            parts.append(f"SELECT k0, bin_key, n FROM ({sql}) AS p")
            params.extend(part_params)
    if not parts:
        return {}
    sql = (
        f"SELECT COALESCE(r.group_id, 0), b.bin_key, CAST(sum(b.n) AS integer) "
        f"FROM ({' UNION ALL '.join(parts)}) AS b JOIN {Rep._meta.db_table} r ON r.id = b.k0 GROUP BY 1, 2"
    )
    bins: dict[int, dict[int, int]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for group_id, bin_key, n in cursor.fetchall():
            bins[group_id][bin_key] = n
    found = {}
    for group_id, counted in bins.items():
        median, p90 = distance_tally.bins_percentile(counted, 0.5), distance_tally.bins_percentile(counted, 0.9)
        if median is not None and p90 is not None:
            found[group_id or None] = (median, p90)
    return found

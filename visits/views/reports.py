"""Report pages: the overview, reps, teams, outcomes, the rep-by-outcome matrix, the visits list, one rep."""

from functools import partial
from typing import cast

from django import forms
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from visits.access import rep_for_user, reports_required, scope_for_user
from visits.models import AccessKind, VerificationStatus
from visits.reports import analytics, charts, maps, teams
from visits.reports.filters import ReportFilters, team_value
from visits.reports.scope import Scope
from visits.security.access_log import access_logged
from visits.templatetags.visits_extras import metres, percent, shade, thousands
from visits.views import pager
from visits.views.common import DISTANCE_COLUMNS, REPORT_COLUMNS, bad_request, filtered, page_context, sort_param

GROUPED_ROWS = {
    "reps": partial(analytics.rep_rows, review=True),
    "outcomes": analytics.outcome_rows,
    "teams": teams.team_rows,
}

REVIEW_COLUMNS = [("flagged", "Flagged"), ("rejected", "Rejected")]
EXTRA_COLUMNS = {"reps": REVIEW_COLUMNS, "outcomes": [], "teams": REVIEW_COLUMNS}  # after the counts
FIRST_COLUMN = {"reps": "Rep", "outcomes": "Outcome", "teams": "Team"}


VISIT_SORTS = {"visited_at", "-visited_at", "rep", "-rep", "outcome", "-outcome", "status", "-status"}


@reports_required
@filtered
def home(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    scope = scope_for_user(request.user, filters=filters)
    reps = analytics.rep_rows(scope=scope, distances=False)  # the totals and the ranking, from one count
    return render(
        request,
        "visits/overview.html",
        page_context(
            request,
            filters,
            totals=analytics.counts_sum(reps),
            trend=charts.rates_chart(trend=analytics.weekly_trend(scope=scope)),
            leaders=analytics.too_far_leaders(rows=reps),
            min_visits=analytics.MIN_VISITS_FOR_RANKING,
        ),
    )


def grouped_report(request: HttpRequest, filters: ReportFilters, *, kind: str) -> HttpResponse:
    sort = sort_param(request, allowed=analytics.SORTS, default="name")
    if sort is None:
        return bad_request(request, [f"sort: must be one of {', '.join(analytics.SORTS)}, optionally with a leading -"])
    rows = GROUPED_ROWS[kind](scope=scope_for_user(request.user, filters=filters), sort=sort)
    links = {}
    if kind == "reps":
        links = rep_links(request, filters, rows)
    elif kind == "teams":
        links = team_links(request, rows)
    columns = [("name", FIRST_COLUMN[kind]), *REPORT_COLUMNS, *DISTANCE_COLUMNS, *EXTRA_COLUMNS[kind]]
    return render(
        request,
        "visits/report.html",
        page_context(
            request,
            filters,
            rows=[report_row(row, links.get(row.id), kind=kind) for row in rows],
            kind=kind,
            sort=sort,
            columns=columns,
            far_km=settings.DISTANCE_FAR_KM,
            no_groups=kind == "teams" and bool(rows) and all(row.id is None for row in rows),
        ),
    )


def report_row(row: analytics.Row, links: tuple[str, str] | None, *, kind: str) -> SafeString:
    """A report's row written at once, the name and links escaped (the rest are numbers written
    here): 13 template variables with their filters a row were the larger part of the page at 200
    reps."""
    c = row.counts
    name = f'<a href="{escape(links[0])}">{escape(row.name)}</a>' if links else escape(row.name)
    numbers = "".join(
        f'<td class="num">{thousands(n)}</td>'
        for n in (c.visits, c.verified, c.resource_location_too_far, c.location_unknown, c.location_services_disabled)
    )
    rates = (
        f'<td class="num">{percent(c.verified_rate)}</td>'
        f'<td class="num {shade(c.too_far_rate)}">{percent(c.too_far_rate)}</td>'
        f'<td class="num">{metres(c.too_far_median_m)}</td><td class="num">{metres(c.too_far_p90_m)}</td>'
        f'<td class="num">{thousands(c.far)}</td>'
    )
    review = ""
    if kind in ("reps", "teams"):
        flagged = f'<a href="{escape(links[1])}">{thousands(c.flagged)}</a>' if links else thousands(c.flagged)
        review = f'<td class="num">{flagged}</td><td class="num">{thousands(c.rejected)}</td>'
    return mark_safe(f"<tr><td>{name}</td>{numbers}{rates}{review}</tr>")  # noqa: S308 (name and links escaped)


def rep_links(request: HttpRequest, filters: ReportFilters, rows: list) -> dict[int | None, tuple[str, str]]:
    """Each rep row's links, its page and its flagged visits in the queue, with the page's filters:
    made here from one reverse each ({% url %} and {% query_with %} in the row took a fifth of the
    report's time at 200 reps)."""
    kept = filters.query_string()
    query = request.GET.copy()
    for name in ("sort", "after", "before", "page", "rep", "review"):
        query.pop(name, None)
    review_query = query.urlencode()
    rep_base, review_base = reverse("visits:reps"), reverse("visits:review")
    return {
        row.id: (
            f"{rep_base}{row.id}/?{kept}",
            f"{review_base}?{review_query + '&' if review_query else ''}rep={row.id}&review=all",
        )
        for row in rows
    }


def team_links(request: HttpRequest, rows: list) -> dict[int | None, tuple[str, str]]:
    """Each team row's links, the reps report and the team's flagged visits in the queue, both
    filtered by the team (in place of the page's team and rep filters)."""
    query = request.GET.copy()
    for name in ("sort", "after", "before", "page", "rep", "team", "review"):
        query.pop(name, None)
    kept = query.urlencode()
    lead = f"?{kept}&" if kept else "?"
    reps_base, review_base = reverse("visits:reps"), reverse("visits:review")
    chosen = {row.id: f"{lead}team={team_value(row.id)}" for row in rows}
    return {team: (f"{reps_base}{query}", f"{review_base}{query}&review=all") for team, query in chosen.items()}


@reports_required
@filtered
def teams_report(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return grouped_report(request, filters, kind="teams")


@reports_required
@filtered
def reps_report(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return grouped_report(request, filters, kind="reps")


@reports_required
@filtered
def outcomes_report(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return grouped_report(request, filters, kind="outcomes")


@reports_required
@filtered
def matrix_report(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    reps, outcomes, cells = analytics.matrix(scope=scope_for_user(request.user, filters=filters))
    # A row's cells written here at once (matrix_cells): the template's variables and filters over
    # 2,400 cells were half the page's time at 200 reps and 12 outcomes.
    query, rep_base = filters.query_string(), reverse("visits:reps")
    grid = [
        matrix_row(rep, f"{rep_base}{rep.id}/?{query}", [cells.get((rep.id, outcome.id)) for outcome in outcomes])
        for rep in reps
    ]
    return render(
        request,
        "visits/matrix.html",
        page_context(request, filters, outcomes=outcomes, grid=grid, far_km=settings.DISTANCE_FAR_KM),
    )


def matrix_row(rep: analytics.Row, link: str, cells: list[analytics.Cell | None]) -> SafeString:
    """A rep's row of the matrix: its name (escaped) and link, its cells, its distances and far visits."""
    c = rep.counts
    return mark_safe(  # noqa: S308 (the name and link escaped, the rest numbers written here)
        f'<tr><th><a href="{escape(link)}">{escape(rep.name)}</a></th>{matrix_cells(cells)}'
        f'<td class="num">{metres(c.too_far_median_m)}</td><td class="num">{metres(c.too_far_p90_m)}</td>'
        f'<td class="num">{c.far}</td></tr>'
    )


def matrix_cells(cells: list[analytics.Cell | None]) -> SafeString:
    """A matrix row's cells: each its too-far rate shaded and its visits, or a dash when empty.
    Numbers and class names only, all written here: no format_html (its escaping of 2,400 cells'
    parts was a fifth of the page)."""
    empty = f'<td class="num {shade(None)}"><span class="muted">–</span></td>'
    return mark_safe("".join(  # noqa: S308 (numbers and class names made here)
        empty if cell is None else (
            f'<td class="num {shade(cell.too_far_rate)}">{percent(cell.too_far_rate)} '
            f'<span class="muted">({cell.visits:,})</span></td>'
        )
        for cell in cells
    ))  # fmt: skip


@reports_required
@filtered
def visits_list(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    sort = request.GET.get("sort", "-visited_at")
    if sort not in VISIT_SORTS:
        return bad_request(request, [f"sort: must be one of {', '.join(sorted(VISIT_SORTS))}"])
    cursors, problems = pager.cursor_params(request)
    if problems:
        return bad_request(request, problems)
    scope = scope_for_user(request.user, filters=filters)
    group = sort.lstrip("-")
    order = (
        pager.Order(newest_first=sort.startswith("-"))
        if group == "visited_at"
        else pager.Order(group=group, groups_descending=sort.startswith("-"))
    )
    try:
        page = pager.keyset_page(
            scope.visits().select_related("rep", "outcome"), order=order, groups=sort_groups(filters, scope, group),
            size=50, **cursors,
        )  # fmt: skip
    except pager.CursorError as error:
        return bad_request(request, [f"{'after' if cursors['after'] else 'before'}: {error}"])
    columns = [("visited_at", "Visited"), ("rep", "Rep"), ("outcome", "Outcome"), ("status", "Status")]
    return render(
        request,
        "visits/visits.html",
        page_context(
            request, filters, page=page, total=analytics.totals(scope=scope).visits, sort=sort, visit_columns=columns
        ),
    )


def sort_groups(filters: ReportFilters, scope: Scope, group: str) -> list:
    """The values a sort by `group` walks, ascending: the reps in scope by name (the filter's
    choices: the user's reps), the outcomes by name (no outcome last, if any visit has none: an
    empty group costs a scan), the statuses by name."""
    if group in ("rep", "outcome"):
        choices = [value for value, _ in cast(forms.ChoiceField, filters.fields[group]).choices]
        chosen = scope.reps if group == "rep" else scope.outcomes
        values = [value for value in choices if chosen is None or value in chosen]
        return values if group == "rep" or not analytics.any_without_outcome() else [*values, None]
    if group == "status":
        return sorted(scope.statuses if scope.statuses is not None else VerificationStatus.values)
    return []


@reports_required
@access_logged(AccessKind.REP)
@filtered
def rep_detail(request: HttpRequest, filters: ReportFilters, rep_id: int) -> HttpResponse:
    rep = rep_for_user(request.user, rep_id)
    scope = scope_for_user(request.user, filters=filters).for_rep(rep.id)
    recent = scope.visits().select_related("outcome").order_by("-visited_at", "-id")[:20]
    totals, trend = analytics.totals(scope=scope), analytics.weekly_trend(scope=scope)
    return render(
        request,
        "visits/rep.html",
        page_context(
            request,
            filters,
            rep=rep,
            totals=totals,
            trend=charts.rates_chart(trend=trend),
            histogram=charts.histogram_chart(bins=analytics.distance_histogram(scope=scope)),
            outcomes=analytics.outcome_rows(scope=scope, sort="-too_far_rate"),
            recent=recent,
            plan=maps.map_plan(scope=scope),
            risk=analytics.rep_risk(scope=scope, totals=totals, trend=trend),
            columns=[("name", "Outcome"), *REPORT_COLUMNS],
        ),
    )

"""CSV downloads of every report, named after the report and the filters' dates, each one written
to the access log with its filters and rows; the access log itself, for superusers."""

from django.http import HttpRequest, HttpResponse

from visits.access import reports_required, reps_for_user, scope_for_user, superuser_required
from visits.models import AccessKind, VerificationStatus
from visits.reports import analytics, teams
from visits.reports.export import (
    QUEUE_COLUMNS,
    VISIT_EXPORT_COLUMNS,
    csv_filename,
    csv_response,
    queue_rows,
    rate_text,
    visit_rows,
)
from visits.reports.filters import ReportFilters
from visits.reports.scope import Scope
from visits.review import queue
from visits.review.forms import RulesFilters
from visits.security.access_log import ACCESS_LOG_COLUMNS, AccessLogFilters, access_log_rows, access_logged
from visits.views import review
from visits.views.common import bad_request, filtered
from visits.views.reports import EXTRA_COLUMNS, GROUPED_ROWS

STATUS_HEADER = ["visits", *VerificationStatus.values, "verified_rate", "too_far_rate"]
DISTANCE_HEADER = ["too_far_median_m", "too_far_p90_m", "far_visits"]  # appended, last


def metres_cell(metres: float | None) -> int | str:
    """Whole metres; empty when unknown."""
    return "" if metres is None else round(metres)


def distance_cells(counts: analytics.Counts) -> list:
    return [metres_cell(counts.too_far_median_m), metres_cell(counts.too_far_p90_m), counts.far]


def counts_cells(counts: analytics.Counts) -> list:
    return [
        counts.visits, *(getattr(counts, status) for status in VerificationStatus.values),
        rate_text(counts.verified_rate), rate_text(counts.too_far_rate),
    ]  # fmt: skip


def filtered_csv(
    filters: ReportFilters, *, report: str, header: list[str], rows, checked: bool = False
) -> HttpResponse:
    """A CSV download named after the report and the filters' date range."""
    filename = csv_filename(report=report, start=filters.cleaned_data["start"], end=filters.cleaned_data["end"])
    return csv_response(filename=filename, header=header, rows=rows, checked=checked)


TEAM_HEADER = ["team", "manager_id"]  # appended to reps.csv, after the distances


def grouped_csv(filters: ReportFilters, *, scope: Scope, kind: str) -> HttpResponse:
    """reps.csv, outcomes.csv, teams.csv: a row per report row. reps.csv ends with each rep's team
    (its Sell group's name, else its team_name) and manager (reports_to); teams.csv's team_id is
    empty for the reps without a group."""
    noun = kind.removesuffix("s")
    rows = GROUPED_ROWS[kind](scope=scope)
    reps = teams.rep_teams(rep_ids=[row.id for row in rows if row.id is not None]) if kind == "reps" else {}
    return filtered_csv(
        filters,
        report=kind,
        header=[
            f"{noun}_id",
            f"{noun}_name",
            *STATUS_HEADER,
            *(name for name, _ in EXTRA_COLUMNS[kind]),
            *DISTANCE_HEADER,
            *(TEAM_HEADER if kind == "reps" else []),
        ],  # fmt: skip
        rows=(
            [
                row.id or "",
                row.name,
                *counts_cells(row.counts),
                *(getattr(row.counts, n) for n, _ in EXTRA_COLUMNS[kind]),
                *distance_cells(row.counts),
                *(team_cells(reps.get(row.id)) if kind == "reps" else []),
            ]
            for row in rows
        ),
    )


def team_cells(team: teams.RepTeam | None) -> list:
    return ["", ""] if team is None else [team.team, "" if team.manager_id is None else team.manager_id]


@reports_required
@access_logged(AccessKind.CSV)
@filtered
def reps_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return grouped_csv(filters, scope=scope_for_user(request.user, filters=filters), kind="reps")


@reports_required
@access_logged(AccessKind.CSV)
@filtered
def teams_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return grouped_csv(filters, scope=scope_for_user(request.user, filters=filters), kind="teams")


@reports_required
@access_logged(AccessKind.CSV)
@filtered
def outcomes_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return grouped_csv(filters, scope=scope_for_user(request.user, filters=filters), kind="outcomes")


@reports_required
@access_logged(AccessKind.CSV)
@filtered
def matrix_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    reps, outcomes, cells = analytics.matrix(scope=scope_for_user(request.user, filters=filters), cell_distances=True)
    outcome_names = {o.id: o.name for o in outcomes}
    rep_names = {r.id: r.name for r in reps}
    rows = (
        [rep_id, rep_names[rep_id], outcome_id or "", outcome_names[outcome_id], cell.visits, cell.too_far,
         rate_text(cell.too_far_rate), *distance_cells(cell.counts)]
        for (rep_id, outcome_id), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))
    )  # fmt: skip
    return filtered_csv(
        filters,
        report="matrix",
        header=[
            "rep_id",
            "rep_name",
            "outcome_id",
            "outcome_name",
            "visits",
            "resource_location_too_far",
            "too_far_rate",
            *DISTANCE_HEADER,
        ],
        rows=rows,
    )


@reports_required
@access_logged(AccessKind.CSV)
@filtered
def visits_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return filtered_csv(
        filters,
        report="visits",
        header=VISIT_EXPORT_COLUMNS,
        rows=visit_rows(visits=scope_for_user(request.user, filters=filters).visits().order_by("visited_at", "id")),
        checked=True,
    )


@reports_required
@access_logged(AccessKind.CSV)
def review_csv(request: HttpRequest) -> HttpResponse:
    """The review queue with its filters (the queue's own), in its order (`sort`), every page of it."""
    found = review.queue_filtered(request)
    if isinstance(found, HttpResponse):
        return found
    filters, visits = found
    data = filters.cleaned_data
    return filtered_csv(
        filters,
        report="review",
        header=QUEUE_COLUMNS,
        rows=queue_rows(visits=visits.order_by(*queue.QUEUE_ORDERS[data["sort"]])),
        checked=True,
    )


RULES_HEADER = ["rule", "flagged", "decided", "accepted", "rejected", "follow_up", "precision", "threshold"]


@reports_required
@access_logged(AccessKind.CSV)
def review_rules_csv(request: HttpRequest) -> HttpResponse:
    """The rules' precision page as CSV: one row per rule."""
    filters = RulesFilters(request.GET, reps=reps_for_user(request.user))
    if not filters.is_valid():
        return bad_request(request, filters.problems().splitlines())
    counts = review.rules_counted(request, filters)
    rows = (
        [r.name, r.flagged, r.decided, r.accepted, r.rejected, r.follow_up, rate_text(r.precision), r.threshold]
        for r in counts.rules
    )
    return filtered_csv(filters, report="rules", header=RULES_HEADER, rows=rows)


@superuser_required
@access_logged(AccessKind.CSV)
def access_log_csv(request: HttpRequest) -> HttpResponse:
    """The access log, filtered by days, account and kind; its own download is logged too."""
    filters = AccessLogFilters(request.GET)
    if not filters.is_valid():
        return bad_request(request, filters.problems())
    data = filters.cleaned_data
    filename = csv_filename(report="access_log", start=data["start"], end=data["end"])
    return csv_response(filename=filename, header=ACCESS_LOG_COLUMNS, rows=access_log_rows(filters=filters))

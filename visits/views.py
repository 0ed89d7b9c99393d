"""Pages: reports and exports for Managers and Reviewers, the ingestion status for staff."""

from datetime import date, timedelta
from functools import partial, wraps

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from . import analytics, charts, flags, maps, review
from .export import VISIT_COLUMNS, VISIT_REVIEW_COLUMNS, csv_filename, csv_response, rate_text, visit_rows
from .forms import DecisionForm, ReportFilters, ReviewFilters
from .models import DecisionKind, Rep, Stream, VerificationStatus, Visit
from .security import map_document_response
from .status import freshness, rejected_items, status_overview

GROUPED_ROWS = {"reps": partial(analytics.rep_rows, review=True), "outcomes": analytics.outcome_rows}
EXTRA_COLUMNS = {"reps": [("flagged", "Flagged"), ("rejected", "Rejected")], "outcomes": []}  # after the counts
STATUS_HEADER = ["visits", *VerificationStatus.values, "verified_rate", "too_far_rate"]
VISIT_SORTS = {"visited_at", "-visited_at", "rep", "-rep", "outcome", "-outcome", "status", "-status"}


def reports_required(view):
    """Signed in (else the login page) and a Manager or Reviewer (else a polite 403 page)."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.has_perm("visits.view_reports"):
            return render(request, "visits/no_access.html", status=403)
        return view(request, *args, **kwargs)

    return wrapped


def bad_request(request: HttpRequest, problems: list[str]) -> HttpResponse:
    return render(request, "visits/bad_filters.html", {"problems": problems}, status=400)


def filtered(view):
    """Binds the report filters to the query string; a wrong one is a 400 page saying which."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        filters = ReportFilters(request.GET)
        if not filters.is_valid():
            return bad_request(request, filters.problems().splitlines())
        return view(request, filters, *args, **kwargs)

    return wrapped


def sort_param(request: HttpRequest, *, allowed, default: str) -> str | None:
    sort = request.GET.get("sort", default)
    return sort if sort.lstrip("-") in allowed else None


RESOURCE_TYPES = ["lead", "contact", "prospect_and_customer"]  # as Sell spells them
REPORT_COLUMNS = [
    ("visits", "Visits"), ("verified", "Verified"), ("resource_location_too_far", "Too far"),
    ("location_unknown", "Location unknown"), ("location_services_disabled", "Location off"),
    ("verified_rate", "Verified rate"), ("too_far_rate", "Too-far rate"),
]  # fmt: skip


def date_presets() -> list[tuple[str, date, date]]:
    """Quick ranges for the filter bar, by the calendar of DISPLAY_TIME_ZONE."""
    today = timezone.localdate()
    month_start = today.replace(day=1)
    last_month_end = month_start - timedelta(days=1)
    return [
        ("Last 7 days", today - timedelta(days=6), today),
        ("Last 30 days", today - timedelta(days=29), today),
        ("This month", month_start, today),
        ("Last month", last_month_end.replace(day=1), last_month_end),
    ]


def page_context(request: HttpRequest, filters: ReportFilters, **extra) -> dict:
    chosen = filters.cleaned_data.get("resource_type")
    return {
        "presets": date_presets(),
        "filters": filters,
        "query": filters.query_string(),
        "freshness": freshness(),
        "resource_types": RESOURCE_TYPES + ([chosen] if chosen and chosen not in RESOURCE_TYPES else []),
        **extra,
    }


@reports_required
@filtered
def home(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    scope = filters.scope()
    reps = analytics.rep_rows(scope=scope)  # the totals and the ranking, from one count
    return render(
        request,
        "visits/overview.html",
        page_context(
            request, filters,
            totals=analytics.counts_sum(reps),
            trend=charts.rates_chart(trend=analytics.weekly_trend(scope=scope)),
            leaders=analytics.too_far_leaders(rows=reps),
            min_visits=analytics.MIN_VISITS_FOR_RANKING,
        ),  # fmt: skip
    )


def grouped_report(request: HttpRequest, filters: ReportFilters, *, kind: str) -> HttpResponse:
    sort = sort_param(request, allowed=analytics.SORTS, default="name")
    if sort is None:
        return bad_request(request, [f"sort: must be one of {', '.join(analytics.SORTS)}, optionally with a leading -"])
    rows = GROUPED_ROWS[kind](scope=filters.scope(), sort=sort)
    first = "Rep" if kind == "reps" else "Outcome"
    columns = [("name", first), *REPORT_COLUMNS, *EXTRA_COLUMNS[kind]]
    return render(
        request, "visits/report.html", page_context(request, filters, rows=rows, kind=kind, sort=sort, columns=columns)
    )


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
    reps, outcomes, cells = analytics.matrix(scope=filters.scope())
    grid = [(rep, [cells.get((rep.id, outcome.id)) for outcome in outcomes]) for rep in reps]
    return render(request, "visits/matrix.html", page_context(request, filters, outcomes=outcomes, grid=grid))


@reports_required
@filtered
def visits_list(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    sort = request.GET.get("sort", "-visited_at")
    if sort not in VISIT_SORTS:
        return bad_request(request, [f"sort: must be one of {', '.join(sorted(VISIT_SORTS))}"])
    column = {"rep": "rep__name", "outcome": "outcome__name", "status": "verification_status"}.get(
        sort.lstrip("-"), "visited_at"
    )
    order = ("-" if sort.startswith("-") else "") + column
    visits = filters.visits().select_related("rep", "outcome").order_by(order, "-id")
    page = Paginator(visits, 50).get_page(request.GET.get("page"))
    columns = [("visited_at", "Visited"), ("rep", "Rep"), ("outcome", "Outcome"), ("status", "Status")]
    return render(
        request, "visits/visits.html", page_context(request, filters, page=page, sort=sort, visit_columns=columns)
    )


@reports_required
@filtered
def rep_detail(request: HttpRequest, filters: ReportFilters, rep_id: int) -> HttpResponse:
    rep = get_object_or_404(Rep, id=rep_id)
    scope = filters.scope().for_rep(rep.id)
    recent = scope.visits().select_related("outcome").order_by("-visited_at", "-id")[:20]
    totals, trend = analytics.totals(scope=scope), analytics.weekly_trend(scope=scope)
    return render(
        request,
        "visits/rep.html",
        page_context(
            request, filters, rep=rep, totals=totals, trend=charts.rates_chart(trend=trend),
            outcomes=analytics.outcome_rows(scope=scope, sort="-too_far_rate"), recent=recent,
            plan=maps.map_plan(scope=scope), risk=analytics.rep_risk(scope=scope, totals=totals, trend=trend),
            columns=[("name", "Outcome"), *REPORT_COLUMNS],
        ),  # fmt: skip
    )


@reports_required
@filtered
def map_page(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return render(request, "visits/map.html", page_context(request, filters, plan=maps.map_plan(scope=filters.scope())))


@reports_required
@filtered
def map_frame(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    """The map document itself, shown in a sandboxed iframe by the map and rep pages."""
    return map_document_response(document=maps.map_render(scope=filters.scope()))


@reports_required
def visit_map(request: HttpRequest, visit_id: int) -> HttpResponse:
    document = maps.visit_map_render(visit_id=visit_id)
    if document is None:
        raise Http404("No such visit with a position.")
    return map_document_response(document=document)


@reports_required
def visit_summary(request: HttpRequest, visit_id: int) -> JsonResponse:
    """A visit's summary, for map popups that load it when opened."""
    visit = get_object_or_404(Visit.objects.only("id", "summary"), id=visit_id)
    return JsonResponse({"id": visit.id, "summary": visit.summary})


@reports_required
def visit_detail(request: HttpRequest, visit_id: int) -> HttpResponse:
    visit = get_object_or_404(Visit.objects.select_related("rep", "outcome"), id=visit_id)
    return render(
        request,
        "visits/visit.html",
        {
            "visit": visit, "freshness": freshness(), "flags": visit.flags.all(),
            "decisions": visit.decisions.select_related("decided_by"),
            "can_decide": request.user.has_perm("visits.review_visits"), "kinds": DecisionKind.choices,
        },
    )  # fmt: skip


@reports_required
def review_queue(request: HttpRequest) -> HttpResponse:
    """Flagged visits awaiting a decision (or in another review state), with their reasons."""
    filters = ReviewFilters(request.GET)
    if not filters.is_valid():
        return bad_request(request, filters.problems().splitlines())
    data = filters.cleaned_data
    visits = review.flagged_visits(visits=filters.visits(), rules=data["rule"] or None, state=data["review"])
    page = Paginator(visits.select_related("rep", "outcome").order_by("-visited_at", "-id"), 20).get_page(
        request.GET.get("page")
    )
    items = review.queue_items(visits=page.object_list)
    return render(
        request,
        "visits/review.html",
        page_context(
            request, filters, page=page, items=items, review_states=review.REVIEW_STATES, kinds=DecisionKind.choices,
            can_decide=request.user.has_perm("visits.review_visits"), thresholds=flags.rule_thresholds(),
        ),  # fmt: skip
    )


@require_POST
@reports_required
def review_decide(request: HttpRequest) -> HttpResponse:
    """Record a decision on the chosen visits; back to where the reviewer was."""
    if not request.user.has_perm("visits.review_visits"):
        return render(request, "visits/no_access.html", {"reason": "Only Reviewers can decide on flagged visits."}, status=403)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return bad_request(request, [f"{name}: {error}" for name, errors in form.errors.items() for error in errors])
    recorded = review.decisions_record(
        visit_ids=form.cleaned_data["visit"], kind=form.cleaned_data["kind"], note=form.cleaned_data["note"],
        user=request.user,
    )  # fmt: skip
    label = DecisionKind(form.cleaned_data["kind"]).label
    messages.success(request, f"{label}: recorded for {recorded} visit{'s' if recorded != 1 else ''}.")
    back = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return redirect(back if back and safe else "visits:review")


def counts_cells(counts: analytics.Counts) -> list:
    return [
        counts.visits, *(getattr(counts, status) for status in VerificationStatus.values),
        rate_text(counts.verified_rate), rate_text(counts.too_far_rate),
    ]  # fmt: skip


def filtered_csv(filters: ReportFilters, *, report: str, header: list[str], rows, checked: bool = False) -> HttpResponse:
    """A CSV download named after the report and the filters' date range."""
    filename = csv_filename(report=report, start=filters.cleaned_data["start"], end=filters.cleaned_data["end"])
    return csv_response(filename=filename, header=header, rows=rows, checked=checked)


def grouped_csv(filters: ReportFilters, *, kind: str) -> HttpResponse:
    noun = "rep" if kind == "reps" else "outcome"
    return filtered_csv(
        filters,
        report=kind,
        header=[f"{noun}_id", f"{noun}_name", *STATUS_HEADER, *(name for name, _ in EXTRA_COLUMNS[kind])],
        rows=(
            [row.id or "", row.name, *counts_cells(row.counts), *(getattr(row.counts, n) for n, _ in EXTRA_COLUMNS[kind])]
            for row in GROUPED_ROWS[kind](scope=filters.scope())
        ),
    )


@reports_required
@filtered
def reps_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return grouped_csv(filters, kind="reps")


@reports_required
@filtered
def outcomes_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return grouped_csv(filters, kind="outcomes")


@reports_required
@filtered
def matrix_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    reps, outcomes, cells = analytics.matrix(scope=filters.scope())
    outcome_names = {o.id: o.name for o in outcomes}
    rep_names = {r.id: r.name for r in reps}
    rows = (
        [rep_id, rep_names[rep_id], outcome_id or "", outcome_names[outcome_id], cell.visits, cell.too_far,
         rate_text(cell.too_far_rate)]
        for (rep_id, outcome_id), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))
    )  # fmt: skip
    return filtered_csv(
        filters,
        report="matrix",
        header=["rep_id", "rep_name", "outcome_id", "outcome_name", "visits", "resource_location_too_far", "too_far_rate"],
        rows=rows,
    )


@reports_required
@filtered
def visits_csv(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    return filtered_csv(
        filters,
        report="visits",
        header=[*VISIT_COLUMNS, *VISIT_REVIEW_COLUMNS],
        rows=visit_rows(visits=filters.visits().order_by("visited_at", "id")),
        checked=True,
    )


@staff_member_required
def status(request: HttpRequest) -> HttpResponse:
    return render(request, "visits/status.html", status_overview())


@staff_member_required
def rejected(request: HttpRequest) -> HttpResponse:
    stream = request.GET.get("stream", "")
    if stream and stream not in Stream.values:
        return HttpResponseBadRequest(
            f"stream must be one of {', '.join(Stream.values)}", content_type="text/plain; charset=utf-8"
        )
    page = Paginator(rejected_items(stream=stream or None), 50).get_page(request.GET.get("page"))
    return render(request, "visits/rejected.html", {"page": page, "stream": stream, "streams": Stream.choices})


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness for a load balancer or container health check: the process answers. Exempt
    from the redirect to https (SECURE_REDIRECT_EXEMPT), as such checks talk plain HTTP."""
    return HttpResponse("ok\n", content_type="text/plain")

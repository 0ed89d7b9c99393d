"""Shared by the page views: binding the filters, the filter bar's context. Who may see what,
and the decorators that say so, live in `visits.access`."""

from datetime import date, timedelta
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from visits.access import reps_for_user
from visits.ingest.status import freshness
from visits.reports.filters import ReportFilters


def bad_request(request: HttpRequest, problems: list[str]) -> HttpResponse:
    return render(request, "visits/bad_filters.html", {"problems": problems}, status=400)


def filtered(view):
    """Binds the report filters to the query string (naming only reps the user may see); a wrong
    one is a 400 page saying which. Inside `reports_required`."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        filters = ReportFilters(request.GET, reps=reps_for_user(request.user))
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

# Beside the rates: how far the too-far visits were (from bins: within 2%), and the visits of any
# status more than DISTANCE_FAR_KM from their customer.
DISTANCE_COLUMNS = [
    ("too_far_median_m", "Too-far median"), ("too_far_p90_m", "Too-far 90th pct."), ("far", "Far visits"),
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

"""Staff pages about ingestion (status, rejected items) and the health check."""

import logging

from django.core.paginator import Paginator
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from visits.access import staff_required
from visits.ingest.health import health_get
from visits.ingest.status import rejected_items, status_overview
from visits.ingest.sync import read_only_archive
from visits.models import Stream

log = logging.getLogger(__name__)
# What /healthz answers when the database cannot be read.
HEALTH_UNKNOWN = {"status": "failing", "last_success_at": None, "lag_seconds": None, "open_gaps": None}


@staff_required
def status(request: HttpRequest) -> HttpResponse:
    return render(request, "visits/status.html", status_overview())


@staff_required
def rejected(request: HttpRequest) -> HttpResponse:
    stream = request.GET.get("stream", "")
    if stream and stream not in Stream.values:
        return HttpResponseBadRequest(
            f"stream must be one of {', '.join(Stream.values)}", content_type="text/plain; charset=utf-8"
        )
    page = Paginator(rejected_items(stream=stream or None), 50).get_page(request.GET.get("page"))
    return render(request, "visits/rejected.html", {"page": page, "stream": stream, "streams": Stream.choices})


@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """Health for monitors, no login: {"status", "mode", "last_success_at", "lag_seconds",
    "open_gaps"} (ingest/health.py defines them), HTTP 200 when ok and 503 otherwise; no names,
    counts of visits or error texts. Exempt from the redirect to https (SECURE_REDIRECT_EXEMPT),
    as such checks talk plain HTTP."""
    try:
        health = health_get()
        body, healthy = health.as_json(), health.healthy
    except DatabaseError as exc:  # the database is down or not migrated: an answer, not a 500
        log.warning("/healthz could not read the database: %s", exc)
        body, healthy = {**HEALTH_UNKNOWN, "mode": "archive" if read_only_archive() else "sync"}, False
    response = JsonResponse(body, status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    # A monitor polls this every minute: its 503 is an answer, not an error of the app's that
    # django.request should log (with a traceback-like ERROR line) each time.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response

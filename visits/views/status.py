"""Staff pages about ingestion (status, rejected items) and the health check."""

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

from visits.access import staff_required
from visits.ingest.status import rejected_items, status_overview
from visits.models import Stream


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


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness for a load balancer or container health check: the process answers. Exempt
    from the redirect to https (SECURE_REDIRECT_EXEMPT), as such checks talk plain HTTP."""
    return HttpResponse("ok\n", content_type="text/plain")

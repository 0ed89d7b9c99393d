"""Pages for staff: the ingestion status and the items the Firehose sent that we could not apply."""

from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render

from .models import Stream
from .status import rejected_items, status_overview


def home(request: HttpRequest) -> HttpResponse:
    return redirect("visits:status")


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

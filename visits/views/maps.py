"""Map pages and the sandboxed map documents they embed; a visit's summary for popups."""

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from visits.access import reports_required, scope_for_user, visit_for_user, visit_lookup_for_user
from visits.models import AccessKind, Visit
from visits.reports import clusters, maps
from visits.reports.filters import ReportFilters
from visits.reports.scope import Scope
from visits.security.access_log import access_logged
from visits.security.csp import map_document_response
from visits.views.common import filtered, page_context


@reports_required
@filtered
def map_page(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    plan = maps.map_plan(scope=scope_for_user(request.user, filters=filters))
    return render(request, "visits/map.html", page_context(request, filters, plan=plan))


@reports_required
@access_logged(AccessKind.MAP)
@filtered
def map_frame(request: HttpRequest, filters: ReportFilters) -> HttpResponse:
    """The map document itself, shown in a sandboxed iframe by the map and rep pages."""
    return map_document_response(document=maps.map_render(scope=scope_for_user(request.user, filters=filters)))


@reports_required
@access_logged(AccessKind.VISIT)
def visit_map(request: HttpRequest, visit_id: int) -> HttpResponse:
    document = maps.visit_map_render(visits=visit_lookup_for_user(request.user, visit_id))
    if document is None:
        raise Http404("No such visit with a position.")
    return map_document_response(document=document)


@reports_required
def visit_summary(request: HttpRequest, visit_id: int) -> JsonResponse:
    """A visit's summary, for map popups that load it when opened."""
    visit = visit_for_user(request.user, visit_id, queryset=Visit.objects.only("id", "summary"))
    return JsonResponse({"id": visit.id, "summary": visit.summary})


def _view_or_400(request: HttpRequest, filters: ReportFilters) -> tuple[Scope, clusters.Box, int] | JsonResponse:
    """The user's scope and the request's box and zoom, or a 400 saying what is wrong with them."""
    try:
        box, zoom = clusters.box_parse(bbox=request.GET.get("bbox"), zoom=request.GET.get("zoom"))
    except clusters.BoxError as problem:
        return JsonResponse({"problems": [str(problem)]}, status=400)
    return scope_for_user(request.user, filters=filters), box, zoom


def _compact(body: dict) -> JsonResponse:
    return JsonResponse(body, json_dumps_params={"separators": (",", ":")})


@reports_required
@access_logged(AccessKind.MAP)
@filtered
def map_clusters(request: HttpRequest, filters: ReportFilters) -> JsonResponse:
    """The clusters of the visits in a box at a zoom level (reports/clusters.py), for the map as it pans."""
    view = _view_or_400(request, filters)
    if isinstance(view, JsonResponse):
        return view
    scope, box, zoom = view
    found = clusters.clusters_count(scope=scope, box=box, zoom=zoom)
    return _compact({"total": found.total, "clusters": found.clusters})


@reports_required
@access_logged(AccessKind.MAP)
@filtered
def map_points(request: HttpRequest, filters: ReportFilters) -> JsonResponse:
    """The single visits in a box, from MAP_POINTS_ZOOM on, with what their popups show."""
    view = _view_or_400(request, filters)
    if isinstance(view, JsonResponse):
        return view
    scope, box, zoom = view
    if zoom < settings.MAP_POINTS_ZOOM:
        problem = f"zoom must be at least {settings.MAP_POINTS_ZOOM} (MAP_POINTS_ZOOM) for single visits"
        return JsonResponse({"problems": [problem]}, status=400)
    return _compact(clusters.points_list(scope=scope, box=box))

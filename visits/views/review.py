"""One visit in full, the review queue, and recording decisions."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from visits.access import (
    decide_required,
    reports_required,
    reps_for_user,
    scope_for_user,
    user_may_decide,
    visit_for_user,
    visits_for_user,
)
from visits.ingest.status import freshness
from visits.models import DecisionKind, RiskTier, Visit
from visits.review import queue, rules, stored
from visits.review.forms import DecisionForm, ReviewFilters
from visits.views import pager
from visits.views.common import bad_request, page_context


@reports_required
def visit_detail(request: HttpRequest, visit_id: int) -> HttpResponse:
    visit = visit_for_user(request.user, visit_id, queryset=Visit.objects.select_related("rep", "outcome"))
    flags = list(visit.flags.all())
    tier = RiskTier(visit.risk_tier).label if visit.risk_tier in RiskTier.values else ""
    return render(
        request,
        "visits/visit.html",
        {
            "visit": visit, "freshness": freshness(), "flags": flags,
            "risk": stored.risk_explained(visit=visit, flags=flags), "risk_tier": tier,
            "decisions": visit.decisions.select_related("decided_by"),
            "can_decide": user_may_decide(request.user), "kinds": DecisionKind.choices,
        },
    )  # fmt: skip


@reports_required
def review_queue(request: HttpRequest) -> HttpResponse:
    """Flagged visits awaiting a decision (or in another review state), with their reasons."""
    filters = ReviewFilters(request.GET, reps=reps_for_user(request.user))
    if not filters.is_valid():
        return bad_request(request, filters.problems().splitlines())
    cursors, problems = pager.cursor_params(request)
    if problems:
        return bad_request(request, problems)
    data = filters.cleaned_data
    visits = queue.flagged_visits(
        visits=scope_for_user(request.user, filters=filters).visits(), rules=data["rule"] or None, state=data["review"]
    )
    try:
        page = pager.keyset_page(visits.select_related("rep", "outcome"), order=pager.Order(), size=20, **cursors)
    except pager.CursorError as error:
        return bad_request(request, [f"{'after' if cursors['after'] else 'before'}: {error}"])
    items = queue.queue_items(visits=page.object_list)
    return render(
        request,
        "visits/review.html",
        page_context(
            request,
            filters,
            page=page,
            total=visits.count(),
            items=items,
            review_states=queue.REVIEW_STATES,
            kinds=DecisionKind.choices,
            can_decide=user_may_decide(request.user),
            thresholds=rules.rule_thresholds(),
        ),
    )


@require_POST
@decide_required
def review_decide(request: HttpRequest) -> HttpResponse:
    """Record a decision on the chosen visits (among those the reviewer may see); back to where they were."""
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return bad_request(request, [f"{name}: {error}" for name, errors in form.errors.items() for error in errors])
    recorded = queue.decisions_record(
        visits=visits_for_user(request.user), visit_ids=form.cleaned_data["visit"], kind=form.cleaned_data["kind"],
        note=form.cleaned_data["note"], user=request.user,
    )  # fmt: skip
    label = DecisionKind(form.cleaned_data["kind"]).label
    messages.success(request, f"{label}: recorded for {recorded} visit{'s' if recorded != 1 else ''}.")
    back = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return redirect(back if back and safe else "visits:review")

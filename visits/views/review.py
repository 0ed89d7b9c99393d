"""One visit in full, the review queue, recording decisions (one by one, or a filter's low tier at
once), and the rules' precision."""

from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from visits.access import (
    accept_low_required,
    decide_required,
    rep_filter_for_user,
    reports_required,
    reps_for_user,
    scope_for_user,
    user_may_decide,
    visit_for_user,
    visits_for_user,
)
from visits.ingest import review_tally
from visits.ingest.status import freshness
from visits.models import AcceptReason, AccessKind, DecisionKind, FlagRule, RiskTier, Visit
from visits.reports.scope import Scope
from visits.review import precision, queue, rules, stored
from visits.review.forms import BulkAcceptForm, DecisionForm, ReviewFilters, RulesFilters
from visits.security.access_log import access_logged
from visits.views import pager
from visits.views.common import bad_request, page_context


def form_problems(form) -> list[str]:
    """A bound form's errors as the 400 page lists them: 'reason: an accept needs a reason: ...'."""
    return [f"{name}: {error}" for name, errors in form.errors.items() for error in errors]


@reports_required
@access_logged(AccessKind.VISIT)
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


# The queue's sorts (ReviewFilters.sort) as keyset orders: by risk, each risk a group walked
# from 100 down (newest first within it: visit_flagged_risk's order), or by time alone.
# queue.QUEUE_ORDERS as the keyset pager walks them (the CSV reads the same orders with order_by).
PAGER_ORDERS = {
    "risk": pager.Order(group="risk", groups_descending=True),
    "newest": pager.Order(),
    "oldest": pager.Order(newest_first=False),
}


def queue_scoped(request: HttpRequest) -> tuple[ReviewFilters, Scope] | HttpResponse:
    """The review filters bound to the query string and the user's scope of them, or the 400 page
    saying what is wrong with them."""
    filters = ReviewFilters(request.GET, reps=reps_for_user(request.user))
    if not filters.is_valid():
        return bad_request(request, filters.problems().splitlines())
    return filters, scope_for_user(request.user, filters=filters)


def queue_visits(filters: ReviewFilters, scope: Scope) -> QuerySet:
    """The flagged visits the (valid) review filters choose in the scope."""
    data = filters.cleaned_data
    return queue.flagged_visits(
        visits=scope.visits(), rules=data["rule"] or None, state=data["review"], tiers=data["tier"] or None
    )


def queue_filtered(request: HttpRequest) -> tuple[ReviewFilters, QuerySet] | HttpResponse:
    """The review filters bound to the query string and the flagged visits they choose, or the
    400 page saying what is wrong with them."""
    found = queue_scoped(request)
    if isinstance(found, HttpResponse):
        return found
    filters, scope = found
    return filters, queue_visits(filters, scope)


@reports_required
def review_queue(request: HttpRequest) -> HttpResponse:
    """Flagged visits awaiting a decision (or in another review state), riskiest first (or by
    time), with their reasons and the rep's day."""
    found = queue_filtered(request)
    if isinstance(found, HttpResponse):
        return found
    filters, visits = found
    cursors, problems = pager.cursor_params(request)
    if problems:
        return bad_request(request, problems)
    sort = filters.cleaned_data["sort"]
    try:
        page = pager.keyset_page(
            visits.select_related("rep", "outcome"), order=PAGER_ORDERS[sort],
            groups=queue.risk_groups(filters.cleaned_data["tier"]) if sort == "risk" else None, size=20, **cursors,
        )  # fmt: skip
    except pager.CursorError as error:
        return bad_request(request, [f"{'after' if cursors['after'] else 'before'}: {error}"])
    items = queue.queue_items(visits=page.object_list)
    # Reads no more of an index than that, in no order: ordered by time, a tier filter was read
    # from the time index with a table visit per row (87 ms at 1M) instead of the risk index alone.
    total = visits.order_by()[: queue.QUEUE_COUNT_CAP + 1].count()
    return render(
        request,
        "visits/review.html",
        page_context(
            request,
            filters,
            page=page,
            total=min(total, queue.QUEUE_COUNT_CAP),
            total_more=total > queue.QUEUE_COUNT_CAP,
            items=items,
            review_states=queue.REVIEW_STATES,
            sorts=queue.QUEUE_SORTS,
            sort_label=queue.QUEUE_SORTS[sort],
            kinds=DecisionKind.choices,
            can_decide=user_may_decide(request.user),
            thresholds=rules.rule_thresholds(),
        ),
    )


@reports_required
def review_reps(request: HttpRequest) -> HttpResponse:
    """The queue (the same filters) per rep: counts per tier and rule, each row opening the rep's
    queue; from the review tally unless the filters need the visits themselves."""
    found = queue_scoped(request)
    if isinstance(found, HttpResponse):
        return found
    filters, scope = found
    data = filters.cleaned_data
    tallied = review_tally.review_filter(
        scope=scope, reps=rep_filter_for_user(request.user), rules=data["rule"], tiers=data["tier"],
        state=data["review"],
    )  # fmt: skip
    # Counted from the tally, the visits' queryset is never made (its rule filter probes the flags).
    rows = queue.rep_queues(visits=None if tallied is not None else queue_visits(filters, scope), tallied=tallied)
    shown = [rule for rule in FlagRule if any(row.rules.get(rule) for row in rows)]
    return render(
        request,
        "visits/review_reps.html",
        page_context(
            request,
            filters,
            # the counts as text here: a few thousand cells, each an intcomma less to render
            rows=[
                (row, [f"{n:,}" for n in (*row.tier_counts, row.total)], [f"{row.rules.get(r, 0):,}" for r in shown])
                for row in rows
            ],  # fmt: skip
            rules_shown=shown,
            review_url=reverse("visits:review"),
            tiers=RiskTier.choices,
            total=sum(row.total for row in rows),
            review_states=queue.REVIEW_STATES,
            sorts=queue.QUEUE_SORTS,
        ),
    )


@require_POST
@decide_required
def review_decide(request: HttpRequest) -> HttpResponse:
    """Record a decision on the chosen visits (among those the reviewer may see); back to where they were."""
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return bad_request(request, form_problems(form))
    data = form.cleaned_data
    recorded = queue.decisions_record(
        visits=visits_for_user(request.user), visit_ids=data["visit"], kind=data["kind"], reason=data["reason"],
        note=data["note"], user=request.user,
    )  # fmt: skip
    label = DecisionKind(data["kind"]).label + (f" ({AcceptReason(data['reason']).label})" if data["reason"] else "")
    messages.success(request, f"{label}: recorded for {recorded} visit{'s' if recorded != 1 else ''}.")
    back = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return redirect(back if back and safe else "visits:review")


@accept_low_required
def review_accept_low(request: HttpRequest) -> HttpResponse:
    """Accept every low-tier visit awaiting a decision in the queue's filters (the query string):
    GET asks to confirm, with the count, the reason and the note; POST records them, unless the
    count has changed since (then it asks again)."""
    filters = ReviewFilters(request.GET, reps=reps_for_user(request.user))
    if not filters.is_valid():
        return bad_request(request, filters.problems().splitlines())
    scope = scope_for_user(request.user, filters=filters)
    rule_names = filters.cleaned_data["rule"] or None
    count = queue.low_tier_awaiting(visits=scope.visits(), rules=rule_names).count()
    form = BulkAcceptForm(request.POST if request.method == "POST" else None, initial={"expected": count})
    changed = False
    if request.method == "POST":
        if not form.is_valid():
            return bad_request(request, form_problems(form))
        data = form.cleaned_data
        changed = data["expected"] != count
        if not changed:
            recorded = queue.low_tier_accept(
                visits=scope.visits(), rules=rule_names, reason=data["reason"], note=data["note"], user=request.user
            )
            plural = "s" if recorded != 1 else ""
            messages.success(
                request,
                f"Accepted ({AcceptReason(data['reason']).label}): recorded for {recorded:,} low-tier visit{plural}.",
            )
            query = filters.query_string()
            return redirect(reverse("visits:review") + (f"?{query}" if query else ""))
        form = BulkAcceptForm(initial={**data, "expected": count})
    return render(
        request,
        "visits/accept_low.html",
        page_context(request, filters, count=count, changed=changed, form=form, low=RiskTier.LOW.label),
    )


@reports_required
def review_rules(request: HttpRequest) -> HttpResponse:
    """Per flag rule and per risk tier: the live visits flagged, how they were decided, the share rejected."""
    filters = RulesFilters(request.GET, reps=reps_for_user(request.user))
    if not filters.is_valid():
        return bad_request(request, filters.problems().splitlines())
    counts = rules_counted(request, filters)
    return render(request, "visits/rules.html", page_context(request, filters, counts=counts, tiers=RiskTier.choices))


def rules_counted(request: HttpRequest, filters: RulesFilters) -> precision.Precision:
    """The rules' precision for the (valid) filters, from the review tally unless they need the
    visits themselves: the page's and its CSV's."""
    scope = scope_for_user(request.user, filters=filters)
    tiers = filters.cleaned_data["tier"] or None
    tallied = review_tally.review_filter(scope=scope, reps=rep_filter_for_user(request.user), tiers=tiers)
    return precision.rules_precision(visits=scope.visits(), tiers=tiers, tallied=tallied)

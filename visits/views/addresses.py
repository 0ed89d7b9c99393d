"""The suspect addresses: the ranked list, one customer with its visits and marks, and a mark."""

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from visits.access import (
    customer_for_user,
    customers_for_user,
    decide_required,
    reports_required,
    user_may_decide,
    visits_for_user,
)
from visits.ingest.status import freshness
from visits.review import addresses
from visits.views.common import bad_request

VISITS_SHOWN = 100  # a customer's newest visits on its page
HISTORY_SHOWN = 20  # the newest marks on the list page


def _context(request: HttpRequest, **extra) -> dict:
    return {
        "freshness": freshness(), "can_decide": user_may_decide(request.user),
        "far_km": settings.DISTANCE_FAR_KM, "suspect_reps": settings.SUSPECT_ADDRESS_REPS, **extra,
    }  # fmt: skip


@reports_required
def suspect_addresses(request: HttpRequest) -> HttpResponse:
    """Customers whose address in Sell is likely wrong, by visits affected, with the marks' history."""
    filters = addresses.SuspectFilters(request.GET)
    if not filters.is_valid():
        return bad_request(request, filters.problems())
    data = filters.cleaned_data
    customers = customers_for_user(request.user)
    ranked = addresses.suspects_ranked(customers=customers, mark=data["mark"] or "")
    paginator = Paginator(ranked, addresses.PAGE_SIZE, allow_empty_first_page=True)
    if data["page"] > paginator.num_pages:
        return bad_request(request, [f"page: there are {paginator.num_pages} pages"])
    paged = min(paginator.num_pages, addresses.PAGES_MAX)
    page = paginator.page(data["page"])
    rows = list(page.object_list)
    latest = addresses.latest_marks(customer_ids=[c.id for c in rows])
    for customer in rows:
        customer.last_mark = latest.get(customer.id)  # for the template
    history = addresses.marks_recent(customers=customers, limit=HISTORY_SHOWN)
    return render(
        request,
        "visits/addresses.html",
        _context(
            request, page=page, rows=rows, total=paginator.count, mark=data["mark"] or "",
            mark_states=addresses.MARK_STATES, history=history, paged=paged,
            shown_max=addresses.PAGES_MAX * addresses.PAGE_SIZE,
        ),
    )  # fmt: skip


@reports_required
def suspect_address(request: HttpRequest, customer_id: int) -> HttpResponse:
    """One customer: its figures, its newest visits, every mark on it."""
    customer = customer_for_user(request.user, customer_id)
    visits = (
        visits_for_user(request.user)
        .filter(resource_id=customer.resource_id, resource_type=customer.resource_type)
        .select_related("rep")
        .order_by("-visited_at", "-id")
    )
    shown = list(visits[: VISITS_SHOWN + 1])
    return render(
        request,
        "visits/address.html",
        _context(
            request, customer=customer, visits=shown[:VISITS_SHOWN], more=len(shown) > VISITS_SHOWN,
            marks=customer.address_marks.select_related("decided_by"), visits_shown=VISITS_SHOWN,
        ),
    )  # fmt: skip


@require_POST
@decide_required
def address_mark(request: HttpRequest, customer_id: int) -> HttpResponse:
    """Mark a customer's address wrong in Sell, or undo it; back to the customer's page."""
    customer = customer_for_user(request.user, customer_id)
    form = addresses.AddressMarkForm(request.POST)
    if not form.is_valid():
        return bad_request(request, form.problems())
    try:
        _, changed = addresses.address_mark(
            customer=customer, wrong=form.cleaned_data["wrong"], note=form.cleaned_data["note"], user=request.user
        )
    except addresses.MarkRefused as refused:
        messages.warning(request, str(refused))
    else:
        what = "marked wrong in Sell" if customer.address_wrong else "no longer marked wrong"
        messages.success(request, f"{customer}: address {what}; {changed} visit{'s' if changed != 1 else ''} changed.")
    return redirect("visits:address", customer_id=customer.id)

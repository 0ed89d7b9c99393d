"""Who may see what: the one place that says which visits, reps and reports a user may see, and
the decorators the views wear. Views never fetch a visit or a rep, nor check a permission, by
themselves, so a narrower rule is a change here and nowhere else.

The rule:
- A user with `visits.view_reports` may see the reports; without it, nothing.
- Who among them sees every rep: superusers and the holders of `visits.view_all_reps` (the
  Directors, read-only, and the Reviewers and Lead reviewers, who decide).
- Everyone else (the Managers) sees the reps whose `reports_to` chain leads to the Sell user their
  account is linked to (`SellLink`, made by e-mail or by an admin: `visits.accounts`), at any
  depth, and that user. A cycle in `reports_to` ends the walk. A Manager with no link sees no data:
  every page says why and whom to ask.
- Within what they see, a visit deleted in Sell keeps its own page, map and summary (for audit)
  but is in no list or count. A visit or rep outside one's reach is a 404.
- Deciding on flagged visits needs `visits.review_visits`; accepting every low-tier visit of a
  filter at once also needs `visits.accept_low_risk` (Lead reviewers); the ingestion status pages
  are for staff; one's own mail settings, which show no data, for anyone signed in; the access
  log for superusers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from functools import wraps
from typing import TypeVar

from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.decorators import login_required, user_passes_test
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from visits.models import Customer, Rep, SellLink, Visit, VisitQuerySet
from visits.reports.filters import ReportFilters
from visits.reports.scope import Scope

# The rules a view can carry, set by the decorators below as the view's `access_rule`.
RULE_REPORTS = "reports"  # signed in and may see the reports
RULE_DECIDE = "decide"  # the reports, and may decide on flagged visits
RULE_ACCEPT_LOW = "accept_low"  # may decide, and accept a filter's whole low tier at once
RULE_STAFF = "staff"  # signed in as staff (the ingestion status pages)
RULE_SIGNED_IN = "signed_in"  # signed in, whoever: one's own settings, no visits or reps
RULE_SUPERUSER = "superuser"  # signed in as a superuser (the access log)

DECIDE_REFUSED = "Only Reviewers can decide on flagged visits."
ACCEPT_LOW_REFUSED = "Only Lead reviewers can accept all low-tier visits of a filter at once."
SUPERUSER_REFUSED = "Only superusers can read the access log."
# Where a user's reps are kept for the life of the user object (one request, one digest).
_CACHED, _LINKED = "_visits_rep_ids", "_visits_sell_rep"

# The access functions called in this context, while an `access_trace` is open (tests use it to
# see that a page went through here); None, and nothing kept, otherwise.
_trace: ContextVar[list[tuple[str, dict]] | None] = ContextVar("visits_access_trace", default=None)

_Rows = TypeVar("_Rows", bound=QuerySet)


@contextmanager
def access_trace() -> Iterator[list[tuple[str, dict]]]:
    """Collect (function name, arguments) for every access function called inside the block."""
    calls: list[tuple[str, dict]] = []
    token = _trace.set(calls)
    try:
        yield calls
    finally:
        _trace.reset(token)


def _note(name: str, **arguments) -> None:
    calls = _trace.get()
    if calls is not None:
        calls.append((name, arguments))


# --- What a user may do --------------------------------------------------------------------


def user_may_see_reports(user) -> bool:
    _note("user_may_see_reports")
    return user.has_perm("visits.view_reports")


def user_may_decide(user) -> bool:
    """Whether the user may record decisions on flagged visits (pages show the form only then)."""
    _note("user_may_decide")
    return user.has_perm("visits.review_visits")


def user_may_accept_low(user) -> bool:
    """Whether the user may accept every low-tier visit of a filter at once (pages offer it only then)."""
    _note("user_may_accept_low")
    return user.has_perm("visits.review_visits") and user.has_perm("visits.accept_low_risk")


def user_is_staff(user) -> bool:
    """The admin's own rule (`staff_member_required`): an active staff account."""
    _note("user_is_staff")
    return user.is_active and user.is_staff


def user_is_signed_in(user) -> bool:
    """Any signed-in account: what a page about the user's own account needs (it shows no data)."""
    _note("user_is_signed_in")
    return user.is_authenticated


def user_is_superuser(user) -> bool:
    """An active superuser: who may read the access log."""
    _note("user_is_superuser")
    return user.is_active and user.is_superuser


def _reports_check(user) -> None:
    if not user_may_see_reports(user):
        raise PermissionDenied("This account may not see the reports.")


# --- Whose reps a user sees ----------------------------------------------------------------


def user_sees_every_rep(user) -> bool:
    """Superusers, Directors, Reviewers and Lead reviewers (`visits.view_all_reps`)."""
    _note("user_sees_every_rep")
    return user.is_superuser or user.has_perm("visits.view_all_reps")


def reporting_line(*, rep_id: int, reports_to: Iterable[tuple[int, int | None]]) -> frozenset[int]:
    """`rep_id` and every rep whose chain of managers leads to it, at any depth, from the
    (rep, manager) pairs `reports_to`. Each rep is walked once, so a cycle ends the walk."""
    reports: dict[int, list[int]] = defaultdict(list)
    for rep, manager in reports_to:
        if manager is not None:
            reports[manager].append(rep)
    found, waiting = {rep_id}, [rep_id]
    while waiting:
        for rep in reports[waiting.pop()]:
            if rep not in found:
                found.add(rep)
                waiting.append(rep)
    return frozenset(found)


def sell_rep_of(user) -> int | None:
    """The Sell user (a rep id) the account is linked to, or None; read once per user object."""
    if not user.is_authenticated:
        return None
    if not hasattr(user, _LINKED):
        setattr(user, _LINKED, SellLink.objects.filter(user_id=user.id).values_list("rep_id", flat=True).first())
    return getattr(user, _LINKED)


def _rep_ids(user) -> frozenset[int] | None:
    """The reps the user sees (None: every rep), worked out once per user object."""
    if user_sees_every_rep(user):
        return None
    cached = getattr(user, _CACHED, None)
    if cached is None:
        rep_id = sell_rep_of(user)
        pairs = Rep.objects.filter(reports_to__isnull=False).values_list("id", "reports_to")
        cached = frozenset() if rep_id is None else reporting_line(rep_id=rep_id, reports_to=pairs)
        setattr(user, _CACHED, cached)
    return cached


def user_is_unlinked(user) -> bool:
    """A reports user who sees only a reporting line but has no Sell user to start it from."""
    _note("user_is_unlinked")
    return user_may_see_reports(user) and not user_sees_every_rep(user) and sell_rep_of(user) is None


def scope_described(user) -> str:
    """Whose reps a Manager sees, as the page header says it ("Patricia Holloway's reporting line:
    14 reps"); empty for a user who sees every rep, or none, or is not signed in."""
    if not user.is_authenticated or not user_may_see_reports(user) or user_sees_every_rep(user):
        return ""
    rep_id = sell_rep_of(user)
    if rep_id is None:
        return ""
    name = Rep.objects.filter(id=rep_id).values_list("name", flat=True).first()
    count = len(_rep_ids(user) or ())
    return f"{Rep.label_for(rep_id, name)}'s reporting line: {count} rep{'' if count == 1 else 's'}"


# --- What a user may see -------------------------------------------------------------------


def _reach(user, visits: _Rows, *, rep: str = "rep_id") -> _Rows:
    """`visits` narrowed to those of the reps the user may see."""
    _reports_check(user)
    return _narrowed(user, visits, rep=rep)


def _narrowed(user, rows: _Rows, *, rep: str) -> _Rows:
    allowed = _rep_ids(user)
    return rows if allowed is None else rows.filter(**{f"{rep}__in": allowed})


def rows_for_user(user, rows: _Rows, *, rep: str = "rep_id") -> _Rows:
    """Any rows that belong to a rep (visits, flags, decisions by `visit__rep_id`, reps by `id`),
    narrowed to the reps the user may see; none for a user who may not see the reports. For the
    admin's lists, whose own permission checks come first."""
    _note("rows_for_user")
    if not user_may_see_reports(user) and not user.is_superuser:
        return rows.none()
    return _narrowed(user, rows, rep=rep)


def visits_for_user(user) -> VisitQuerySet:
    """The visits not deleted in Sell that the user may see; PermissionDenied if none."""
    _note("visits_for_user")
    return _reach(user, Visit.objects.live())


def visit_lookup_for_user(user, visit_id: int, *, queryset: QuerySet | None = None) -> QuerySet[Visit]:
    """The user's visit `visit_id` as a queryset, empty when it is not theirs, for a view that reads
    it its own way in one query (the visit map). Deleted visits are included: a visit's own page,
    map and summary still show a visit deleted in Sell, marked so. `queryset` shapes the read
    (select_related, only); it is narrowed here, never widened."""
    _note("visit_lookup_for_user", visit_id=visit_id)
    # id=, not id__in: Django answers an id too large for the database with no rows, not an error.
    return _reach(user, Visit.objects.all() if queryset is None else queryset).filter(id=visit_id)


def visit_for_user(user, visit_id: int, *, queryset: QuerySet | None = None) -> Visit:
    """The user's visit `visit_id` (deleted in Sell or not, as `visit_lookup_for_user`); Http404
    when there is no such visit among those they may see."""
    _note("visit_for_user", visit_id=visit_id)
    return get_object_or_404(visit_lookup_for_user(user, visit_id, queryset=queryset))


def reps_for_user(user) -> QuerySet[Rep]:
    """The reps the user may see: the filter bar offers these, and a rep's page is one of them."""
    _note("reps_for_user")
    return _reach(user, Rep.objects.all(), rep="id")


def rep_filter_for_user(user) -> frozenset[int] | None:
    """The reps whose visits the user may see, as a filter on rep ids for what is counted without
    reading the visits (the tallies) or for a user outside a request (the digests): None for every
    rep, an empty set for a Manager with no Sell user. It says what _reach says of the visits."""
    _note("rep_filter_for_user")
    _reports_check(user)
    return _rep_ids(user)


def rep_for_user(user, rep_id: int) -> Rep:
    """The user's rep `rep_id`; Http404 when there is no such rep among those they may see."""
    _note("rep_for_user", rep_id=rep_id)
    return get_object_or_404(reps_for_user(user), id=rep_id)


def customers_for_user(user) -> QuerySet[Customer]:
    """The customers the user may see (the suspect addresses): those a rep they see has visited."""
    _note("customers_for_user")
    _reports_check(user)
    allowed = _rep_ids(user)
    if allowed is None:
        return Customer.objects.all()
    visited = Visit.objects.filter(
        resource_id=OuterRef("resource_id"), resource_type=OuterRef("resource_type"), rep_id__in=allowed
    )
    return Customer.objects.filter(Exists(visited))


def customer_for_user(user, customer_id: int) -> Customer:
    """The user's customer `customer_id`; Http404 when there is no such customer among those they may see."""
    _note("customer_for_user", customer_id=customer_id)
    return get_object_or_404(customers_for_user(user), id=customer_id)


def scope_for_user(user, *, filters: ReportFilters) -> Scope:
    """The scope every report counts: the bound, valid report filters, within what the user may see.
    The one scope builder; views never take `filters.scope()` themselves."""
    _note("scope_for_user")
    _reports_check(user)
    scope, allowed = filters.scope(), _rep_ids(user)
    if allowed is None:
        return scope
    return replace(scope, reps=allowed if scope.reps is None else scope.reps & allowed)


# --- The decorators the views wear ---------------------------------------------------------


def _marked(view: Callable, rule: str) -> Callable:
    setattr(view, "access_rule", rule)  # noqa: B010 (read by tests/test_access.py: every view carries a rule)
    return view


def reports_required(view: Callable) -> Callable:
    """Signed in (else the login page) and may see the reports (else a polite 403 page)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not user_may_see_reports(request.user):
            return render(request, "visits/no_access.html", status=403)
        if user_is_unlinked(request.user):
            return render(request, "visits/no_team.html", {"admins": admins_to_ask()}, status=403)
        return view(request, *args, **kwargs)

    return _marked(login_required(wrapped), RULE_REPORTS)


def admins_to_ask() -> list[str]:
    """Whom an unlinked Manager should ask: the active superusers, by name and e-mail."""
    from django.contrib.auth.models import User

    admins = User.objects.filter(is_superuser=True, is_active=True).order_by("username")[:5]
    return [f"{a.get_full_name() or a.username}" + (f" <{a.email}>" if a.email else "") for a in admins]


def decide_required(view: Callable) -> Callable:
    """The reports rule, and may decide on flagged visits (else a 403 page saying so)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not user_may_decide(request.user):
            return render(request, "visits/no_access.html", {"reason": DECIDE_REFUSED}, status=403)
        return view(request, *args, **kwargs)

    return _marked(reports_required(wrapped), RULE_DECIDE)


def accept_low_required(view: Callable) -> Callable:
    """The decide rule, and may accept a filter's low tier at once (else a 403 page saying so)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not user_may_accept_low(request.user):
            return render(request, "visits/no_access.html", {"reason": ACCEPT_LOW_REFUSED}, status=403)
        return view(request, *args, **kwargs)

    return _marked(decide_required(wrapped), RULE_ACCEPT_LOW)


def signed_in_required(view: Callable) -> Callable:
    """Signed in (else the login page), whatever the groups: for pages about one's own account
    (the mail settings), which show no visit, rep or report."""
    guarded = user_passes_test(user_is_signed_in, redirect_field_name=REDIRECT_FIELD_NAME)(view)
    return _marked(guarded, RULE_SIGNED_IN)


def staff_required(view: Callable) -> Callable:
    """Signed in as staff, else the admin's login page (as the admin's own `staff_member_required`)."""
    guarded = user_passes_test(user_is_staff, login_url="admin:login", redirect_field_name=REDIRECT_FIELD_NAME)(view)
    return _marked(guarded, RULE_STAFF)


def superuser_required(view: Callable) -> Callable:
    """Signed in (else the login page) as an active superuser (else a 403 page saying so)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not user_is_superuser(request.user):
            return render(request, "visits/no_access.html", {"reason": SUPERUSER_REFUSED}, status=403)
        return view(request, *args, **kwargs)

    return _marked(login_required(wrapped), RULE_SUPERUSER)

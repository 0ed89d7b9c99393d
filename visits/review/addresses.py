"""The suspect addresses (/review/addresses/) and reviewers' marks on them: the suspects in their
order, and a mark ("address wrong in Sell", or undone) recorded append-only (AddressMark, kept so
by the triggers of TRIGGER_SET), copied onto the customer's visits, their flags then recomputed.
"""

from __future__ import annotations

from django import forms
from django.db import connection as default_connection
from django.db import transaction
from django.db.models import Q, QuerySet

from visits import triggers
from visits.geo.suspects import customer_visits_mark
from visits.models import AddressMark, Customer
from visits.review import flags
from visits.review.immutable import append_only_statements

TABLE = AddressMark._meta.db_table
EDIT_MESSAGE = "address marks are never edited; record a new mark instead"
DELETE_MESSAGE = "address marks are never deleted"
TRIGGERS = {
    "visits_address_mark_immutable": ("UPDATE", EDIT_MESSAGE),
    "visits_address_mark_undeletable": ("DELETE", DELETE_MESSAGE),
}
PG_TRUNCATE = "visits_address_mark_untruncatable"

# The page's filter on the marks: every suspect, those not marked, those marked wrong.
MARK_STATES = {"": "All", "unmarked": "Not marked", "wrong": "Marked wrong in Sell"}
PAGE_SIZE = 50
# 5,000 customers, the most affected: further pages are refused (a 400), the count still says how
# many. Pages are read by OFFSET along customer_suspect_rank: page 400 took 180 ms on PostgreSQL.
PAGES_MAX = 100


def names(*, vendor: str) -> list[str]:
    return [*TRIGGERS, PG_TRUNCATE] if vendor == "postgresql" else list(TRIGGERS)


TRIGGER_SET = triggers.TriggerSet(
    label="address mark",
    table=TABLE,
    names=lambda vendor: names(vendor=vendor),
    statements=lambda vendor: append_only_statements(
        vendor, table=TABLE, triggers=TRIGGERS, truncate=(PG_TRUNCATE, DELETE_MESSAGE)
    ),
)


def address_mark_triggers_drop(*, connection=default_connection) -> None:
    """Only for wiping a whole database (the tests' flush); `migrate` puts them back."""
    triggers.trigger_set_drop(connection=connection, trigger_set=TRIGGER_SET)


def suspects_ranked(*, customers: QuerySet[Customer], mark: str = "") -> QuerySet[Customer]:
    """The suspect customers, and those marked wrong (still shown, to be undone), by visits affected,
    then reps, then id (the index customer_suspect_rank holds exactly these, in this order)."""
    shown = customers.filter(Q(suspect=True) | Q(address_wrong=True))
    if mark == "unmarked":
        shown = shown.filter(address_wrong=False)
    elif mark == "wrong":
        shown = shown.filter(address_wrong=True)
    return shown.order_by("-far_visits", "-far_reps", "id")


def latest_marks(*, customer_ids: list[int]) -> dict[int, AddressMark]:
    """Each customer's latest mark, in one query."""
    latest: dict[int, AddressMark] = {}
    marks = AddressMark.objects.filter(customer_id__in=customer_ids).select_related("decided_by")
    for mark in marks.order_by("customer_id", "decided_at", "id"):
        latest[mark.customer_id] = mark  # oldest first: the last one seen wins
    return latest


def marks_recent(*, customers: QuerySet[Customer], limit: int) -> list[AddressMark]:
    """The newest marks on these customers (the audit trail), with who made them."""
    marks = AddressMark.objects.filter(customer__in=customers).select_related("customer", "decided_by")
    return list(marks.order_by("-decided_at", "-id")[:limit])


class MarkRefused(ValueError):
    """A mark that would change nothing; its message is for the reviewer."""


def address_mark(*, customer: Customer, wrong: bool, note: str, user) -> tuple[AddressMark, int]:
    """Record a reviewer's mark on a customer (wrong in Sell, or undone), in one transaction with
    Customer.address_wrong and its visits' Visit.customer_address_wrong (recorded for the flags);
    then the flags are recomputed, so the queue shows it at once. Returns the
    mark and the visits changed; MarkRefused when the customer is already so."""
    with transaction.atomic():
        held = Customer.objects.select_for_update().get(pk=customer.pk)
        if held.address_wrong == wrong:
            state = "already marked wrong in Sell" if wrong else "not marked wrong"
            raise MarkRefused(f"{held.resource_type} {held.resource_id} is {state}: nothing recorded.")
        mark = AddressMark.objects.create(customer=held, wrong=wrong, note=note, decided_by=user)
        held.address_wrong = wrong
        held.save(update_fields=["address_wrong", "updated_at"])
        changed = customer_visits_mark(customer=held)
    flags.flags_refresh()
    customer.address_wrong = wrong
    return mark, changed


class SuspectFilters(forms.Form):
    """The page's query string: which marks, which page."""

    mark = forms.ChoiceField(
        required=False,
        choices=list(MARK_STATES.items()),
        error_messages={"invalid_choice": "%(value)s is not one of " + ", ".join(k for k in MARK_STATES if k)},
    )
    page = forms.IntegerField(
        required=False, min_value=1, max_value=PAGES_MAX, error_messages={"invalid": "must be a whole number"}
    )

    def clean_page(self) -> int:
        return self.cleaned_data.get("page") or 1

    def problems(self) -> list[str]:
        return [f"{name}: {error}" for name, errors in self.errors.items() for error in errors]


class AddressMarkForm(forms.Form):
    """A mark: `wrong` 1 (address wrong in Sell) or 0 (undo), an optional note."""

    wrong = forms.TypedChoiceField(
        choices=[("1", "Address wrong in Sell"), ("0", "Undo the mark")],
        coerce=lambda value: value == "1",
        error_messages={"required": "say whether the address is wrong (1) or the mark undone (0)",
                        "invalid_choice": "%(value)s is not 1 or 0"},
    )  # fmt: skip
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)

    def problems(self) -> list[str]:
        return [f"{name}: {error}" for name, errors in self.errors.items() for error in errors]

"""Admin views of what ingestion stored (read-only: Sell is the source) and the review queue,
whose decisions are added, never edited or deleted."""

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import unescape_string_literal

from visits.access import rows_for_user
from visits.models import (
    AcceptReason,
    AccessKind,
    AccessLogEntry,
    CoreApiState,
    Decision,
    DecisionKind,
    FlaggedVisit,
    FlagRule,
    Gap,
    MailSent,
    Outcome,
    RateAlert,
    RejectedItem,
    Rep,
    SellLink,
    SellLinkVia,
    SyncState,
    Visit,
    YearTally,
)
from visits.reports.filters import id_coerce
from visits.review.queue import REVIEW_STATES, decisions_record, flagged_visits
from visits.security.access_log import access_log_response
from visits.views.common import RESOURCE_TYPES


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Rep)
class RepAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "email", "status", "role", "team_name", "group_name", "reports_to", "core_synced_at"]
    list_filter = ["status", "role"]
    search_fields = ["name", "email", "=id"]

    def get_queryset(self, request):
        return rows_for_user(request.user, super().get_queryset(request), rep="id")


@admin.register(Outcome)
class OutcomeAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "name_seen_at"]
    search_fields = ["name"]


class CappedPaginator(Paginator):
    """Counts at most CAP rows (the admin's page links stop there; filters narrow further): a
    full count of a million visits costs more than the page itself."""

    CAP = 1_000

    @cached_property
    def count(self) -> int:
        # No ORDER BY inside: the database stops at CAP + 1 rows in whatever order is cheapest.
        return self.object_list.order_by()[: self.CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.CAP

    def page(self, number):
        """The page's ids first (from an index, where one holds the filters), then its rows."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = min(bottom + self.per_page, self.count)  # the last page ends at the (capped) count
        ids = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        return self._get_page(self.object_list.filter(pk__in=ids), number, self)


class InSellFilter(admin.SimpleListFilter):
    """Live visits by default (those the reports count, in the order their index keeps), or the
    ones deleted in Sell (a small index of their own); not both at once, which no index orders."""

    title = "in Sell"
    parameter_name = "in_sell"

    def lookups(self, request, model_admin):
        return [("deleted", "Deleted in Sell")]

    def choices(self, changelist):
        live = changelist.get_query_string(remove=[self.parameter_name])
        yield {"selected": self.value() is None, "query_string": live, "display": "Live"}
        for lookup, title in self.lookup_choices:
            yield {"selected": self.value() == lookup, "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup})}  # fmt: skip

    def queryset(self, request, queryset):
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset.live()


class FixedChoicesFilter(admin.SimpleListFilter):
    """A filter on a field with its choices written down, not read from the rows (which a list
    filter on a plain field does, with a DISTINCT over every row)."""

    field = ""
    fixed: list[tuple[str, str]] = []

    def lookups(self, request, model_admin):
        return self.fixed

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class ResourceTypeFilter(FixedChoicesFilter):
    title = parameter_name = field = "resource_type"
    fixed = [(value, value) for value in RESOURCE_TYPES]

    def queryset(self, request, queryset):
        if self.value() and not YearTally.objects.filter(resource_type=self.value(), visits__gt=0).exists():
            return queryset.none()  # no live visit of that type (the tallies say so): no scan for nothing
        return super().queryset(request, queryset)


class BigListAdmin(ReadOnlyAdmin):
    """A changelist over up to millions of visits: no full counts, page links up to
    CappedPaginator.CAP rows, sorting only on what an index keeps in order, no date drill-down.
    The search takes a visit id (a whole number), else part of a rep's name (that rep's visits),
    else text of the summary (which reads every row: the one search that grows with the table).
    Its list and each visit's page show positions: each writes an access log entry."""

    paginator = CappedPaginator
    show_full_result_count = False
    sortable_by = ["id", "visited_at"]
    search_fields = ["summary"]  # shows the search box; get_search_results does the work
    search_help_text = "A visit id, part of a rep's name, or else text from the summary."

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        return access_log_response(request, response, kind=AccessKind.VISIT)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        visit_id = int(object_id) if str(object_id).isdigit() else None
        return access_log_response(request, response, kind=AccessKind.VISIT, object_id=visit_id)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if term[:1] in "\"'" and term[:1] == term[-1:] and len(term) > 1:
            term = unescape_string_literal(term)
        if not term:
            return queryset, False
        try:
            return queryset.filter(id=id_coerce(term)), False
        except ValueError:
            pass
        reps = list(Rep.objects.filter(name__icontains=term).values_list("id", flat=True))
        if reps:  # a rep's name: their visits, read from the (rep, visited_at) index
            return queryset.filter(rep_id__in=reps), False
        return queryset.filter(summary__icontains=term), False


@admin.register(Visit)
class VisitAdmin(BigListAdmin):
    list_display = ["id", "visited_at", "rep", "outcome", "verification_status", "latitude", "longitude", "deleted_at"]
    list_filter = [InSellFilter, ("visited_at", admin.DateFieldListFilter), "verification_status", ResourceTypeFilter]
    list_select_related = ["rep", "outcome"]

    def get_queryset(self, request):
        return rows_for_user(request.user, super().get_queryset(request))


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = [
        "stream",
        "at_top",
        "last_poll_at",
        "newest_event_time",
        "events_applied",
        "items_rejected",
        "last_error",
    ]


@admin.register(CoreApiState)
class CoreApiStateAdmin(ReadOnlyAdmin):
    """A Core API feature a 403 switched off stays off until a superuser switches it back on here
    (after the plan changed, say); the next refresh then asks Sell again."""

    list_display = ["feature", "available", "refused_at", "refused_message", "last_success_at", "last_error_at"]
    actions = ["switch_on"]

    @admin.action(description="Switch back on (ask Sell again)", permissions=["switch"])
    def switch_on(self, request, queryset):
        switched = queryset.filter(available=False).update(available=True, refused_at=None, refused_message="")
        self.message_user(request, f"{switched} Core API feature(s) switched back on.", messages.SUCCESS)

    def has_switch_permission(self, request) -> bool:
        return request.user.is_superuser


@admin.register(Gap)
class GapAdmin(ReadOnlyAdmin):
    list_display = ["stream", "start", "end", "recorded_at", "reason"]


@admin.register(RejectedItem)
class RejectedItemAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "stream", "reason"]
    list_filter = ["stream"]
    search_fields = ["reason", "raw"]


class ReviewStateFilter(admin.SimpleListFilter):
    title = "review"
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return [(k, v) for k, v in REVIEW_STATES.items() if k != "all"]

    def queryset(self, request, queryset):
        if self.value():
            return flagged_visits(visits=queryset, state=self.value())
        return queryset


class RuleFilter(admin.SimpleListFilter):
    title = "flag"
    parameter_name = "rule"

    def lookups(self, request, model_admin):
        return FlagRule.choices

    def queryset(self, request, queryset):
        return flagged_visits(visits=queryset, rules=[self.value()], state="all") if self.value() else queryset


class ScopedRepFilter(admin.RelatedFieldListFilter):
    """The reps to filter by: only those the user may see (visits.access)."""

    def field_choices(self, field, request, model_admin):
        reps = rows_for_user(request.user, Rep.objects.all(), rep="id")
        return [(rep.id, str(rep)) for rep in reps.only("id", "name")]


class DecisionInline(admin.TabularInline):
    model = Decision
    extra = 0
    fields = ["decided_at", "kind", "reason", "decided_by", "note"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("decided_by")  # one query, however many decisions


def decide(kind: str):
    """The bulk action recording a `kind` decision on the selected visits (as `decide_<kind>`)."""

    def action(modeladmin, request, queryset):
        recorded = decisions_record(
            visit_ids=list(queryset.values_list("id", flat=True)), kind=kind, note="Decided in bulk in the admin.",
            reason=AcceptReason.OTHER if kind == DecisionKind.ACCEPT else "", user=request.user,
        )  # fmt: skip
        modeladmin.message_user(
            request, f"{DecisionKind(kind).label}: recorded for {recorded} visits.", messages.SUCCESS
        )

    action.__name__ = f"decide_{kind}"  # the admin names an action by its function
    return admin.action(description=f"Decide: {DecisionKind(kind).label}", permissions=["review"])(action)


@admin.register(FlaggedVisit)
class FlaggedVisitAdmin(BigListAdmin):
    """The review queue: visits with a flag, filterable, decided on in bulk."""

    list_display = ["id", "visited_at", "rep", "verification_status", "flags", "review"]
    list_filter = [ReviewStateFilter, RuleFilter, ("visited_at", admin.DateFieldListFilter), "verification_status",
                   ("rep", ScopedRepFilter)]  # fmt: skip
    list_select_related = ["rep"]
    inlines = [DecisionInline]
    actions = [decide(DecisionKind.ACCEPT), decide(DecisionKind.REJECT), decide(DecisionKind.FOLLOW_UP)]

    def get_queryset(self, request):
        live = rows_for_user(request.user, super().get_queryset(request).live().prefetch_related("flags"))
        return flagged_visits(visits=live, state="all")

    def has_review_permission(self, request):
        return request.user.has_perm("visits.review_visits")

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("visits.view_reports") or super().has_view_permission(request, obj)

    @admin.display(description="flags")
    def flags(self, obj):
        return ", ".join(f.get_rule_display() for f in obj.flags.all())

    @admin.display(description="review")
    def review(self, obj):
        return DecisionKind(obj.review_status).label if obj.review_status else "Awaiting"


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    """Every decision ever recorded: the audit trail. Nothing here can be changed or removed."""

    list_display = ["decided_at", "visit_link", "kind", "reason", "decided_by", "note"]
    # Dates as ranges, not a drill-down (on SQLite that calls a Python function for every decision).
    list_filter = [("decided_at", admin.DateFieldListFilter), "kind", "reason", "decided_by"]
    list_select_related = ["decided_by"]  # not the visit: joining a million visits to sort the page cost more
    search_fields = ["note"]  # and a visit id: get_search_results
    search_help_text = "A visit id, or text from the note."

    def get_queryset(self, request):
        return rows_for_user(request.user, super().get_queryset(request), rep="visit__rep_id")

    def get_search_results(self, request, queryset, search_term):
        try:  # a visit's id: its decisions, by the column itself (no join to the visits)
            return queryset.filter(visit_id=id_coerce(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    @admin.display(description="visit", ordering="visit_id")
    def visit_link(self, obj):
        return format_html('<a href="{}">Visit {}</a>', reverse("admin:visits_visit_change", args=[obj.visit_id]),
                           obj.visit_id)  # fmt: skip


@admin.register(AccessLogEntry)
class AccessLogEntryAdmin(ReadOnlyAdmin):
    """Who saw whose location data (security/access_log.py): superusers only, read-only, with a
    form above the list that downloads it as CSV (/access_log.csv). Days as ranges, not a
    drill-down: a date hierarchy reads every entry's date for its links on each page."""

    list_display = ["at", "username", "kind", "path", "filters", "object_id", "rows"]
    list_filter = [("at", admin.DateFieldListFilter), "kind", "user"]
    paginator = CappedPaginator
    show_full_result_count = False
    sortable_by = ["at"]
    change_list_template = "admin/visits/accesslogentry/change_list.html"

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), "kinds": AccessKind.choices})


@admin.register(MailSent)
class MailSentAdmin(ReadOnlyAdmin):
    """Every digest and rate alert mailed, or tried (visits/notify): to whom, about which week,
    and how it went. Superusers only: it names who manages whom."""

    list_display = ["sent_at", "kind", "username", "to", "week", "subject", "ok", "error"]
    list_filter = ["kind", "ok", "week"]
    search_fields = ["username", "to", "subject"]
    sortable_by = ["sent_at", "week"]

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_module_permission(self, request):
        return self.has_view_permission(request)


@admin.register(RateAlert)
class RateAlertAdmin(MailSentAdmin):
    """The too-far rate rises that alerted a rep's managers: one per rep and week."""

    list_display = ["week", "rep", "visits_before", "far_before", "visits_after", "far_after", "created_at"]
    list_filter = ["week"]
    search_fields = ["rep__name"]
    sortable_by = ["week", "created_at"]
    list_select_related = ["rep"]


# --- Accounts: the link to a Sell user on the user's own admin page ---------------------------


class SellLinkInline(admin.StackedInline):
    """Which Sell user this account is: a Manager sees that user's reporting line. Set here by
    an admin, it stays; otherwise it follows the e-mail (visits.accounts)."""

    model = SellLink
    fields = ["rep", "via", "linked_at"]
    readonly_fields = ["via", "linked_at"]
    raw_id_fields = ["rep"]
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name = "Sell user"
    verbose_name_plural = "Sell user (a Manager sees this user's reporting line)"


admin.site.unregister(User)


@admin.register(User)
class VisitsUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, SellLinkInline]
    list_display = [*UserAdmin.list_display, "sell_user"]
    list_select_related = ["sell_link__rep"]

    @admin.display(description="Sell user")
    def sell_user(self, obj):
        link = getattr(obj, "sell_link", None)
        return str(link.rep) if link else "—"

    def save_formset(self, request, form, formset, change):
        if formset.model is SellLink:
            for link in formset.save(commit=False):
                link.via = SellLinkVia.ADMIN  # an admin's link stays whatever the e-mails say
                link.save()
            for link in formset.deleted_objects:
                link.delete()
            return
        super().save_formset(request, form, formset, change)

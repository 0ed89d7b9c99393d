"""Admin views of what ingestion stored. Firehose data is read-only here: Sell is the source."""

from django.contrib import admin

from .models import Gap, Outcome, RejectedItem, Rep, SyncState, Visit


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Rep)
class RepAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "email", "status", "role"]
    list_filter = ["status", "role"]
    search_fields = ["name", "email", "=id"]


@admin.register(Outcome)
class OutcomeAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "name_seen_at"]
    search_fields = ["name"]


@admin.register(Visit)
class VisitAdmin(ReadOnlyAdmin):
    list_display = ["id", "visited_at", "rep", "outcome", "verification_status", "latitude", "longitude", "deleted_at"]
    list_filter = ["verification_status", "resource_type", ("deleted_at", admin.EmptyFieldListFilter)]
    list_select_related = ["rep", "outcome"]
    search_fields = ["=id", "summary", "rep__name"]
    date_hierarchy = "visited_at"


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ["stream", "at_top", "last_poll_at", "newest_event_time", "events_applied", "items_rejected", "last_error"]


@admin.register(Gap)
class GapAdmin(ReadOnlyAdmin):
    list_display = ["stream", "start", "end", "recorded_at", "reason"]


@admin.register(RejectedItem)
class RejectedItemAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "stream", "reason"]
    list_filter = ["stream"]
    search_fields = ["reason", "raw"]

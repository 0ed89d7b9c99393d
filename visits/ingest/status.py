"""Read-side figures for the ingestion status page: per stream health, totals, gaps, and the
Core API's features."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone
from django.utils.timesince import timesince

from visits.ingest.health import incidents_shown
from visits.ingest.sync import read_only_archive
from visits.ingest.tallies import tallies_time_zone
from visits.models import (
    BackfillKind,
    BackfillPart,
    BackfillPartState,
    BackfillRun,
    CoreApiState,
    CoreFeature,
    DirtyRep,
    Gap,
    Outcome,
    ReconcileDay,
    RejectedItem,
    Rep,
    Stream,
    SyncState,
    Visit,
    YearTally,
)

STALE_AFTER = timedelta(minutes=5)  # no successful poll for this long: ingestion is behind


# What a feature switched off by a 403 means for this install, after "this account's plan has no Core API <x>".
CORE_OFF_MEANS = {
    CoreFeature.USERS: "reps' teams, groups and managers are not refreshed",
    CoreFeature.OUTCOMES: "outcome names come only from visits",
    CoreFeature.VISITS: "the history backfill is off",
}


@dataclass
class CoreStatus:
    feature: str
    label: str
    state: CoreApiState
    sentence: str  # available, or what the 403 means


def core_statuses() -> list[CoreStatus]:
    states = {s.feature: s for s in CoreApiState.objects.all()}
    rows = []
    for value, label in CoreFeature.choices:
        state = states.get(value) or CoreApiState(feature=value)
        if state.available:
            sentence = "Available." if state.last_success_at else "Available; not asked yet."
        else:
            sentence = f"This account's plan has no Core API {value}: {CORE_OFF_MEANS[CoreFeature(value)]}."
        rows.append(CoreStatus(feature=value, label=label, state=state, sentence=sentence))
    return rows


@dataclass
class StreamStatus:
    stream: str
    label: str
    state: SyncState
    health: str  # "ok", "warning", "error", "never", "archive"
    message: str
    running: bool


def stream_health(state: SyncState, now: datetime) -> tuple[str, str]:
    if read_only_archive():  # nothing runs, so the last sync's error or lag is no news
        synced = state.last_success_at
        return "archive", "Not synced: a read-only archive." + (
            f" Last synced {synced:%Y-%m-%d %H:%M} UTC." if synced else ""
        )
    if state.last_poll_at is None:
        return "never", "Not polled yet. The background worker polls every minute."
    if state.last_error:
        return "error", state.last_error
    if state.last_success_at and now - state.last_success_at > STALE_AFTER:
        return "warning", "No successful poll for over five minutes: is the worker (qcluster) running?"
    if not state.at_top:
        return "warning", "Catching up: more events are waiting in the stream."
    return "ok", "Caught up."


def status_overview() -> dict:
    now = timezone.now()
    states = {s.stream: s for s in SyncState.objects.all()}
    streams = []
    for value, label in Stream.choices:
        state = states.get(value) or SyncState(stream=value)
        health, message = stream_health(state, now)
        streams.append(
            StreamStatus(
                stream=value,
                label=label,
                state=state,
                health=health,
                message=message,
                running=bool(state.lock_owner and state.lock_expires_at and state.lock_expires_at > now),
            )
        )
    live = live_counts()
    core = core_statuses()
    core_visits = next(c.state for c in core if c.feature == CoreFeature.VISITS)
    return {
        "streams": streams,
        "visits_total": live["visits"],
        "visits_deleted": Visit.objects.filter(deleted_at__isnull=False).count(),  # a small partial index
        "reps_total": Rep.objects.count(),
        "reps_unnamed": Rep.objects.filter(name="").count(),
        "outcomes_total": Outcome.objects.count(),
        "rejected_total": RejectedItem.objects.count(),
        "gaps": Gap.objects.all()[:20],
        "core": core,
        "now": now,
        **incidents_shown(now=now, states=states),
        **derived_status(live=live),
        **history_status(core_visits=core_visits),
    }


@dataclass
class HistoryStatus:
    """The newest history backfill from the Core API, for the status page."""

    run: BackfillRun
    parts_total: int
    parts_pending: int
    unreachable: list[BackfillPart]

    @property
    def unreachable_visits(self) -> int:
        return sum(p.unreachable for p in self.unreachable)


def history_status(*, core_visits: CoreApiState) -> dict:
    """The history backfill, the Core API's visits feature (`core_visits`, as core_statuses read
    it) and the daily reconciliation."""
    run = BackfillRun.objects.filter(kind=BackfillKind.HISTORY).order_by("-id").first()
    history = None
    if run is not None:
        parts = BackfillPart.objects.filter(run=run)
        history = HistoryStatus(
            run=run,
            parts_total=parts.count(),
            parts_pending=parts.filter(state=BackfillPartState.PENDING).count(),
            unreachable=list(parts.filter(state=BackfillPartState.UNREACHABLE).order_by("id")[:50]),
        )
    return {
        "history": history,
        "core_visits": core_visits,
        "reconcile_days": list(ReconcileDay.objects.order_by("-day")[: settings.BACKFILL_RECONCILE_DAYS]),
    }


def live_counts() -> dict[str, int]:
    """The live visits and the flagged ones, from the year tallies (a few hundred rows) rather
    than a count of a million visits."""
    sums = YearTally.objects.aggregate(visits=Sum("visits"), flagged=Sum("flagged"))
    return {name: value or 0 for name, value in sums.items()}


def derived_status(*, live: dict[str, int]) -> dict:
    """What the worker derives from the visits: the flags and the report tallies."""
    zone = tallies_time_zone()
    return {
        "flags_pending_reps": DirtyRep.objects.count(),
        "flagged_visits": live["flagged"],
        "tallies_zone": zone,
        "tallies_current": zone == settings.DISPLAY_TIME_ZONE,
        "display_zone": settings.DISPLAY_TIME_ZONE,
    }


def rejected_items(*, stream: str | None):
    items = RejectedItem.objects.all()
    return items.filter(stream=stream) if stream else items


def freshness() -> dict:
    """The badge on report pages: how current the data is, or a warning."""
    visits = SyncState.objects.filter(stream=Stream.VISITS).first()
    now = timezone.now()
    if read_only_archive():
        synced = visits.last_success_at if visits else None
        return {
            "level": "archive",
            "text": "Read-only archive" + (f", last synced {synced:%Y-%m-%d}" if synced else ""),
        }
    if visits is None or visits.last_poll_at is None:
        return {"level": "warning", "text": "No data pulled from Sell yet"}
    health, message = stream_health(visits, now)
    if health == "error":
        return {"level": "error", "text": f"Ingestion is failing: {message}"}
    if health == "warning":
        return {"level": "warning", "text": message}
    since = visits.caught_up_at or visits.last_success_at or visits.last_poll_at  # the last one is set here
    return {"level": "ok", "text": f"Caught up {timesince(since)} ago"}

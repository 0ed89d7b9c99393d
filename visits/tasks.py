"""django-q2 entry points and the schedules that drive them: the sync every minute, the
ingestion check (its alert mails) every ALERT_CHECK_MINUTES, the reconciliation with the
Core API daily, the customers' geocoding every GEOCODE_EVERY_MINUTES, the retention rule for
reps' positions daily.

django-q2's scheduler looks for due schedules only every 30 seconds, so a task that polled
once a minute would sometimes wait 90 s. Instead each scheduled run is a short session that
keeps polling every SELL_IDLE_POLL_SECONDS while caught up; the stream lease makes an
overlapping run return at once.
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule

from visits.ingest.alerts import ingestion_check
from visits.ingest.pull import visits_pull
from visits.ingest.sync import READ_ONLY_MESSAGE, read_only_archive

SCHEDULE_NAME = "sync-sell-streams"
CHECK_SCHEDULE_NAME = "ingestion-check"
RECONCILE_SCHEDULE_NAME = "reconcile-core-visits"
GEOCODE_SCHEDULE_NAME = "geocode-customers"
CUSTOMERS_SCHEDULE_NAME = "customers-refresh"
RETENTION_SCHEDULE_NAME = "coordinates-retention"
GEOCODE_EVERY_MINUTES = 5
# One run's bounds, far inside the cluster's 600 s timeout: at the public Nominatim's 1 s pace,
# 200 addresses take about 4 minutes, and the next run takes up where this one stopped.
GEOCODE_TASK_LIMIT = 200
GEOCODE_TASK_SECONDS = 240.0


def sync_streams_task(*, session_seconds: float | None = None) -> str:
    """One scheduled session of visits_pull, worded for the task's result in the admin."""
    session_seconds = settings.SELL_SESSION_SECONDS if session_seconds is None else session_seconds
    pull = visits_pull(session_seconds=session_seconds)
    if pull.read_only:
        return READ_ONLY_MESSAGE
    summary = (
        f"{pull.polls} polls, {pull.applied} events applied, {pull.rejected} rejected, "
        f"flags of {pull.flagged_reps} reps recomputed"
    )
    problems = pull.errors + [refresh.summary() for refresh in pull.core if refresh.error]  # a Core API failure too
    return summary + (f"; {'; '.join(problems)}" if problems else "")


def ingestion_check_task() -> str:
    """The health check with its alert mails (ingest/alerts.py), every ALERT_CHECK_MINUTES."""
    return ingestion_check().line


def reconcile_task() -> str:
    """The daily check against the Core API: the gaps not filled yet, then the last
    BACKFILL_RECONCILE_DAYS days counted and filled (ingest/reconcile.py)."""
    # Imported here: the every-minute sync's workers need none of it.
    from visits.ingest.backfill import BackfillUnavailable
    from visits.ingest.reconcile import gaps_fill, visits_reconcile
    from visits.sell.core import SellError

    if read_only_archive():
        return READ_ONLY_MESSAGE
    gaps = gaps_fill()
    try:
        days = visits_reconcile()
    except (BackfillUnavailable, SellError) as exc:  # kept on each day for the status page, too
        return f"{len(gaps)} gaps tried; no reconciliation: {exc}"
    missing = sum(max(d.core_visits - d.held_visits, 0) for d in days)
    filled = sum(d.filled for d in days)
    return f"{len(gaps)} gaps tried; {len(days)} days reconciled: {missing} visits were missing, {filled} stored"


def geocode_task(*, limit: int = GEOCODE_TASK_LIMIT, seconds: float = GEOCODE_TASK_SECONDS) -> str:
    """Customers' addresses geocoded in the background (geo/geocode.py), a bounded batch a run."""
    from visits.geo.geocode import geocode_pending

    if read_only_archive():
        return READ_ONLY_MESSAGE
    return geocode_pending(limit=limit, seconds=seconds).summary()


def customers_refresh_task() -> str:
    """Customers, their points and the visits' distances after the pulls (geo/customers.py), then
    the flags the distances written reach (review/flags.py)."""
    from visits.geo.customers import customers_refresh
    from visits.review.flags import flags_refresh

    if read_only_archive():
        return READ_ONLY_MESSAGE
    refresh = customers_refresh()
    reps, _ = flags_refresh()
    return (
        f"{refresh.customers} customers ({refresh.created} new, {refresh.addresses_changed} addresses changed), "
        f"{refresh.points_moved} points moved, {refresh.visits_measured} visits measured, "
        f"{refresh.distances_written} distances written; flags of {reps} reps recomputed"
    )


def retention_task() -> str:
    """The daily retention rule: reps' positions removed from the visits older than
    COORDINATES_RETENTION_DAYS (geo/retention.py); nothing while it is empty."""
    from visits.geo.retention import coordinates_retain

    return coordinates_retain().summary()


def reconcile_first_run(*, now: datetime | None = None) -> datetime:
    """The next BACKFILL_RECONCILE_HOUR o'clock (UTC) after `now`."""
    now = now or timezone.now()
    first = now.astimezone(UTC).replace(hour=settings.BACKFILL_RECONCILE_HOUR, minute=0, second=0, microsecond=0)
    return first if first > now else first + timedelta(days=1)


def schedules_setup() -> list[tuple[str, bool, str]]:
    """Create or update the schedules by name; returns (name, created, how often) triples."""
    _, created = Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "visits.tasks.sync_streams_task",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    _, check_created = Schedule.objects.update_or_create(
        name=CHECK_SCHEDULE_NAME,
        defaults={
            "func": "visits.tasks.ingestion_check_task",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.ALERT_CHECK_MINUTES,
            "repeats": -1,
        },
    )
    check_every = (
        "every minute" if settings.ALERT_CHECK_MINUTES == 1 else f"every {settings.ALERT_CHECK_MINUTES} minutes"
    )
    # The first run only on creation: running setup_schedules again must not move the next one.
    _, reconcile_created = Schedule.objects.update_or_create(
        name=RECONCILE_SCHEDULE_NAME,
        defaults={"func": "visits.tasks.reconcile_task", "schedule_type": Schedule.DAILY, "repeats": -1},
        create_defaults={
            "func": "visits.tasks.reconcile_task", "schedule_type": Schedule.DAILY, "repeats": -1,
            "next_run": reconcile_first_run(),
        },
    )  # fmt: skip
    _, geocode_created = Schedule.objects.update_or_create(
        name=GEOCODE_SCHEDULE_NAME,
        defaults={
            "func": "visits.tasks.geocode_task",
            "schedule_type": Schedule.MINUTES,
            "minutes": GEOCODE_EVERY_MINUTES,
            "repeats": -1,
        },
    )
    every = settings.CUSTOMERS_REFRESH_MINUTES
    _, customers_created = Schedule.objects.update_or_create(
        name=CUSTOMERS_SCHEDULE_NAME,
        defaults={
            "func": "visits.tasks.customers_refresh_task", "schedule_type": Schedule.MINUTES, "minutes": every,
            "repeats": -1,
        },
    )  # fmt: skip
    # Daily, an hour after the reconciliation (which may store old visits: without positions).
    _, retention_created = Schedule.objects.update_or_create(
        name=RETENTION_SCHEDULE_NAME,
        defaults={"func": "visits.tasks.retention_task", "schedule_type": Schedule.DAILY, "repeats": -1},
        create_defaults={
            "func": "visits.tasks.retention_task", "schedule_type": Schedule.DAILY, "repeats": -1,
            "next_run": reconcile_first_run() + timedelta(hours=1),
        },
    )  # fmt: skip
    retention_every = f"daily at {(settings.BACKFILL_RECONCILE_HOUR + 1) % 24:02d}:00 UTC" + (
        "" if settings.COORDINATES_RETENTION_DAYS else " (COORDINATES_RETENTION_DAYS is empty: it removes nothing)"
    )
    return [
        (SCHEDULE_NAME, created, "every minute"),
        (CHECK_SCHEDULE_NAME, check_created, check_every),
        (RECONCILE_SCHEDULE_NAME, reconcile_created, f"daily at {settings.BACKFILL_RECONCILE_HOUR:02d}:00 UTC"),
        (GEOCODE_SCHEDULE_NAME, geocode_created, f"every {GEOCODE_EVERY_MINUTES} minutes"),
        (CUSTOMERS_SCHEDULE_NAME, customers_created, "every minute" if every == 1 else f"every {every} minutes"),
        (RETENTION_SCHEDULE_NAME, retention_created, retention_every),
    ]


def sync_enqueue() -> str:
    """Queue one sync session for the worker now, instead of waiting for the scheduler."""
    from django_q.tasks import async_task

    return async_task("visits.tasks.sync_streams_task", task_name="sync-now")

"""django-q2 entry points and the schedules that drive them: the sync every minute, the
ingestion check (its alert mails) every ALERT_CHECK_MINUTES, the reconciliation with the
Core API daily, the customers' geocoding every GEOCODE_EVERY_MINUTES, the weekly digests on
Monday at 08:00 and the too-far rate alerts daily at 08:30 (both in DISPLAY_TIME_ZONE), the access
log's purge daily, the retention rule for reps' positions daily.

django-q2's scheduler looks for due schedules only every 30 seconds, so a task that polled
once a minute would sometimes wait 90 s. Instead each scheduled run is a short session that
keeps polling every SELL_IDLE_POLL_SECONDS while caught up; the stream lease makes an
overlapping run return at once.
"""

from datetime import UTC, datetime, time, timedelta

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
DIGESTS_SCHEDULE_NAME = "weekly-digests"
RATE_ALERTS_SCHEDULE_NAME = "rate-alerts"
ACCESS_LOG_SCHEDULE_NAME = "access-log-purge"
GEOCODE_EVERY_MINUTES = 5
# In DISPLAY_TIME_ZONE. django-q2 keeps next_run in UTC and, for a weekly or daily schedule, steps
# it by 7 days or 1 day and then corrects for summer time by its own TIME_ZONE (Q_CLUSTER has no
# "time_zone", so Django's TIME_ZONE, which settings.py sets to DISPLAY_TIME_ZONE): the local
# hour stays put across a change of clocks.
DIGESTS_AT = time(8, 0)  # Mondays
RATE_ALERTS_AT = time(8, 30)  # daily: Monday's run finds last week's rises, later ones retry
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


def digests_task() -> str:
    """The digests of the week that ended on Sunday (notify/send.py), Monday morning."""
    from visits.notify.send import digests_send
    from visits.notify.weeks import week_last_ended

    return digests_send(week=week_last_ended()).summary()


def rate_alerts_task() -> str:
    """The too-far rate alerts of the latest week that has ended (notify/rate_alerts.py)."""
    from visits.notify.rate_alerts import rate_alerts_send

    return rate_alerts_send().summary()


def local_schedule(*, name: str, func: str, weekday: int | None, at: time, now: datetime | None) -> bool:
    """A weekly (on `weekday`) or daily schedule at `at` in DISPLAY_TIME_ZONE; its next run is set
    on creation, and again only when it is not at that local time (DISPLAY_TIME_ZONE changed), so
    running setup_schedules again never moves nor skips a run. Returns whether it was created."""
    from visits.notify.weeks import next_run_at, zone

    existing = Schedule.objects.filter(name=name).values_list("next_run", flat=True).first()
    local = existing.astimezone(zone()) if existing else None
    keep = local is not None and local.time() == at and (weekday is None or local.weekday() == weekday)
    defaults = {
        "func": func, "schedule_type": Schedule.WEEKLY if weekday is not None else Schedule.DAILY, "repeats": -1,
        **({} if keep else {"next_run": next_run_at(weekday=weekday, at=at, now=now)}),
    }  # fmt: skip
    _, created = Schedule.objects.update_or_create(name=name, defaults=defaults)
    return created


def access_log_purge_task() -> str:
    """The access log's entries older than ACCESS_LOG_DAYS deleted (security/access_log.py)."""
    from visits.security.access_log import access_log_purge

    return f"{access_log_purge()} access log entries older than {settings.ACCESS_LOG_DAYS} days deleted"


def reconcile_first_run(*, now: datetime | None = None) -> datetime:
    """The next BACKFILL_RECONCILE_HOUR o'clock (UTC) after `now`."""
    now = now or timezone.now()
    first = now.astimezone(UTC).replace(hour=settings.BACKFILL_RECONCILE_HOUR, minute=0, second=0, microsecond=0)
    return first if first > now else first + timedelta(days=1)


def schedules_setup(*, now: datetime | None = None) -> list[tuple[str, bool, str]]:
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
            "next_run": reconcile_first_run(now=now),
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
            "next_run": reconcile_first_run(now=now) + timedelta(hours=1),
        },
    )  # fmt: skip
    retention_every = f"daily at {(settings.BACKFILL_RECONCILE_HOUR + 1) % 24:02d}:00 UTC" + (
        "" if settings.COORDINATES_RETENTION_DAYS else " (COORDINATES_RETENTION_DAYS is empty: it removes nothing)"
    )
    digests_created = local_schedule(
        name=DIGESTS_SCHEDULE_NAME, func="visits.tasks.digests_task", weekday=0, at=DIGESTS_AT, now=now
    )
    alerts_created = local_schedule(
        name=RATE_ALERTS_SCHEDULE_NAME, func="visits.tasks.rate_alerts_task", weekday=None, at=RATE_ALERTS_AT, now=now
    )
    zone_name = settings.DISPLAY_TIME_ZONE
    _, access_log_created = Schedule.objects.update_or_create(
        name=ACCESS_LOG_SCHEDULE_NAME,
        defaults={"func": "visits.tasks.access_log_purge_task", "schedule_type": Schedule.DAILY, "repeats": -1},
    )
    return [
        (SCHEDULE_NAME, created, "every minute"),
        (CHECK_SCHEDULE_NAME, check_created, check_every),
        (RECONCILE_SCHEDULE_NAME, reconcile_created, f"daily at {settings.BACKFILL_RECONCILE_HOUR:02d}:00 UTC"),
        (GEOCODE_SCHEDULE_NAME, geocode_created, f"every {GEOCODE_EVERY_MINUTES} minutes"),
        (CUSTOMERS_SCHEDULE_NAME, customers_created, "every minute" if every == 1 else f"every {every} minutes"),
        (RETENTION_SCHEDULE_NAME, retention_created, retention_every),
        (DIGESTS_SCHEDULE_NAME, digests_created, f"Mondays at {DIGESTS_AT:%H:%M} {zone_name}"),
        (RATE_ALERTS_SCHEDULE_NAME, alerts_created, f"daily at {RATE_ALERTS_AT:%H:%M} {zone_name}"),
        (ACCESS_LOG_SCHEDULE_NAME, access_log_created, "daily"),
    ]


def sync_enqueue() -> str:
    """Queue one sync session for the worker now, instead of waiting for the scheduler."""
    from django_q.tasks import async_task

    return async_task("visits.tasks.sync_streams_task", task_name="sync-now")

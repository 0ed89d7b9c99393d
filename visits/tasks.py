"""django-q2 entry points and the schedules that drive them: the sync every minute, the
ingestion check (its alert mails) every ALERT_CHECK_MINUTES.

django-q2's scheduler looks for due schedules only every 30 seconds, so a task that polled
once a minute would sometimes wait 90 s. Instead each scheduled run is a short session that
keeps polling every SELL_IDLE_POLL_SECONDS while caught up; the stream lease makes an
overlapping run return at once.
"""

from django.conf import settings
from django_q.models import Schedule

from visits.ingest.alerts import ingestion_check
from visits.ingest.pull import visits_pull
from visits.ingest.sync import READ_ONLY_MESSAGE

SCHEDULE_NAME = "sync-sell-streams"
CHECK_SCHEDULE_NAME = "ingestion-check"


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


def schedules_setup() -> list[tuple[str, bool]]:
    """Create or update the schedules by name; returns (name, created) pairs."""
    every = {SCHEDULE_NAME: ("visits.tasks.sync_streams_task", 1)}
    every[CHECK_SCHEDULE_NAME] = ("visits.tasks.ingestion_check_task", settings.ALERT_CHECK_MINUTES)
    done = []
    for name, (func, minutes) in every.items():
        defaults = {"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1}
        done.append((name, Schedule.objects.update_or_create(name=name, defaults=defaults)[1]))
    return done


def sync_enqueue() -> str:
    """Queue one sync session for the worker now, instead of waiting for the scheduler."""
    from django_q.tasks import async_task

    return async_task("visits.tasks.sync_streams_task", task_name="sync-now")

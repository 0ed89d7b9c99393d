"""django-q2 entry points and the schedule that drives them.

django-q2's scheduler looks for due schedules only every 30 seconds, so a task that polled
once a minute would sometimes wait 90 s. Instead each scheduled run is a short session that
keeps polling every SELL_IDLE_POLL_SECONDS while caught up; the stream lease makes an
overlapping run return at once.
"""

from django.conf import settings
from django_q.models import Schedule

from visits.ingest.pull import visits_pull

SCHEDULE_NAME = "sync-sell-streams"


def sync_streams_task(*, session_seconds: float | None = None) -> str:
    """One scheduled session of visits_pull, worded for the task's result in the admin."""
    session_seconds = settings.SELL_SESSION_SECONDS if session_seconds is None else session_seconds
    pull = visits_pull(session_seconds=session_seconds)
    summary = (
        f"{pull.polls} polls, {pull.applied} events applied, {pull.rejected} rejected, "
        f"flags of {pull.flagged_reps} reps recomputed"
    )
    problems = pull.errors + [refresh.summary() for refresh in pull.core if refresh.error]  # a Core API failure too
    return summary + (f"; {'; '.join(problems)}" if problems else "")


def schedules_setup() -> list[tuple[str, bool]]:
    """Create or update the schedules by name; returns (name, created) pairs."""
    _, created = Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "visits.tasks.sync_streams_task",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    return [(SCHEDULE_NAME, created)]


def sync_enqueue() -> str:
    """Queue one sync session for the worker now, instead of waiting for the scheduler."""
    from django_q.tasks import async_task

    return async_task("visits.tasks.sync_streams_task", task_name="sync-now")

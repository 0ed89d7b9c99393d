"""django-q2 entry points and the schedule that drives them.

django-q2's scheduler looks for due schedules only every 30 seconds, so a task that polled
once a minute would sometimes wait 90 s. Instead each scheduled run is a short session that
keeps polling every SELL_IDLE_POLL_SECONDS while caught up; the stream lease makes an
overlapping run return at once.
"""

import time

from django.conf import settings
from django_q.models import Schedule

from visits.ingest.sync import streams_sync
from visits.review.flags import flags_refresh

SCHEDULE_NAME = "sync-sell-streams"


def sync_streams_task(*, session_seconds: float | None = None) -> str:
    session_seconds = settings.SELL_SESSION_SECONDS if session_seconds is None else session_seconds
    deadline = time.monotonic() + session_seconds
    polls, applied, rejected, errors, flagged = 0, 0, 0, [], 0
    while True:
        remaining = max(deadline - time.monotonic(), 1.0)
        results = streams_sync(max_seconds=min(remaining, settings.SELL_SYNC_MAX_SECONDS))
        polls += 1
        applied += sum(r.applied for r in results)
        rejected += sum(r.rejected for r in results)
        errors = [f"{r.stream}: {r.error}" for r in results if r.error]
        flagged += flags_refresh()[0]  # the reps whose visits changed get their flags recomputed
        caught_up = all(r.at_top for r in results) and len(results) == 2
        if errors or not caught_up or time.monotonic() + settings.SELL_IDLE_POLL_SECONDS > deadline:
            break
        time.sleep(settings.SELL_IDLE_POLL_SECONDS)
    summary = f"{polls} polls, {applied} events applied, {rejected} rejected, flags of {flagged} reps recomputed"
    return summary + (f"; {'; '.join(errors)}" if errors else "")


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

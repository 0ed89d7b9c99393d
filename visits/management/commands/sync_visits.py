"""Runs the users stream, then the visits stream, until `top`, in the foreground; then the flags
of the reps whose visits changed (visits_pull, as the worker does).

Its system checks are the database's and the models', visits.E001 (a trigger missing) among
them: a sync must not write visits the tallies would miss. The web's checks (URLs, templates,
the admin, static files) import every view, and cost a sync, which runs every minute from cron
or by hand, half its start-up (docs/PERFORMANCE.md, "Start-up"); `manage.py check` runs them.
"""

import logging
import sys
import time

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError

from visits.ingest.pull import visits_pull
from visits.ingest.sync import SyncResult


class Command(BaseCommand):
    help = "Pull the Sell Firehose users and visits streams until caught up, showing progress."
    requires_system_checks = [Tags.database, Tags.models]

    def add_arguments(self, parser):
        parser.add_argument("--max-seconds", type=float, default=None, help="stop each stream after this long")
        parser.add_argument("--quiet", action="store_true", help="print only the summary line")

    def handle(self, *args, max_seconds=None, quiet=False, **options):
        last_shown = [0.0]

        def progress(result: SyncResult) -> None:
            now = time.monotonic()
            if quiet or (now - last_shown[0] < 1.0 and not result.at_top):
                return
            last_shown[0] = now
            self.stdout.write(
                f"{result.stream}: {result.pages} pages, {result.applied} applied, "
                f"{result.skipped} skipped, {result.rejected} rejected, "
                f"{result.events_per_second:,.0f} events/s" + (" (caught up)" if result.at_top else "")
            )

        def on_retry(problem: str, delay: float) -> None:
            if not quiet:
                self.stderr.write(f"retrying in {delay:.1f}s after {problem}")

        # This command reports a failure itself, in one line; the sync's log line would repeat it.
        logging.getLogger("visits.ingest.sync").setLevel(logging.ERROR)
        logging.getLogger("visits.ingest.core").setLevel(logging.ERROR)  # its sentences end the summary
        pull = visits_pull(max_seconds=max_seconds, progress=progress, on_retry=on_retry, core_force=True)
        summary = "; ".join(
            f"{r.stream}: {r.pages} pages, {r.applied} applied, {r.skipped} skipped, {r.rejected} rejected"
            + (f", {r.gaps} gap(s)" if r.gaps else "")
            + (f", {r.retries} retries" if r.retries else "")
            + (f" in {r.seconds:.1f}s" if r.pages else "")
            for r in pull.results
        )
        summary += f"; flags of {pull.flagged_reps} reps recomputed"  # even if a stream then failed
        summary += "".join(f"; {note}" for note in pull.core_notes)  # a Core API failure is not the sync's
        if failed := pull.failed:
            raise CommandError(f"{failed.stream} stream: {failed.error}", returncode=1)
        self.stdout.write(f"sync {'complete' if pull.caught_up else 'paused (time limit)'}: {summary}")
        sys.stdout.flush()

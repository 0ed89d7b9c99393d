"""Removes the reps' positions from the visits older than COORDINATES_RETENTION_DAYS now, with
progress and a summary (the daily task runs the same: geo/retention.py)."""

import time

from django.core.management.base import BaseCommand

from visits.geo.retention import coordinates_retain


class Command(BaseCommand):
    help = (
        "Remove the latitude and longitude of visits logged more than COORDINATES_RETENTION_DAYS days ago "
        "(statuses, distances, flags and reports stay as they were)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count what would be removed, write nothing")

    def handle(self, *args, **options):
        started = time.monotonic()

        def say(message: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:6.1f} s] {message}")

        result = coordinates_retain(dry_run=options["dry_run"], progress=say)
        self.stdout.write(f"done in {time.monotonic() - started:.1f} s: {result.summary()}")

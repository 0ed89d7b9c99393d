"""Locates the customers in the foreground: their rows and addresses, the geocoding that is due,
the learned points, the point each uses, and every visit's distance, with progress; then the
flags those distances reach."""

import time

from django.core.management.base import BaseCommand

from visits.geo.customers import customers_refresh
from visits.geo.geocode import geocode_pending
from visits.review.flags import flags_refresh


def geocode_due(say):
    """The geocoding that is due (geo/geocode.py), with its progress every few seconds; its
    summary is the step's result."""
    shown = [0.0]

    def progress(run) -> None:
        if time.monotonic() - shown[0] >= 5:
            shown[0] = time.monotonic()
            say(f"geocoding: {run.summary()}")

    def run() -> str:
        return geocode_pending(progress=progress).summary()

    return run


class Command(BaseCommand):
    help = "Sync the customers from the visits, geocode what is due, learn their points, choose and measure."

    def handle(self, *args, **options):
        started = time.monotonic()

        def say(message: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:6.1f} s] {message}")

        result = customers_refresh(progress=say, everything=True, geocode=geocode_due(say))
        say("flags: recomputing those the distances reach")
        reps, changes = flags_refresh()
        say(f"flags: {reps:,} reps recomputed, {changes:,} flag changes")
        self.stdout.write(f"done in {time.monotonic() - started:.1f} s: {result.summary()}")

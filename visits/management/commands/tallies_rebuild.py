"""Rebuilds the report tallies from the visits, e.g. after DISPLAY_TIME_ZONE changed."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from visits.ingest.tallies import tallies_rebuild
from visits.models import MonthTally, Visit, WeekTally


class Command(BaseCommand):
    help = "Re-derive each visit's local day in DISPLAY_TIME_ZONE and rebuild the report tallies."

    def handle(self, *args, **options):
        self.stdout.write(
            f"rebuilding the tallies of {Visit.objects.count():,} visits in {settings.DISPLAY_TIME_ZONE} ..."
        )
        started = time.monotonic()
        tallies_rebuild()
        self.stdout.write(
            f"done in {time.monotonic() - started:.1f} s: {MonthTally.objects.count():,} month rows, "
            f"{WeekTally.objects.count():,} week rows"
        )

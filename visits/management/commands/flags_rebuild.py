"""Recomputes every visit's flags from scratch, e.g. after a FLAG_* threshold changed."""

import time

from django.core.management.base import BaseCommand

from visits.models import Flag
from visits.review.flags import flags_rebuild


class Command(BaseCommand):
    help = "Recompute the flags of every rep's visits from scratch (after changing a FLAG_* setting)."

    def handle(self, *args, **options):
        started = time.monotonic()
        reps, changes = flags_rebuild()
        self.stdout.write(
            f"flags of {reps} reps recomputed in {time.monotonic() - started:.1f} s: {changes} changes, "
            f"{Flag.objects.count():,} flags on {Flag.objects.values('visit').distinct().count():,} visits"
        )

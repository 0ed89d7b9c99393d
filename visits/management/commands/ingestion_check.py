"""Checks ingestion's health once: prints one line (status, last success, lag, open gaps), opens
and closes the incidents and sends their alert mails (ingest/alerts.py). Exit 0 when healthy,
1 when not, so cron or a monitor can run it; the worker's schedule runs it too.
"""

import sys

from django.core.checks import Tags
from django.core.management.base import BaseCommand

from visits.ingest.alerts import ingestion_check


class Command(BaseCommand):
    help = "Check ingestion (one line; exit 1 when stale or failing), open or close incidents, mail alerts."
    requires_system_checks = [Tags.database, Tags.models]  # as sync_visits: cron runs it often

    def handle(self, *args, **options):
        result = ingestion_check()
        self.stdout.write(result.line)
        for problem in result.alerts.failed:
            self.stderr.write(problem)
        sys.stdout.flush()
        if not result.health.healthy:
            sys.exit(1)

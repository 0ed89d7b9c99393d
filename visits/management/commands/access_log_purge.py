"""Deletes the access log's entries older than ACCESS_LOG_DAYS, as the daily task does."""

from django.core.management.base import BaseCommand

from visits.tasks import access_log_purge_task


class Command(BaseCommand):
    help = "Delete the access log entries older than ACCESS_LOG_DAYS (the daily task does the same)."

    def handle(self, *args, **options):
        self.stdout.write(access_log_purge_task())

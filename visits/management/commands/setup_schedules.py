"""Creates or updates visitsdash's django-q2 schedules; safe to run any number of times."""

from django.core.management.base import BaseCommand

from visits.tasks import schedules_setup, sync_enqueue


class Command(BaseCommand):
    help = "Create or update the background schedules (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--run-now", action="store_true", help="also queue a sync for the worker right away")

    def handle(self, *args, run_now=False, **options):
        for name, created, how_often in schedules_setup():
            self.stdout.write(f"schedule {name!r} {'created' if created else 'updated'}: {how_often}")
        if run_now:
            self.stdout.write(f"sync queued for the worker: task {sync_enqueue()}")

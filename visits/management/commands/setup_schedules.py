"""Creates or updates visitsdash's django-q2 schedules; safe to run any number of times."""

from django.core.management.base import BaseCommand

from visits.tasks import schedules_setup


class Command(BaseCommand):
    help = "Create or update the background schedules (idempotent)."

    def handle(self, *args, **options):
        for name, created in schedules_setup():
            self.stdout.write(f"schedule {name!r} {'created' if created else 'updated'}: every minute")

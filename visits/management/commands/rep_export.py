"""Writes one rep's own data to a zip, for an access request (visits/archive/rep_export.py)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from visits.archive.rep_export import RepExportError, rep_export


class Command(BaseCommand):
    help = (
        "Write a rep's own data (their record, every visit with its position, the flags and decisions on them, "
        "and a README) to a zip: an answer to an access request."
    )

    def add_arguments(self, parser):
        parser.add_argument("rep_id", type=int, help="the rep's Sell user id")
        parser.add_argument("path", type=Path, help="the zip file to write (replaced if it exists)")

    def handle(self, *args, **options):
        try:
            result = rep_export(rep_id=options["rep_id"], path=options["path"])
        except RepExportError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"written {result.summary()}")

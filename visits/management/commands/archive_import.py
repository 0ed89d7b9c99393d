"""Loads an archive written by archive_export into an empty database (visits/archive/): a laptop's
SQLite history into PostgreSQL, or a kept archive into a new install."""

from pathlib import Path

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError

from visits.archive.load import ArchiveError, archive_import


class Command(BaseCommand):
    help = "Load PATH.zip, written by archive_export, into this empty, migrated database; refuse a damaged archive."
    requires_system_checks = [Tags.database, Tags.models]

    def add_arguments(self, parser):
        parser.add_argument("path", help="the zip archive_export wrote")
        parser.add_argument("--quiet", action="store_true", help="print only the summary line")

    def handle(self, *args, path, quiet=False, **options):
        try:
            result = archive_import(path=Path(path), progress=None if quiet else self.stdout.write)
        except ArchiveError as exc:
            raise CommandError(f"{path}: {exc}") from None
        manifest = result.manifest
        self.stdout.write(
            f"imported {sum(result.rows.values()):,} rows ({result.rows['visits.csv']:,} visits) from an archive "
            f"of {manifest['generated_at']} (visitsdash {manifest['visitsdash_version']}) in {result.seconds:.1f} s"
        )
        if result.users_created:
            self.stdout.write(
                f"{len(result.users_created)} decision authors created as inactive users without a password "
                f"(an admin can activate them): {', '.join(result.users_created)}"
            )
        flags = result.flags
        if flags.equal:
            self.stdout.write(f"flags: the {flags.flags:,} flags equal what this install's rules find")
        else:
            self.stderr.write(
                f"flags: {flags.differing:,} flags, {flags.visits_differing:,} visits' flagged state and "
                f"{flags.risks_differing:,} visits' risk differ from what this install's rules find "
                f"(its FLAG_* or RISK_* settings or its version differ from the exporter's"
                + (
                    ", or flags were still being refreshed when it exported"
                    if manifest.get("flags_pending_reps")
                    else ""
                )
                + f"), e.g. {'; '.join(flags.examples) or 'a visit’s flagged state'}. They are kept as exported; "
                "`manage.py flags_rebuild` recomputes them with this install's rules."
            )

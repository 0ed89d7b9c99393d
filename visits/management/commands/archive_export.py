"""Writes everything visitsdash holds into one zip of CSV files with a manifest (visits/archive/):
the copy to keep once Sell is gone, and the way from one database to another."""

from pathlib import Path

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError

from visits.archive.export import archive_export


class Command(BaseCommand):
    help = "Write the whole archive (visits, reps, outcomes, flags, decisions, gaps, rejected items...) to PATH.zip."
    requires_system_checks = [Tags.database, Tags.models]

    def add_arguments(self, parser):
        parser.add_argument("path", help="the zip to write (replaced once complete)")
        parser.add_argument(
            "--compress-level", type=int, default=1, choices=range(10), metavar="0-9",
            help="zlib level: 1 (the default) is fast; 6 a sixth smaller, a little slower; 9 barely smaller again",
        )  # fmt: skip
        parser.add_argument("--quiet", action="store_true", help="print only the summary line")

    def handle(self, *args, path, compress_level=1, quiet=False, **options):
        target = Path(path)
        if not target.parent.is_dir():
            raise CommandError(f"{target.parent} is not a directory")
        try:
            result = archive_export(
                path=target, progress=None if quiet else self.stdout.write, compress_level=compress_level
            )
        except OSError as exc:
            raise CommandError(f"could not write {target}: {exc}") from None
        self.stdout.write(
            f"archive written to {result.path}: {result.rows:,} rows in {len(result.manifest['files'])} files, "
            f"{result.path.stat().st_size / 1e6:,.1f} MB in {result.seconds:.1f} s "
            f"({result.rows / max(result.seconds, 1e-9):,.0f} rows/s)"
        )

"""Stores the visit history the Core API still has (statuses, outcomes, addresses; no positions),
with progress; a run killed half-way is continued by the next one, and a second run changes
nothing. Its checks are the database's and the models', as sync_visits' are (visits.E001 among
them: history visits must reach the tallies)."""

import sys
import time

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError

from visits.ingest.backfill import (
    BackfillBusy,
    BackfillUnavailable,
    Progress,
    feature_allow,
    history_backfill,
    unreachable_parts,
)
from visits.ingest.sync import read_only_archive
from visits.sell.core import MAX_PAGES, MAX_PER_PAGE, SellError


class Command(BaseCommand):
    help = "Backfill the visit history from Sell's Core API (GET /v2/visits), showing progress; resumable."
    requires_system_checks = [Tags.database, Tags.models]

    def add_arguments(self, parser):
        parser.add_argument("--restart", action="store_true", help="plan afresh instead of continuing a stopped run")
        parser.add_argument("--quiet", action="store_true", help="print only the summary line")
        parser.add_argument(
            "--ask-again",
            action="store_true",
            help="ask the Core API again though it refused its visits before (after the account's plan changed)",
        )
        parser.add_argument("--every", type=float, default=1.0, help="seconds between progress lines (default 1)")
        # Smaller than Sell's own, to try the splitting on a small account (a new plan only).
        parser.add_argument(
            "--per-page",
            type=int,
            default=MAX_PER_PAGE,
            choices=range(1, MAX_PER_PAGE + 1),
            metavar="N",
            help=f"visits a page, 1 to {MAX_PER_PAGE} (default {MAX_PER_PAGE})",
        )
        parser.add_argument(
            "--page-cap",
            type=int,
            default=MAX_PAGES,
            choices=range(1, MAX_PAGES + 1),
            metavar="N",
            help=f"pages a query reaches, 1 to {MAX_PAGES} (default Sell's {MAX_PAGES})",
        )

    def handle(self, *args, restart=False, quiet=False, ask_again=False, every=1.0, **options):
        per_page, page_cap = options.get("per_page", MAX_PER_PAGE), options.get("page_cap", MAX_PAGES)
        last_shown = [0.0]

        def progress(report: Progress) -> None:
            now = time.monotonic()
            if now - last_shown[0] < every:
                return
            last_shown[0] = now
            self.stdout.write(f"backfill: {report.line()}")
            sys.stdout.flush()

        if read_only_archive():
            raise CommandError("no SELL_ACCESS_TOKEN: there is no Sell account to backfill from", returncode=1)
        if ask_again:
            feature_allow()
        try:
            run = history_backfill(
                progress=None if quiet else progress, restart=restart, per_page=per_page, page_cap=page_cap
            )
        except BackfillUnavailable as exc:
            raise CommandError(
                f"the Core API has no visits for this account ({exc}); the backfill is off, "
                "the Firehose sync goes on as before",
                returncode=2,
            ) from None
        except KeyboardInterrupt:
            raise CommandError(
                "the backfill was stopped (Ctrl-C); every page stored is kept: run backfill_visits again to continue",
                returncode=130,
            ) from None
        except BackfillBusy as exc:
            raise CommandError(f"{exc}: nothing to do here", returncode=4) from None
        except SellError as exc:
            raise CommandError(
                f"the backfill stopped: {exc}; run backfill_visits again to continue where it stopped", returncode=1
            ) from None
        if run.warning:
            self.stderr.write(f"WARNING: {run.warning}")
        unreachable = unreachable_parts(run=run)
        for part in unreachable:
            self.stderr.write(f"UNREACHABLE: {part.filters or 'all visits'}: {part.note}")
        self.stdout.write(
            f"backfill complete: {run.listed:,} visits listed, {run.stored:,} stored, {run.updated:,} updated, "
            f"{run.addresses:,} addresses filled, {run.requests:,} requests"
            + (f"; {len(unreachable)} part(s) unreachable (see above and the status page)" if unreachable else "")
        )
        sys.stdout.flush()
        if unreachable:
            raise CommandError(
                f"about {sum(p.unreachable for p in unreachable):,} visits could not be reached", returncode=3
            )

"""One pull from Sell: both streams until `top`, then the flags of the reps whose visits changed,
then (hourly, or forced) the reps' teams and the outcomes' names from the Core API, then a gap a
stream just recorded backfilled from the Core API.
The django-q2 task (a session that keeps polling while caught up) and `manage.py sync_visits`
(one pull in the foreground) both call visits_pull(); each only words the result its own way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from visits.accounts import links_refresh
from visits.ingest.core import CoreRefresh, core_refresh
from visits.ingest.sync import STREAM_ORDER, SyncErrorKind, SyncResult, read_only_archive, streams_sync
from visits.models import Stream
from visits.review.flags import flags_refresh

log = logging.getLogger(__name__)


@dataclass
class PullResult:
    results: list[SyncResult] = field(default_factory=list)  # the last poll's, one per stream that ran
    polls: int = 0
    applied: int = 0  # events applied, over every poll
    rejected: int = 0  # items rejected, over every poll
    flagged_reps: int = 0  # reps whose flags were recomputed, over every poll
    flag_changes: int = 0
    read_only: bool = False  # nothing pulled: no SELL_ACCESS_TOKEN, a read-only archive
    gaps_filled: int = 0  # gaps backfilled from the Core API after the poll that recorded them
    core: list[CoreRefresh] = field(default_factory=list)  # the Core API refreshes that asked Sell

    @property
    def core_notes(self) -> list[str]:
        """One sentence per Core API refresh that ran, for the command's summary."""
        return [refresh.summary() for refresh in self.core]

    @property
    def errors(self) -> list[str]:
        """The last poll's errors, as "<stream>: <error>" for each stream that stopped on one."""
        return [f"{r.stream}: {r.error}" for r in self.results if r.error]

    @property
    def failed(self) -> SyncResult | None:
        """The first stream of the last poll that stopped on an error."""
        return next((r for r in self.results if r.error), None)

    @property
    def caught_up(self) -> bool:
        return len(self.results) == len(STREAM_ORDER) and all(r.at_top for r in self.results)


def visits_pull(
    *,
    session_seconds: float | None = None,
    max_seconds: float | None = None,
    progress: Callable[[SyncResult], None] | None = None,
    on_retry: Callable[[str, float], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    core_force: bool = False,
) -> PullResult:
    """Pull the users and visits streams, then recompute the flags of the reps that changed.

    1. Run the users stream, then the visits stream, until `top` (streams_sync), each for at
       most `max_seconds` (default SELL_SYNC_MAX_SECONDS); a failure of the whole API (token,
       network, configuration) stops after the first stream.
    2. Recompute the flags of every rep ingestion marked dirty (flags_refresh): what did arrive
       is flagged even if a stream then failed.
    3. If a stream recorded a gap (its position expired), backfill the gap's time range from the
       Core API (reconcile.gaps_fill: statuses, no positions); a failure is kept on the gap.
    4. Without `session_seconds` (the command), stop here. With it (the worker's scheduled
       session), stop on an error, when a stream is not caught up, or when another poll would
       not start before the session ends; otherwise wait SELL_IDLE_POLL_SECONDS and go back to
       1, with each poll bounded by what is left of the session (at least one second).

    After 2 (before 3, so that the gap's walk knows every rep), the Core API's users and outcomes
    are refreshed when due (hourly; every poll with `core_force`, which sync_visits passes), unless
    the token, the settings or the network just failed a stream. Its failures are recorded in
    CoreApiState and never stop the pull. When users arrived (the stream or the Core API), the
    accounts are linked again to the Sell users with their e-mails (visits.accounts).

    A read-only archive (no SELL_ACCESS_TOKEN, read_only_archive()) does none of this: it returns
    at once with `read_only` set, having sent no request and recorded nothing.
    """
    if read_only_archive():
        return PullResult(read_only=True)
    sleep = sleep or time.sleep  # looked up when called, so a test's clock can stand in for time
    pull = PullResult()
    deadline = None if session_seconds is None else time.monotonic() + session_seconds
    while True:
        limit = max_seconds
        if deadline is not None:
            remaining = max(deadline - time.monotonic(), 1.0)
            limit = min(remaining, settings.SELL_SYNC_MAX_SECONDS if max_seconds is None else max_seconds)
        pull.results = streams_sync(max_seconds=limit, progress=progress, on_retry=on_retry)
        pull.polls += 1
        pull.applied += sum(r.applied for r in pull.results)
        pull.rejected += sum(r.rejected for r in pull.results)
        reps, changes = flags_refresh()
        pull.flagged_reps += reps
        pull.flag_changes += changes
        refreshed = core_run(results=pull.results, force=core_force)
        pull.core += refreshed
        if refreshed or any(r.stream == Stream.USERS and r.applied for r in pull.results):
            links_refresh()  # the reps' e-mails may have changed: accounts follow them (visits.accounts)
        if any(r.gaps for r in pull.results):
            pull.gaps_filled += gaps_after_sync()
        if deadline is None or pull.errors or not pull.caught_up:
            return pull
        if time.monotonic() + settings.SELL_IDLE_POLL_SECONDS > deadline:
            return pull
        sleep(settings.SELL_IDLE_POLL_SECONDS)


def core_run(*, results: list[SyncResult], force: bool) -> list[CoreRefresh]:
    if any(r.error_kind in (SyncErrorKind.TOKEN, SyncErrorKind.CONFIG, SyncErrorKind.UNREACHABLE) for r in results):
        return []  # the same token, URL and host: the Core API would only fail the same way, and slowly
    try:
        return [refresh for refresh in core_refresh(force=force) if refresh.ran]
    except Exception:  # noqa: BLE001 - e.g. the database; the Firehose's pull is done and stays done
        log.exception("the Core API refresh failed")
        return []


def gaps_after_sync() -> int:
    """Fill the gaps just recorded from the Core API; how many were filled. Never raises: the
    pull's own result stands whatever the Core API does (each gap keeps its error)."""
    from visits.ingest.reconcile import gaps_fill  # only after a gap: the every-minute poll needs none of it

    try:
        return sum(1 for gap in gaps_fill() if gap.filled_at is not None)
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("the gaps could not be filled from the Core API")
        return 0

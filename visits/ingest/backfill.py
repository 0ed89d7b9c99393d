"""The history backfill from the Core API's `GET /v2/visits`: a plan of list queries ("parts") that
splits past Sell's 100-page cap, walked page by page, each page stored (ingest/history.py) in one
transaction with its part's progress, so a run killed at any moment is continued by the next one.

A list reaches at most 100 pages of 100 visits, and there is no date filter. The plan starts with
the unsplit query by id (it may be all there is; it reveals creators). A part whose page 100 is
full is split by the next filter of DIMENSIONS (each rep, then each status, each outcome, each
resource type); the new parts are walked newest first, down to the last id the capped ascending
walk read (no visit is listed twice for nothing). A part still capped with no filter left is also
walked in the other sort order, and the two walks must meet (the ascending walk's last id at or
above the descending walk's last id). When they do not, the part is recorded as unreachable with
an estimate of how many visits it could not reach: shown on the status page and printed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from visits.ingest.core import core_refresh, state_error, state_get, state_refuse, state_success
from visits.ingest.history import StoreResult, history_store, resurrections_undo
from visits.ingest.sync import lock_owner_name, owner_is_dead
from visits.models import (
    BackfillKind,
    BackfillPart,
    BackfillPartState,
    BackfillRun,
    BackfillState,
    CoreApiState,
    CoreFeature,
    Outcome,
    Rep,
    VerificationStatus,
    Visit,
)
from visits.review.flags import flags_refresh
from visits.sell.core import MAX_PAGES, MAX_PER_PAGE, VISITS_PATH, CoreClient, CorePage, FeatureUnavailable
from visits.sell.core_items import REASON_PREFIX, HistoryVisit, history_items_parse
from visits.sell.events import Reject, raw_digest, reason_storable

log = logging.getLogger(__name__)

ASC, DESC = "id", "id:desc"
# The filters a capped part is split by, in order; a part's depth is how many it has.
DIMENSIONS = ("creator_id", "rep_location_verification_status", "outcome_id", "resource_type")
NO_USERS_WARNING = (
    "the Core API's users are not available to this account: the backfill split the visits by the reps the "
    "Firehose and the visits listed first named, and would miss the visits of a rep named by neither"
)
STORE_ATTEMPTS = 3
RESOURCE_TYPES = ("lead", "contact")  # the Core API's own; others held (from the Firehose) are added


class BackfillUnavailable(Exception):
    """This account's plan has no Core API visits (a 403, now or earlier): the feature is off."""


class BackfillBusy(Exception):
    """Another live process is walking this run."""


@dataclass
class Progress:
    """What a run has done so far, for the command's progress lines."""

    run: BackfillRun
    parts_done: int
    parts_total: int
    seconds: float  # in this process
    listed_here: int  # visits listed in this process (a continued run listed the others before)

    @property
    def visits_per_second(self) -> float:
        return self.listed_here / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        run = self.run
        return (
            f"parts {self.parts_done}/{self.parts_total} done, {run.listed:,} visits listed, {run.stored:,} stored, "
            f"{run.addresses:,} addresses filled, {run.requests:,} requests, {self.visits_per_second:,.0f} visits/s"
        )


ProgressFn = Callable[[Progress], None]
VisitsFn = Callable[[list[HistoryVisit], list[int]], None]  # a page's visits, and the ids stored of them


# --- The Core API feature ---------------------------------------------------------------------


def feature_refuse(*, message: str) -> None:
    """A 403 on /v2/visits: the feature is off until switched back on (ingest/core.py's record)."""
    state_refuse(CoreFeature.VISITS, message=message)
    state_error(CoreFeature.VISITS, message=message)


def feature_allow() -> None:
    """Switch the Core API's visits back on (an admin's decision after a plan change): the next
    backfill asks Sell again."""
    CoreApiState.objects.filter(feature=CoreFeature.VISITS).update(available=True)


def feature_check() -> None:
    state = state_get(CoreFeature.VISITS)
    if not state.available:
        when = f" since {state.refused_at:%Y-%m-%d %H:%M} UTC" if state.refused_at else ""
        raise BackfillUnavailable(
            f"the Core API's visits are switched off{when}: {state.refused_message or 'refused'}. "
            "If the account's plan now has them, run backfill_visits --ask-again."
        )


# --- The plan ----------------------------------------------------------------------------------


def run_current(
    *, kind: str = BackfillKind.HISTORY, restart: bool = False, per_page: int = MAX_PER_PAGE, page_cap: int = MAX_PAGES
) -> tuple[BackfillRun, bool]:
    """The unfinished run of `kind` to continue (and True), or a new one with its first part."""
    unfinished = BackfillRun.objects.filter(kind=kind, state=BackfillState.RUNNING).order_by("-id").first()
    if unfinished is not None and not restart:
        return unfinished, True
    BackfillRun.objects.filter(kind=kind, state=BackfillState.RUNNING).update(
        state=BackfillState.FAILED, finished_at=timezone.now(), error="replaced by a new run (--restart)"
    )
    with transaction.atomic():
        run = BackfillRun.objects.create(kind=kind, per_page=per_page, page_cap=page_cap)
        # First the unsplit query: it may be all there is, and it reveals creators.
        BackfillPart.objects.create(run=run, filters={}, sort=ASC)
    return run, False


def split_values(*, dimension: str, part: BackfillPart, client: CoreClient) -> list:
    """The values a capped part is split into along `dimension`: every rep and outcome known
    (from the Firehose, the Core API's users and outcomes, and the visits stored so far, whose
    creators and outcomes this run created), every status, the resource types."""
    filters = part.filters
    if dimension == "creator_id":
        users = core_user_ids(client=client)
        if users is None:
            part.run.warning = NO_USERS_WARNING
            part.run.save(update_fields=["warning"])
            log.warning("backfill: %s", NO_USERS_WARNING)
        return sorted(set(Rep.objects.values_list("id", flat=True)) | (users or set()))
    if dimension == "rep_location_verification_status":
        return list(VerificationStatus.values)
    if dimension == "outcome_id":
        return list(Outcome.objects.order_by("id").values_list("id", flat=True))
    held = held_matching(filters=filters).order_by().values_list("resource_type", flat=True).distinct()
    return sorted(set(RESOURCE_TYPES) | set(held))


def core_user_ids(*, client: CoreClient) -> set[int] | None:
    """Every user the Core API lists (a manager or a rep the Firehose never named has visits too);
    None when this account's plan has no Core API users."""
    try:
        return {user["id"] for user in client.users_all().items()}
    except FeatureUnavailable:
        return None


def held_matching(*, filters: dict):
    """The held visits a part's filters select (to learn the values to split by)."""
    names = {"creator_id": "rep_id", "rep_location_verification_status": "verification_status",
             "outcome_id": "outcome_id", "resource_type": "resource_type"}  # fmt: skip
    return Visit.objects.filter(**{names[k]: v for k, v in filters.items()})


def next_dimension(*, filters: dict) -> str | None:
    """The next filter to split by. Outcomes are skipped where a held visit matching the part has
    none: no outcome_id filter selects those, so the split would lose them."""
    for dimension in DIMENSIONS:
        if dimension in filters:
            continue
        if dimension == "outcome_id" and held_matching(filters=filters).filter(outcome__isnull=True).exists():
            continue
        return dimension
    return None


def other_order(part: BackfillPart) -> BackfillPart | None:
    """For the second walk of a capped leaf (the same query in the other order), the first walk."""
    parent = part.parent
    return parent if parent is not None and parent.filters == part.filters and parent.sort != part.sort else None


def part_capped(*, part: BackfillPart, client: CoreClient) -> None:
    """Page 100 came full: split the part, walk it the other way, or record what is unreachable
    (see the module's docstring). In one transaction with the part's state.

    The parts a capped ascending walk splits into are walked descending down to its last id
    (their floor): it has read every visit of theirs below it. Their own parts keep that floor."""
    first = other_order(part)
    dimension = next_dimension(filters=part.filters) if first is None else None
    # Asked before the transaction: the Core API's users are a request or more, and a write lock
    # held meanwhile (SQLite) would keep the sync waiting.
    values = split_values(dimension=dimension, part=part, client=client) if dimension else []
    with transaction.atomic():
        if first is not None:
            ascending, descending = (part, first) if part.sort == ASC else (first, part)
            part.unreachable = unreachable_estimate(ascending=ascending, descending=descending)
            part.state = BackfillPartState.UNREACHABLE
            part.note = (
                f"about {part.unreachable:,} visits (ids {ascending.last_id} to {descending.last_id}) could not be "
                "reached: this query is past the 100-page cap in both sort orders and has no filter left to split by"
            )
            log.warning("backfill part %s %s", part.filters, part.note)
        elif dimension:
            if part.sort in (ASC, DESC):
                sort, floor = DESC, part.last_id if part.sort == ASC else part.floor
            else:  # a walk of recent visits, newest first down to stop_before
                sort, floor = part.sort, None
            BackfillPart.objects.bulk_create(
                [BackfillPart(run=part.run, parent=part, filters={**part.filters, dimension: v}, sort=sort,
                              floor=floor, stop_before=part.stop_before) for v in values]
            )  # fmt: skip
            part.state = BackfillPartState.SPLIT
            part.note = f"past the cap: split into {len(values)} parts by {dimension}"
        elif part.sort in (ASC, DESC):
            other = DESC if part.sort == ASC else ASC
            BackfillPart.objects.create(run=part.run, parent=part, filters=part.filters, sort=other)
            part.state = BackfillPartState.SPLIT
            part.note = "past the cap with no filter left: walked in the other sort order too"
        else:  # a walk of recent visits: the other order starts at the oldest, of no use here
            part.state = BackfillPartState.UNREACHABLE
            part.note = (
                f"more than {part.run.page_cap * part.run.per_page:,} visits since "
                f"{part.stop_before:%Y-%m-%d %H:%M} UTC match this query with no filter left to split by: "
                "the older ones are left to the history backfill"
            )
            log.warning("backfill part %s %s", part.filters, part.note)
        part.save(update_fields=["state", "note", "unreachable"])


def unreachable_estimate(*, ascending: BackfillPart, descending: BackfillPart) -> int:
    """How many visits lie between the two walks, from the spacing of the ids they met."""
    low, high = ascending.first_id, ascending.last_id  # the ascending walk: its smallest and largest id
    top, bottom = descending.first_id, descending.last_id  # the descending one: its largest and smallest
    if low is None or high is None or top is None or bottom is None:
        return 0
    spanned = (high - low) + (top - bottom)
    between = bottom - high - 1
    seen = ascending.listed + descending.listed
    return max(1, round(between * seen / spanned)) if spanned > 0 else max(1, between)


# --- Walking -----------------------------------------------------------------------------------


def page_rejects(page: CorePage) -> list[Reject]:
    return [Reject(*raw_digest(r.raw), reason_storable(REASON_PREFIX + r.reason)) for r in page.rejects]


def part_walk(
    *,
    part: BackfillPart,
    client: CoreClient,
    owner: str = "",
    after_page: Callable[[], None] | None = None,
    on_visits: VisitsFn | None = None,
) -> None:
    """Walk one part from its next page to its end, storing each page with the part's progress.

    1. Fetch the next page of the part's query (its filters, its sort order, 100 a page).
    2. Parse it (a malformed item becomes a rejected item) and store it (history_store), and
       move the part's next page, counts, first and last id and the run's totals, all in one
       transaction: a crash between pages loses nothing and stores nothing twice.
    3. Stop when the page has no next page (but for a full last page: Sell links no page past
       the cap, whatever lies beyond it); also once the walk meets what is read already (the
       other order's walk of the same query, or a descending walk's floor), and, for a walk of
       recent visits (stop_before), once a page reaches past that moment.
    4. A full page 100 (run.page_cap): part_capped().
    """
    # Where the walk has met what is read already: the other order's walk of the same query, or
    # (descending) the floor an ascending walk of a wider query left.
    first = other_order(part)
    low = (first.last_id if first else part.floor) if part.sort == DESC else None
    high = first.last_id if first and part.sort == ASC else None
    params = {**part.filters, "sort_by": part.sort}
    run = part.run
    while part.next_page <= run.page_cap:
        page = client.list_page(VISITS_PATH, params, page=part.next_page, per_page=run.per_page)
        parsed = [*history_items_parse(items=page.items), *page_rejects(page)]
        visits = [v for v in parsed if isinstance(v, HistoryVisit)]
        # Sell gives page 100 no next_page link whatever lies beyond it: a full last page is capped.
        capped = part.next_page == run.page_cap and len(page.raw_items) >= run.per_page
        finished = not page.raw_items or (not page.next_page and not capped)
        if (low is not None and any(v.id <= low for v in visits)) or (
            high is not None and any(v.id >= high for v in visits)
        ):
            finished = True
        if part.stop_before is not None and visits and min(v.visited_at for v in visits) < part.stop_before:
            # A walk of recent visits stores only those: the older ones are the history backfill's.
            finished = True
            visits = [v for v in visits if v.visited_at >= part.stop_before]
            parsed = [*visits, *(r for r in parsed if isinstance(r, Reject))]
        stored = page_store(part=part, parsed=parsed, visits=visits, finished=finished, owner=owner)
        if on_visits:
            on_visits(visits, stored.stored_ids)
        if after_page:
            after_page()
        if finished:
            return
    part_capped(part=part, client=client)


def page_store(
    *, part: BackfillPart, parsed: list, visits: list[HistoryVisit], finished: bool, owner: str
) -> StoreResult:
    """Store a page and move its part and run on, in one transaction. A deadlock with the
    Firehose's sync writing the same visits (PostgreSQL), or SQLite still locked after its
    timeout, rolls it back: tried again, twice, before the error stops the walk."""
    for attempt in range(STORE_ATTEMPTS):
        try:
            with transaction.atomic():
                stored = history_store(parsed=parsed, now=timezone.now())
                part.listed += len(visits)
                part.stored += stored.stored
                if visits:
                    part.first_id = part.first_id if part.first_id is not None else visits[0].id
                    part.last_id = visits[-1].id
                part.next_page += 1
                if finished:
                    part.state = BackfillPartState.DONE
                part.save(update_fields=["listed", "stored", "first_id", "last_id", "next_page", "state"])
                moved = BackfillRun.objects.filter(id=part.run_id, lock_owner=owner).update(
                    requests=F("requests") + 1, listed=F("listed") + len(visits), stored=F("stored") + stored.stored,
                    updated=F("updated") + stored.updated, addresses=F("addresses") + stored.addresses,
                    lock_expires_at=timezone.now() + lease(),
                )  # fmt: skip
                if not moved:  # rolls this page back: the process that took the run over walks it
                    raise BackfillBusy(f"another process took this backfill over (its lease of {lease()} ran out)")
            return stored
        except OperationalError:
            part.refresh_from_db()  # the part as committed, before this page
            if attempt == STORE_ATTEMPTS - 1:
                raise
            log.warning("backfill: a page's store was rolled back (attempt %s); trying again", attempt + 1)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # the loop returns or raises


def run_walk(
    *,
    run: BackfillRun,
    client: CoreClient,
    owner: str = "",
    progress: ProgressFn | None = None,
    on_visits: VisitsFn | None = None,
) -> BackfillRun:
    """Walk every pending part of `run`, oldest first, until none is left (the plan grows as
    capped parts split); the flags of the reps that got visits are refreshed after each part."""
    started, listed_before = time.monotonic(), run.listed

    def report() -> None:
        if progress:
            run.refresh_from_db()
            counts = BackfillPart.objects.filter(run=run).aggregate(
                total=Count("id"), pending=Count("id", filter=Q(state=BackfillPartState.PENDING))
            )
            total, pending = counts["total"], counts["pending"]
            progress(
                Progress(run=run, parts_done=total - pending, parts_total=total, seconds=time.monotonic() - started,
                         listed_here=run.listed - listed_before)
            )  # fmt: skip

    while True:
        part = BackfillPart.objects.filter(run=run, state=BackfillPartState.PENDING).order_by("id").first()
        if part is None:
            break
        part_walk(part=part, client=client, owner=owner, after_page=report, on_visits=on_visits)
        flags_refresh()
    resurrections_undo()
    flags_refresh()
    BackfillRun.objects.filter(id=run.id).update(state=BackfillState.DONE, finished_at=timezone.now(), error="")
    state_success(CoreFeature.VISITS)
    run.refresh_from_db()
    report()
    return run


def run_failed(*, run: BackfillRun, message: str) -> None:
    """Keep the run resumable (still running) with the error the status page shows."""
    BackfillRun.objects.filter(id=run.id).update(error=message)
    state_error(CoreFeature.VISITS, message=message)


def lease() -> timedelta:
    return timedelta(seconds=settings.SELL_LOCK_SECONDS)


def run_lock(*, run: BackfillRun, owner: str) -> bool:
    """Take the run's lease if it is free, has run out, or its holder on this host died (a
    backfill killed with SIGKILL is continued at once, not after its lease)."""
    now = timezone.now()
    free = Q(lock_owner="") | Q(lock_expires_at__isnull=True) | Q(lock_expires_at__lt=now)
    if BackfillRun.objects.filter(free, id=run.id).update(lock_owner=owner, lock_expires_at=now + lease()):
        return True
    run.refresh_from_db(fields=["lock_owner"])
    holder = run.lock_owner
    if holder and owner_is_dead(holder):
        return bool(
            BackfillRun.objects.filter(id=run.id, lock_owner=holder).update(
                lock_owner=owner, lock_expires_at=now + lease()
            )
        )
    return False


def walk_guarded(
    *,
    run: BackfillRun,
    client: CoreClient | None = None,
    progress: ProgressFn | None = None,
    on_visits: VisitsFn | None = None,
) -> BackfillRun:
    """run_walk under the run's lease (BackfillBusy if a live process holds it), with a 403
    switching the feature off (BackfillUnavailable) and any other failure recorded on the run
    (which stays running: the next call continues it) before it is raised."""
    owner = lock_owner_name()
    if not run_lock(run=run, owner=owner):
        raise BackfillBusy(f"another backfill is walking this plan ({run.lock_owner or 'a process'}); it goes on")
    own = client is None
    client = client or CoreClient()
    try:
        return run_walk(run=run, client=client, owner=owner, progress=progress, on_visits=on_visits)
    except FeatureUnavailable as exc:
        feature_refuse(message=str(exc))
        run_failed(run=run, message=str(exc))
        raise BackfillUnavailable(str(exc)) from None
    except Exception as exc:
        run_failed(run=run, message=f"{type(exc).__name__}: {str(exc)[:300]}")
        raise
    finally:
        BackfillRun.objects.filter(id=run.id, lock_owner=owner).update(lock_owner="", lock_expires_at=None)
        flags_refresh()  # what did arrive is flagged, even if the walk then failed
        if own:
            client.close()


def history_backfill(
    *,
    progress: ProgressFn | None = None,
    restart: bool = False,
    client: CoreClient | None = None,
    per_page: int = MAX_PER_PAGE,
    page_cap: int = MAX_PAGES,
) -> BackfillRun:
    """Store every visit the Core API lists that visitsdash does not hold, and fill the
    resource_address of those it holds.

    1. Refuse when the Core API's visits are switched off (BackfillUnavailable).
    2. Refresh the Core API's users and outcomes when due (ingest/core.py: hourly), so that the
       reps and outcomes the history names have their names (its failures are its own records).
    3. Continue the newest unfinished history run, or plan a new one (run_current).
    4. Walk its parts (walk_guarded); a 403 switches the feature off and raises
       BackfillUnavailable, any other Sell error is recorded on the run, which the next call continues.
    """
    feature_check()
    core_refresh()
    run, _ = run_current(restart=restart, per_page=per_page, page_cap=page_cap)
    return walk_guarded(run=run, client=client, progress=progress)


def unreachable_parts(*, run: BackfillRun) -> list[BackfillPart]:
    return list(BackfillPart.objects.filter(run=run, state=BackfillPartState.UNREACHABLE).order_by("id"))

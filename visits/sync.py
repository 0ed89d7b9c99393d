"""Runs a stream until `top`: takes the stream's lease, fetches page after page, applies
each with its new position, and records what happened for the status page. Used alike
by the django-q2 task and by `manage.py sync_visits`.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from . import sell
from .ingest import LockLost, page_apply
from .models import Gap, Stream, SyncState, Visit

log = logging.getLogger(__name__)

STREAM_ORDER = (Stream.USERS, Stream.VISITS)  # names first, so visits land on named reps
BATCH_EVENTS = 1000  # events applied per transaction, at most about this many plus a page
PREFETCH_PAGES = 20  # pages fetched ahead of the one being applied


@dataclass
class SyncResult:
    stream: str
    pages: int = 0
    applied: int = 0
    skipped: int = 0
    rejected: int = 0
    retries: int = 0
    gaps: int = 0
    at_top: bool = False
    seconds: float = 0.0
    error: str = ""
    error_kind: str = ""  # "token", "unreachable", "rejected", "busy", "lock_lost"
    rejected_reasons: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return (self.applied + self.skipped) / self.seconds if self.seconds > 0 else 0.0


def lock_owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def state_get(*, stream: str) -> SyncState:
    try:
        return SyncState.objects.get_or_create(stream=stream)[0]
    except IntegrityError:  # another process created it between our get and create
        return SyncState.objects.get(stream=stream)


def owner_is_dead(owner: str) -> bool:
    """True when the holder ran on this host and its process is gone (a killed worker)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lock_acquire(*, stream: str, owner: str, seconds: int) -> bool:
    """Take the stream's lease if it is free, has run out, or its holder on this host died."""
    state_get(stream=stream)
    now = timezone.now()
    expires = now + timedelta(seconds=seconds)
    free = Q(lock_owner="") | Q(lock_expires_at__isnull=True) | Q(lock_expires_at__lt=now)
    if SyncState.objects.filter(free, stream=stream).update(lock_owner=owner, lock_expires_at=expires):
        return True
    holder = SyncState.objects.filter(stream=stream).values_list("lock_owner", flat=True).first() or ""
    if holder and owner_is_dead(holder):
        return bool(
            SyncState.objects.filter(stream=stream, lock_owner=holder).update(lock_owner=owner, lock_expires_at=expires)
        )
    return False


def lock_release(*, stream: str, owner: str) -> None:
    SyncState.objects.filter(stream=stream, lock_owner=owner).update(lock_owner="", lock_expires_at=None)


def error_record(*, stream: str, message: str) -> None:
    now = timezone.now()
    SyncState.objects.filter(stream=stream).update(last_error=message, last_error_at=now, last_poll_at=now)


def newest_held(*, stream: str):
    """The newest event time we hold for a stream: where a gap starts."""
    if stream == Stream.VISITS:
        newest = Visit.objects.aggregate(m=Max("event_time"))["m"]
    else:
        newest = None
    state = SyncState.objects.filter(stream=stream).values_list("newest_event_time", flat=True).first()
    candidates = [t for t in (newest, state) if t is not None]
    return max(candidates) if candidates else None


def gap_record(*, stream: str, owner: str, reason: str) -> None:
    """The position expired: note the gap and restart from tail, in one transaction."""
    with transaction.atomic():
        moved = SyncState.objects.filter(stream=stream, lock_owner=owner).update(position="tail", at_top=False)
        if not moved:
            raise LockLost(f"the {stream} stream lock was taken over")
        Gap.objects.create(stream=stream, start=newest_held(stream=stream), end=timezone.now(), reason=reason)


def pages_fetch(*, client: sell.FirehoseClient, stream: str, position: str) -> Iterator[sell.Page]:
    """Pages from `position` on. A thread fetches up to PREFETCH_PAGES ahead while the caller
    applies, so the database and the network work at the same time; memory stays bounded."""
    limit = settings.SELL_PAGE_LIMIT
    pages: queue.Queue = queue.Queue(maxsize=PREFETCH_PAGES)
    stop = threading.Event()

    def hand_over(item) -> None:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def fetch() -> None:
        next_position = position
        try:
            while not stop.is_set():
                page = client.page_fetch(stream=stream, position=next_position, limit=limit)
                hand_over(page)
                if page.top:
                    return
                next_position = page.position
        except Exception as exc:  # handed to the caller, who raises it in its own thread
            hand_over(exc)

    fetcher = threading.Thread(target=fetch, name=f"fetch-{stream}", daemon=True)
    fetcher.start()
    try:
        while True:
            item = pages.get()
            if isinstance(item, Exception):
                raise item
            yield item
            if item.top:
                return
    finally:
        stop.set()
        fetcher.join(timeout=1)


class _Batch:
    """Pages waiting to be applied together with the position after the last of them.

    Applying about BATCH_EVENTS events per transaction instead of one page amortises the
    commit and the bookkeeping queries; a crash still loses nothing, as the position moves
    in the same transaction as the items.
    """

    def __init__(self, *, stream: str, owner: str, result: SyncResult) -> None:
        self.stream, self.owner, self.result = stream, owner, result
        self.lease = timedelta(seconds=settings.SELL_LOCK_SECONDS)
        self.items: list = []
        self.pages = 0
        self.position = ""
        self.at_top = False

    def add(self, page: sell.Page) -> None:
        self.items.extend(page.items)
        self.pages += 1
        self.position, self.at_top = page.position, page.top

    def flush(self) -> None:
        if not self.pages:
            return
        applied = page_apply(
            stream=self.stream, items=self.items, position=self.position, at_top=self.at_top,
            pages=self.pages, owner=self.owner, lease=self.lease,
        )  # fmt: skip
        result = self.result
        result.pages += self.pages
        result.applied += applied.applied
        result.skipped += applied.skipped
        result.rejected += applied.rejected
        result.rejected_reasons.extend(applied.rejected_reasons)
        result.at_top = self.at_top
        self.items, self.pages = [], 0


def stream_sync(
    *,
    stream: str,
    client: sell.FirehoseClient | None = None,
    max_seconds: float | None = None,
    progress: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Fetch and apply pages of `stream` until `top` (or until `max_seconds` have passed)."""
    result = SyncResult(stream=stream)
    owner = lock_owner_name()
    max_seconds = max_seconds if max_seconds is not None else settings.SELL_SYNC_MAX_SECONDS
    started = time.monotonic()
    if not lock_acquire(stream=stream, owner=owner, seconds=settings.SELL_LOCK_SECONDS):
        result.error, result.error_kind = f"another sync of the {stream} stream is running", "busy"
        return result
    own_client = client is None
    client = client or sell.FirehoseClient()
    retries_before = client.retries
    batch = _Batch(stream=stream, owner=owner, result=result)
    try:
        position = SyncState.objects.get(stream=stream).position or settings.SELL_START_POSITION
        restarted = False
        while True:
            try:
                for page in pages_fetch(client=client, stream=stream, position=position):
                    batch.add(page)
                    result.seconds = time.monotonic() - started
                    out_of_time = result.seconds >= max_seconds
                    if page.top or out_of_time or len(batch.items) >= BATCH_EVENTS:
                        batch.flush()
                        result.retries = client.retries - retries_before
                        if progress:
                            progress(result)
                    if out_of_time:
                        break
                break
            except sell.PositionExpired as exc:
                batch.flush()
                if restarted or position in ("tail", "top"):
                    raise
                gap_record(stream=stream, owner=owner, reason=str(exc))
                result.gaps += 1
                position, restarted = "tail", True
            except sell.SellError:
                batch.flush()  # keep what arrived before the failure
                raise
        SyncState.objects.filter(stream=stream).update(last_error="", last_error_at=None)
    except sell.SellError as exc:
        result.error = str(exc)
        result.error_kind = {
            sell.NoToken: "token",
            sell.TokenRefused: "token",
            sell.Unreachable: "unreachable",
        }.get(type(exc), "rejected")
        error_record(stream=stream, message=result.error)
        log.warning("%s stream sync stopped: %s", stream, result.error)
    except LockLost as exc:
        result.error, result.error_kind = str(exc), "lock_lost"
        log.warning("%s", exc)
    finally:
        lock_release(stream=stream, owner=owner)
        if own_client:
            client.close()
        result.seconds = time.monotonic() - started
        result.retries = client.retries - retries_before
    return result


def streams_sync(
    *,
    client: sell.FirehoseClient | None = None,
    max_seconds: float | None = None,
    progress: Callable[[SyncResult], None] | None = None,
) -> list[SyncResult]:
    """The users stream, then the visits stream; stops at the first stream that fails."""
    results = []
    for stream in STREAM_ORDER:
        result = stream_sync(stream=stream, client=client, max_seconds=max_seconds, progress=progress)
        results.append(result)
        if result.error and result.error_kind != "busy":
            break
    return results

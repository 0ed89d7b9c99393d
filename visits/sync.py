"""Runs a stream until `top`: takes the stream's lease, fetches page after page, applies
each with its new position, and records what happened for the status page. Used alike
by the django-q2 task and by `manage.py sync_visits`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
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
    lease = timedelta(seconds=settings.SELL_LOCK_SECONDS)
    max_seconds = max_seconds if max_seconds is not None else settings.SELL_SYNC_MAX_SECONDS
    started = time.monotonic()
    if not lock_acquire(stream=stream, owner=owner, seconds=settings.SELL_LOCK_SECONDS):
        result.error, result.error_kind = f"another sync of the {stream} stream is running", "busy"
        return result
    own_client = client is None
    client = client or sell.FirehoseClient()
    retries_before = client.retries
    expired_in_a_row = 0
    try:
        position = SyncState.objects.get(stream=stream).position or settings.SELL_START_POSITION
        while True:
            try:
                page = client.page_fetch(stream=stream, position=position, limit=settings.SELL_PAGE_LIMIT)
            except sell.PositionExpired as exc:
                expired_in_a_row += 1
                if expired_in_a_row > 1 or position in ("tail", "top"):
                    raise
                gap_record(stream=stream, owner=owner, reason=str(exc))
                result.gaps += 1
                position = "tail"
                continue
            expired_in_a_row = 0
            applied = page_apply(
                stream=stream, items=page.items, position=page.position, at_top=page.top, owner=owner, lease=lease
            )
            position = page.position
            result.pages += 1
            result.applied += applied.applied
            result.skipped += applied.skipped
            result.rejected += applied.rejected
            result.rejected_reasons.extend(applied.rejected_reasons)
            result.at_top = page.top
            result.seconds = time.monotonic() - started
            result.retries = client.retries - retries_before
            if progress:
                progress(result)
            if page.top or result.seconds >= max_seconds:
                break
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

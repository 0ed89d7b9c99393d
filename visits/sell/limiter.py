"""One rate limit for every request this host sends to Sell with one token: the Firehose client,
its fetch process and the Core API client all take their turn here, across processes.

Sell allows 10 requests a second per token. A small file named by a hash of the token holds the
next free moment (CLOCK_MONOTONIC, which every process on the host shares); a caller takes that
moment under an flock, pushes it one interval on, and sleeps until its turn.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Turns are spaced a little wider than 1/rate: a request reaches Sell some milliseconds after its
# turn, and that jitter must not put rate + 1 requests into one of Sell's seconds.
HEADROOM = 1.05
SLOT = struct.Struct("!d")

log = logging.getLogger(__name__)


class RateLimiter:
    """At most `rate` requests a second per token on this host; `rate` 0 switches it off."""

    def __init__(
        self,
        *,
        token: str,
        rate: float,
        directory: str | os.PathLike | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.interval = HEADROOM / rate if rate > 0 else 0.0
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:24]
        self.path = Path(directory or tempfile.gettempdir()) / f"visitsdash-sell-rate-{digest}"
        self.clock, self.sleep = clock, sleep
        self.own_turn = 0.0  # this process's next turn, when the shared file cannot be used

    def turn_wait(self) -> float:
        """Block until this request may go; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        try:
            now, turn = self.turn_take()
        except OSError as exc:
            # Another user's file of that name, a read-only temporary directory: keep this
            # process's own pace rather than stop the sync (others on the host are not counted).
            log.warning(
                "the shared rate limit's file %s cannot be used (%s): limiting this process only", self.path, exc
            )
            now = self.clock()
            turn = max(now, self.own_turn)
            self.own_turn = turn + self.interval
        wait = turn - now
        if wait > 0:
            self.sleep(wait)
        return wait

    def turn_take(self) -> tuple[float, float]:
        """(now, this request's turn), moving the shared next turn on under the file's lock."""
        # O_NOFOLLOW: a symbolic link planted in the shared temporary directory is refused, not followed.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            now = self.clock()
            raw = os.pread(fd, SLOT.size, 0)
            stored = SLOT.unpack(raw)[0] if len(raw) == SLOT.size else 0.0
            # A turn far ahead is from before a reboot (the clock restarted) or a bigger interval.
            if not 0.0 <= stored - now <= 3600:
                stored = 0.0
            turn = max(now, stored)
            os.pwrite(fd, SLOT.pack(turn + self.interval), 0)
        finally:
            os.close(fd)  # releases the flock
        return now, turn

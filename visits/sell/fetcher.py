"""Fetches a stream's pages in a child process, ahead of the process that applies them.

HTTP and JSON decoding cost as much CPU as applying the events, and Python threads share one
core (the GIL), so a fetch thread gained nothing; a child process runs on the other core.
The child (`python -m visits.sell.fetcher`) also parses each page (events.items_parse), which takes
that work off the writing process too. It gets its job as a pickle on stdin and writes
length-prefixed pickled frames on stdout: ("page", parsed events, position, top), ("retry",
problem, delay) or ("error", exception class name, message). It needs no Django set-up.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from visits.sell import events, firehose

FRAME_HEADER = struct.Struct("!I")
PREFETCH_PAGES = 60  # pages read ahead of the one being applied; bounds memory


@dataclass(frozen=True)
class ParsedPage:
    events: list  # of events.Event and events.Reject, in the page's order
    position: str
    top: bool


@dataclass(frozen=True)
class FetchJob:
    """Plain values only: the child unpickles it without Django (no model enums here)."""

    stream: str
    position: str
    limit: int
    base_url: str
    token: str
    timeout: float
    max_retries: int
    backoff_base: float
    backoff_cap: float
    rate_limit: float  # requests a second for the token, shared with the parent (0: off)
    min_year: int  # events.TimeBounds, as the settings give them
    max_year: int


def frame_write(out, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(FRAME_HEADER.pack(len(data)) + data)
    out.flush()


def frame_read(stream) -> tuple | None:
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (size,) = FRAME_HEADER.unpack(header)
    return pickle.loads(stream.read(size))


def child_main() -> None:
    """The child: fetch from the job's position until top, a frame per page."""
    try:
        job = FetchJob(**pickle.load(sys.stdin.buffer))
    except EOFError:
        return  # started ahead, then not needed (the stream was caught up) or the parent died
    out = sys.stdout.buffer
    parent = os.getppid()
    client = firehose.FirehoseClient(
        base_url=job.base_url, token=job.token, timeout=job.timeout, max_retries=job.max_retries,
        backoff_base=job.backoff_base, backoff_cap=job.backoff_cap, rate_limit=job.rate_limit,
        on_retry=lambda problem, delay: frame_write(out, ("retry", problem, delay)),
    )  # fmt: skip
    position = job.position
    bounds = events.TimeBounds.years(min_year=job.min_year, max_year=job.max_year)
    try:
        while os.getppid() == parent:  # the parent was killed: stop too
            page = client.page_fetch(stream=job.stream, position=position, limit=job.limit)
            parsed = events.items_parse(stream=job.stream, items=page.items, bounds=bounds)
            frame_write(out, ("page", parsed, page.position, page.top))
            if page.top:
                return
            position = page.position
    except firehose.SellError as exc:
        frame_write(out, ("error", type(exc).__name__, str(exc)))
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the parent stopped reading


class FetchProcess:
    """The parent's side of one child. The child starts (and imports) on construction and
    then waits for its job, so its start-up can overlap the parent's own first request."""

    def __init__(self) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-m", "visits.sell.fetcher"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert self.child.stdin is not None and self.child.stdout is not None  # both asked for as PIPE
        self.stdin: IO[bytes] = self.child.stdin
        self.stdout: IO[bytes] = self.child.stdout
        self.frames: queue.Queue = queue.Queue(maxsize=PREFETCH_PAGES)
        self.stop_reading = threading.Event()
        self.reader: threading.Thread | None = None

    def _drain(self) -> None:
        """Read frames as they come, so the child is never held up by a full pipe."""
        while not self.stop_reading.is_set():
            message = frame_read(self.stdout)
            while not self.stop_reading.is_set():
                try:
                    self.frames.put(message, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if message is None:
                return

    def pages(self, *, job: FetchJob, on_retry: Callable[[str, float], None] | None = None) -> Iterator[ParsedPage]:
        """Parsed pages from `job.position` on, until top; raises the child's SellError."""
        self.stdin.write(pickle.dumps(asdict(job)))
        self.stdin.close()
        self.reader = threading.Thread(target=self._drain, name=f"fetch-{job.stream}", daemon=True)
        self.reader.start()
        while True:
            message = self.frames.get()
            if message is None:
                raise firehose.Unreachable(f"the fetch process stopped unexpectedly (exit code {self.child.wait()})")
            kind, *rest = message
            if kind == "retry":
                if on_retry:
                    on_retry(*rest)
                continue
            if kind == "error":
                name, text = rest
                raise getattr(firehose, name, firehose.SellError)(text)
            parsed, position, top = rest
            yield ParsedPage(events=parsed, position=position, top=top)
            if top:
                return

    def stop(self) -> None:
        self.stop_reading.set()
        if self.child.poll() is None:
            self.child.kill()
        self.child.wait()
        if self.reader:
            self.reader.join(timeout=1)
        for pipe in (self.stdin, self.stdout):
            if not pipe.closed:
                pipe.close()


if __name__ == "__main__":
    child_main()

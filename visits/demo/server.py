"""A real HTTP server that imitates Sell's Firehose (`/v3/visits/stream`, `/v3/users/stream`),
and on the same port its Core API v2 (`/v2/...`, answered by core_api.py with its own knobs).

It serves a `DemoData` log with Sell's envelopes, positions, errors and quirks (empty and
short pages, redelivery, per-id-only ordering, 410 on expired positions, 429, 5xx, dropped
connections, bodies cut short or dripped out slowly), each quirk a `Faults` knob, plus hooks
for tests. Standard library only.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from visits.demo.core_api import ApiError, CoreApi, CoreFaults, chance, invalid_param
from visits.demo.generator import DemoData

ROUTES = {"/v3/visits/stream": "visits", "/v3/users/stream": "users"}
JSON_TYPE = "application/json; charset=utf-8"
MORE_INFO = "https://developer.zendesk.com/api-reference/sales-crm/errors/"
UNAUTHORIZED_DETAILS = "Required access token is missing, malformed, expired, or invalid."
DEFAULT_LIMIT, MAX_LIMIT = 25, 100
MAX_REDELIVERY = 10
MAX_DELAY = 0.2
DRIP_INTERVAL = 0.1  # a dripped body: one byte this often (each read is quick, the whole is not) ...
DRIP_SECONDS = 5.0  # ... for this long, then the rest at once
REQUEST_LOG_SIZE = 100_000
CONTROL_PATH = "/_demo/faults"  # POST {"refuse_token": true}: the demo's own, no Sell path


@dataclass
class Faults:
    """Misbehaviour to inject: probabilities per request (0..1), all off by default."""

    empty_pages: float = 0.0
    short_pages: float = 0.0
    redeliver: float = 0.0
    shuffle: float = 0.0
    server_errors: float = 0.0
    rate_limit: float = 0.0
    retry_after: int | None = None
    drop_connection: float = 0.0
    slow: float = 0.0
    truncate: float = 0.0  # the body stops halfway and the connection closes (Content-Length or chunked)
    drip: float = 0.0  # the body comes a byte every DRIP_INTERVAL for DRIP_SECONDS, then the rest
    # Not probabilities: after every `expire_after_pages` pages served (counted from when these
    # faults were set), every position issued so far answers 410, as expire_positions() does;
    # `expire_times` times (0: for ever), so one sync can meet a second expiry, or endless ones.
    expire_after_pages: int = 0
    expire_times: int = 1
    seed: int = 0
    refuse_token: bool = False  # every request answers 401, as when the token is revoked in Sell

    def __post_init__(self) -> None:
        for name, value in self.probabilities().items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, not {value}")
        if self.expire_after_pages < 0 or self.expire_times < 0:
            raise ValueError("expire_after_pages and expire_times must be 0 or more")

    @classmethod
    def chaos(cls, *, seed: int = 0) -> Faults:
        """A mix a robust client must survive: page quirks often, failures now and then."""
        return cls(
            empty_pages=0.2,
            short_pages=0.2,
            redeliver=0.2,
            shuffle=0.2,
            slow=0.2,
            server_errors=0.05,
            rate_limit=0.05,
            drop_connection=0.05,
            truncate=0.05,
            drip=0.01,
            seed=seed,
        )

    def probabilities(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "float"}

    def active(self) -> dict[str, float | int]:
        """The knobs that are on, for printing."""
        knobs: dict[str, float | int] = {name: p for name, p in self.probabilities().items() if p}
        if self.retry_after is not None:
            knobs["retry_after"] = self.retry_after
        if self.expire_after_pages:
            knobs.update(expire_after_pages=self.expire_after_pages, expire_times=self.expire_times)
        if self.refuse_token:
            knobs["refuse_token"] = 1
        return knobs


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int | None  # None when the connection was dropped on purpose
    at: float = field(default_factory=time.monotonic)  # when it came in (the clock every process shares)


@dataclass
class _Log:
    """One stream: events serialized once, with what paging and retention need to know."""

    events: list[bytes] = field(default_factory=list)
    keys: list[object] = field(default_factory=list)  # same key = same id, never reordered
    times: list[datetime] = field(default_factory=list)
    start: int = 0  # first retained offset

    def add(self, event: object, *, now: datetime) -> None:
        """Append `event`; one without a usable time is stamped like the one before it (or
        `now`, the server's clock, when it is the first), so retention can still place it."""
        data = event.get("data") if isinstance(event, dict) else None
        meta = event.get("meta") if isinstance(event, dict) else None
        item_id = data.get("id") if isinstance(data, dict) else None
        self.keys.append(("id", item_id) if isinstance(item_id, (int, str)) else ("offset", len(self.events)))
        try:
            at = datetime.fromisoformat(meta["event_time"])
        except (TypeError, KeyError, ValueError):
            at = self.times[-1] if self.times else now
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if not 1900 <= at.year <= 2200:  # a hostile time (year 1, year 9999): no use for retention
            at = self.times[-1] if self.times else now
        self.times.append(at)
        text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        try:
            self.events.append(text.encode())
        except UnicodeEncodeError:  # a lone surrogate: JSON can carry it only as a \u escape
            self.events.append(json.dumps(event, separators=(",", ":")).encode())


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delivery: str = ""  # how the body is sent: "" whole, "cut", "cut_chunked" or "drip"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DemoFirehose/1.0"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # headers and body leave in one send, flushed after each request
    timeout = 60  # idle keep-alive connections give their thread back

    def do_GET(self) -> None:
        self.server.firehose.request_handle(self)

    def do_POST(self) -> None:
        self.server.firehose.control_handle(self)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests and the command print what matters themselves."""

    def finish(self) -> None:
        try:
            super().finish()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up in the middle of a body (cut short, or dripping past its deadline)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    firehose: DemoFirehose

    def handle_error(self, request, client_address) -> None:
        """A client that hung up mid-answer (its timeout, during --drip) is normal here, not a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class DemoFirehose:
    """Serve `data` over HTTP like Sell's Firehose; see the module docstring."""

    def __init__(
        self,
        data: DemoData,
        *,
        token: str = "demo-token",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        retention: timedelta | None = None,
        clock: Callable[[], datetime] | None = None,
        live_interval: float | None = None,
        core_faults: CoreFaults | None = None,
    ) -> None:
        self.data = data
        self.token = token
        self.retention = retention
        self.live_interval = live_interval
        self._clock = clock or (lambda: datetime.now(UTC))
        self._clock_offset = timedelta()
        self._epoch = 0
        self._lock = threading.Lock()
        # Bounded, so a demo left running for days does not grow: tests read far fewer.
        self._requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self._logs = {"users": _Log(), "visits": _Log()}
        for event in data.users_events:
            self._logs["users"].add(event, now=self.now())
        for event in data.visits_events:
            self._logs["visits"].add(event, now=self.now())
        self.faults = faults or Faults()
        self.core = CoreApi(data, faults=core_faults)
        self._httpd = _Server((host, port), _Handler)
        self._httpd.firehose = self
        self._serving: threading.Thread | None = None
        self._live: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DemoFirehose:
        """Serve in a background thread and return at once; a second call does nothing."""
        if self._serving is not None:
            return self
        self._serving = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="demo-firehose", daemon=True
        )
        self._serving.start()
        self._live_start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until `stop()` or KeyboardInterrupt."""
        self._live_start()
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        self._stopping.set()
        if self._live is not None:
            self._live.join()
        if self._serving is not None:
            self._httpd.shutdown()
            self._serving.join()
        self._httpd.server_close()

    def __enter__(self) -> DemoFirehose:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _live_start(self) -> None:
        if self.live_interval:
            self._live = threading.Thread(target=self._live_run, name="demo-firehose-live", daemon=True)
            self._live.start()

    def _live_run(self) -> None:
        while not self._stopping.wait(self.live_interval):
            self.append("visits", self.data.append_live(now=self.now()))

    # --- test hooks -----------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults
            self._rng = random.Random(faults.seed)
            self._pages_served = 0  # for faults.expire_after_pages

    def now(self) -> datetime:
        """The server's clock: the injected clock plus `advance_clock()` offsets."""
        return self._clock() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        with self._lock:
            self._clock_offset += timedelta(seconds=seconds)

    def append(self, stream: str, events: list[dict]) -> None:
        """Add events to the served log only (the `DemoData` is not told)."""
        with self._lock:
            for event in events:
                self._logs[stream].add(event, now=self.now())

    def expire_positions(self) -> None:
        """Every position issued so far answers 410 from now on."""
        with self._lock:
            self._epoch += 1

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- HTTP -----------------------------------------------------------------------------

    def control_handle(self, handler: _Handler) -> None:
        """POST CONTROL_PATH with a JSON object of Faults to change on the running server
        (`manage.py demo_fault`), from this machine only; answers the faults now on."""
        status, answer = 200, {}
        try:
            if handler.client_address[0] not in ("127.0.0.1", "::1"):
                status = 403
                raise ValueError("faults are switched from this machine only")
            if urlsplit(handler.path).path != CONTROL_PATH:
                status = 404
                raise ValueError(f"the demo's control path is {CONTROL_PATH}")
            length = int(handler.headers.get("Content-Length") or 0)
            changes = json.loads(handler.rfile.read(min(length, 10_000)) or b"{}")
            self.faults = _faults_changed(self.faults, changes)
            answer = {"faults": self.faults.active()}
        except (ValueError, TypeError) as error:
            status = 400 if status == 200 else status
            answer = {"error": str(error)}
        body = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", JSON_TYPE)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def request_handle(self, handler: _Handler) -> None:
        """Answer one request (called by the handler thread)."""
        request_id = str(uuid.uuid4())
        split = urlsplit(handler.path)
        query = {key: values[-1] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        record = RequestRecord(handler.command, split.path, query, dict(handler.headers.items()), None)
        try:
            reply = self._reply(split.path, query, handler)
        except ApiError as error:
            reply = _error_reply(error, request_id)
        record.status = reply.status if reply else None
        with self._lock:
            self._requests.append(record)
        if reply is None:
            handler.close_connection = True
            return
        handler.send_response(reply.status)
        handler.send_header("Content-Type", JSON_TYPE)
        if reply.delivery == "cut_chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(len(reply.body)))
        handler.send_header("X-Request-Id", request_id)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        try:
            self._body_send(handler, reply)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, e.g. at its deadline
            handler.close_connection = True

    def _body_send(self, handler: _Handler, reply: _Reply) -> None:
        body, out = reply.body, handler.wfile
        if reply.delivery == "cut":  # half of what Content-Length announced, then the connection closes
            out.write(body[: len(body) // 2])
            handler.close_connection = True
        elif reply.delivery == "cut_chunked":  # one chunk of half the body, never the last chunk
            half = body[: len(body) // 2]
            out.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
            handler.close_connection = True
        elif reply.delivery == "drip":
            sent, until = 0, time.monotonic() + DRIP_SECONDS
            out.flush()  # the headers now
            while sent < len(body) - 1 and time.monotonic() < until and not self._stopping.is_set():
                out.write(body[sent : sent + 1])
                out.flush()
                sent += 1
                time.sleep(DRIP_INTERVAL)
            out.write(body[sent:])
        else:
            out.write(body)

    def _reply(self, path: str, query: dict[str, str], handler: _Handler) -> _Reply | None:
        """The answer to a request, None to drop the connection; Sell errors are raised."""
        base = f"http://{handler.headers['Host']}" if handler.headers.get("Host") else self.url
        if path.startswith("/v2/"):  # the Core API: its own faults (core.faults), not the Firehose's
            if handler.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "unauthorized", "Unauthorized", UNAUTHORIZED_DETAILS)
            body = self.core.reply(path, query, base=base)
            return None if body is None else _Reply(200, body)
        stream = ROUTES.get(path)
        if stream is None:
            raise ApiError(404, "incorrect_path", "Incorrect path", f"The requested path {path} does not exist.")
        if handler.headers.get("Authorization") != f"Bearer {self.token}" or self._faults.refuse_token:
            raise ApiError(401, "unauthorized", "Unauthorized", UNAUTHORIZED_DETAILS)
        with self._lock:
            faults, rng = self._faults, self._rng
            delay = rng.uniform(0, MAX_DELAY) if chance(rng, faults.slow) else 0.0
            drop = chance(rng, faults.drop_connection)
            failure = rng.choice((500, 503)) if chance(rng, faults.server_errors) else None
            limited = chance(rng, faults.rate_limit)
            delivery = ""
            if chance(rng, faults.truncate):
                delivery = rng.choice(("cut", "cut_chunked"))
            elif chance(rng, faults.drip):
                delivery = "drip"
        if delay:
            time.sleep(delay)
        if drop:
            return None
        if failure == 500:
            raise ApiError(500, "server_error", "Internal server error", "Something went wrong on our side.")
        if failure == 503:
            raise ApiError(
                503,
                "temporarily_unavailable",
                "Service temporarily unavailable",
                "The service is temporarily unavailable, try again later.",
            )
        if limited:
            retry_after = {} if faults.retry_after is None else {"Retry-After": str(faults.retry_after)}
            raise ApiError(
                429,
                "rate_limit_exceeded",
                "Rate limit exceeded",
                "Too many requests for this token (36,000 per hour, 10 per second).",
                headers=retry_after,
            )
        reply = self._page(stream, query, base=base)
        reply.delivery = delivery
        return reply

    def _page(self, stream: str, query: dict[str, str], *, base: str) -> _Reply:
        limit = _limit_parse(query.get("limit"))
        position = query.get("position")
        if not position:
            raise invalid_param("position", "position is required: tail, top or a position returned by this stream.")
        with self._lock:
            log, faults, rng = self._logs[stream], self._faults, self._rng
            first = self._retained_start(log)
            end = len(log.events)
            if position == "tail":
                offset = first
            elif position == "top":
                offset = end
            else:
                offset = self._token_offset(stream, position, first=first, end=end)
            indices, new_offset = _page_indices(rng, faults, log, offset=offset, end=end, first=first, limit=limit)
            if len(indices) > 1 and chance(rng, faults.shuffle):
                indices = _shuffle_keep_id_order(rng, indices, log.keys)
            items = [log.events[i] for i in indices]
            token = _token_encode(stream, new_offset, self._epoch)
            top = new_offset >= end
            self._pages_served += 1
            every, times = faults.expire_after_pages, faults.expire_times
            if every and self._pages_served % every == 0 and (not times or self._pages_served // every <= times):
                self._epoch += 1  # this page's position too: the next request with it answers 410
        meta = {"position": token, "top": top, "links": {"next": f"{base}/v3/{stream}/stream?position={token}"}}
        meta_json = json.dumps(meta, separators=(",", ":")).encode()
        body = b'{"items":[' + b",".join(items) + b'],"meta":' + meta_json + b"}"
        return _Reply(200, body)

    def _retained_start(self, log: _Log) -> int:
        if self.retention is not None:
            cutoff = self.now() - self.retention
            while log.start < len(log.events) and log.times[log.start] < cutoff:
                log.start += 1
        return log.start

    def _token_offset(self, stream: str, position: str, *, first: int, end: int) -> int:
        try:
            raw = base64.urlsafe_b64decode(position + "=" * (-len(position) % 4)).decode("ascii")
            token_stream, offset_text, epoch_text, _nonce = raw.split(",")
            offset, epoch = int(offset_text), int(epoch_text)
        except ValueError:
            raise invalid_param("position", "position is not a position issued by this stream.") from None
        if token_stream != stream or offset < 0 or epoch < 0:
            raise invalid_param("position", "position is not a position issued by this stream.")
        # Past what this server has issued: a position from an earlier run of the demo (bin/demo
        # started again on the same database). Sell would know it as an old position of this
        # stream, long expired: the sync records a gap and starts again from tail.
        if epoch < self._epoch or offset < first or offset > end or epoch > self._epoch:
            raise ApiError(
                410,
                "gone",
                "Position expired",
                "This position has expired: Sell keeps the last 72 hours of events. Start again from tail or top.",
            )
        return offset


def _page_indices(
    rng: random.Random, faults: Faults, log: _Log, *, offset: int, end: int, first: int, limit: int
) -> tuple[list[int], int]:
    """Log offsets to send and the offset after them, with the page-shape faults applied."""
    if offset >= end or chance(rng, faults.empty_pages):
        return [], offset  # an empty page never moves past an unsent event
    count = min(limit, end - offset)
    if count > 1 and chance(rng, faults.short_pages):
        count = rng.randint(1, count - 1)
    back = 0
    if offset > first and chance(rng, faults.redeliver):
        back = min(rng.randint(1, MAX_REDELIVERY), offset - first, limit - 1)
        count = min(count, limit - back)
    indices = list(range(offset - back, offset + count))
    if len(indices) < limit and chance(rng, faults.redeliver):
        at = rng.randrange(len(indices))
        indices.insert(at, indices[at])  # right next to itself: per-id order still holds
    return indices, offset + count


def _shuffle_keep_id_order(rng: random.Random, indices: list[int], keys: list[object]) -> list[int]:
    """A uniformly random interleaving of the page in which each id keeps its own order."""
    draws = [rng.random() for _ in indices]
    slots_by_key: dict[object, list[int]] = {}
    for slot, index in enumerate(indices):
        slots_by_key.setdefault(keys[index], []).append(slot)
    sort_keys = [0.0] * len(indices)
    for slots in slots_by_key.values():
        for slot, draw in zip(slots, sorted(draws[slot] for slot in slots), strict=False):
            sort_keys[slot] = draw
    return [indices[slot] for slot in sorted(range(len(indices)), key=sort_keys.__getitem__)]


def _faults_changed(faults: Faults, changes: object) -> Faults:
    """`faults` with `changes` (a JSON object) applied; ValueError on an unknown name or a value
    of the wrong kind (a switch takes true or false, the rest numbers)."""
    names = {f.name for f in fields(Faults)}
    if not isinstance(changes, dict) or not set(changes) <= names:
        raise ValueError(f"send a JSON object with some of: {', '.join(sorted(names))}")
    for name, value in changes.items():
        switch = isinstance(getattr(Faults(), name), bool)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (switch and not isinstance(value, bool)) or (not switch and not number and value is not None):
            raise ValueError(f"{name} takes {'true or false' if switch else 'a number'}, not {value!r}")
    return dataclasses.replace(faults, **changes)


def _limit_parse(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise invalid_param("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}.") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid_param("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return limit


def _token_encode(stream: str, offset: int, epoch: int) -> str:
    raw = f"{stream},{offset},{epoch},{uuid.uuid4().hex[:12]}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _error_reply(error: ApiError, request_id: str) -> _Reply:
    body = {
        "errors": [
            {
                "error": {"code": error.code, "message": error.message, "details": error.details},
                "meta": {"type": "error", "links": {"more_info": MORE_INFO}},
            }
        ],
        "meta": {
            "type": "errors",
            "http_status": f"{error.status} {HTTPStatus(error.status).phrase}",
            "logref": request_id,
            "links": {"more_info": MORE_INFO},
        },
    }
    return _Reply(error.status, json.dumps(body).encode(), dict(error.headers))

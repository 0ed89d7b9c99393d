"""What every Sell client shares: the errors, the session with its token and User-Agent, the
whole-request deadline, the shared rate limit, and one retry loop (429, 5xx, time-outs, dropped
or truncated connections) with capped, jittered backoff. firehose.py and core.py build on it.

SELL_TIMEOUT bounds a whole request, not each read: a server that sends a byte now and then
would otherwise hold the sync for ever, since a socket time-out restarts with every byte.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import requests
import urllib3
from django.conf import settings

from visits import __version__
from visits.sell.limiter import RateLimiter

RETRY_AFTER_CEILING = 600.0  # seconds; a larger Retry-After is treated as this
READ_CHUNK = 1 << 18  # bytes asked for per read of a body; a read returns what has arrived
# requests' errors that a retry cannot cure: the URL or a header is wrong in the settings.
CONFIGURATION_ERRORS = (
    requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader, requests.exceptions.URLRequired,
)  # fmt: skip
# Everything else that can go wrong on the way (refused, reset or truncated connections, bodies
# that do not decode, time-outs), whether requests or urllib3 (reading the body) raises it.
TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)

T = TypeVar("T")


class SellError(Exception):
    """Base of every error the clients raise; `str()` is a sentence an admin can act on."""


class NoToken(SellError):
    pass


class TokenRefused(SellError):
    pass


class PositionExpired(SellError):
    pass


class RequestRejected(SellError):
    pass


class Unreachable(SellError):
    pass


class BadConfiguration(SellError):
    pass


class FeatureUnavailable(SellError):
    """A 403 from the Core API: the account's plan has no such data (the token itself works)."""


def user_agent() -> str:
    return f"visitsdash/{__version__} python-requests/{requests.__version__}"


def error_details(body: bytes) -> str:
    """The `details`/`message` of Sell's error envelope, or a short piece of the body."""
    try:
        error = json.loads(body)["errors"][0]["error"]
        text = error.get("details") or error.get("message") or error.get("code") or ""
        code = error.get("code")
        if code and code not in text:
            text = f"{code}: {text}"
        return str(text)[:300]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace").strip()


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_CEILING)


class SellClient:
    """One client per run; it keeps the connection open between requests. Arguments left out
    come from the settings; the fetch process passes them all, since it runs without Django."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        rate_limit: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        self.base_url = (base_url if base_url is not None else settings.SELL_API_URL).rstrip("/")
        self.token = token if token is not None else settings.SELL_ACCESS_TOKEN
        self.timeout = timeout if timeout is not None else settings.SELL_TIMEOUT
        self.max_retries = max_retries if max_retries is not None else settings.SELL_MAX_RETRIES
        self.backoff_base = backoff_base if backoff_base is not None else settings.SELL_BACKOFF_BASE
        self.backoff_cap = backoff_cap if backoff_cap is not None else settings.SELL_BACKOFF_CAP
        self.rate_limit = rate_limit if rate_limit is not None else settings.SELL_RATE_LIMIT
        self.limiter = RateLimiter(token=self.token, rate=self.rate_limit)
        self.sleep = sleep
        self.on_retry = on_retry
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {self.token}", "Accept": "application/json", "User-Agent": user_agent()}
        )

    def close(self) -> None:
        self.session.close()

    def backoff_delay(self, *, attempt: int) -> float:
        """Equal jitter: half the capped exponential delay, plus a random share of the rest."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def status_error(self, status: int, body: bytes) -> SellError | None:
        """The error a non-200, non-retryable answer means; None retries it. Subclasses add theirs."""
        if status in (401, 403):
            return TokenRefused(f"the access token was refused (HTTP {status}: {error_details(body)})")
        if status == 429 or status >= 500:
            return None
        return RequestRejected(f"Sell rejected the request (HTTP {status}: {error_details(body)})")

    def get_retrying(self, *, url: str, params: dict, parse: Callable[[bytes], T | None], what: str) -> T:
        """GET `url` until `parse` makes something of a 200's body, retrying what is worth it.

        1. Wait for a turn of the shared rate limit (every attempt counts, retries too).
        2. GET within the deadline; a transport error or a 429/5xx is retried after a backoff
           (or the server's Retry-After); a 200 that `parse` refuses (None) is retried too.
        3. Any other answer raises `status_error`'s exception at once.
        4. After `max_retries` retries, Unreachable says what went wrong last."""
        if not self.token:
            raise NoToken("no access token: set SELL_ACCESS_TOKEN to a Sell personal access token")
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            self.limiter.turn_wait()
            try:
                status, headers, body = self.response_get(url=url, params=params)
            except CONFIGURATION_ERRORS as exc:
                raise BadConfiguration(
                    f"the Sell API URL cannot be requested ({type(exc).__name__}: {str(exc)[:200]}); "
                    "check SELL_API_URL and SELL_ACCESS_TOKEN"
                ) from None
            except TRANSPORT_ERRORS as exc:
                last_problem = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                if status == 200:
                    result = parse(body)
                    if result is not None:
                        return result
                    last_problem = f"HTTP 200 with a body that is not {what}"
                else:
                    error = self.status_error(status, body)
                    if error is not None:
                        raise error
                    last_problem = f"HTTP {status}: {error_details(body)}"
                    wait = retry_after_seconds(headers.get("Retry-After"))
            if attempt == self.max_retries:
                break
            delay = wait if wait is not None else self.backoff_delay(attempt=attempt)
            if self.on_retry:
                self.on_retry(last_problem, delay)
            self.sleep(delay)
        raise Unreachable(f"the Sell API stayed unreachable after {self.max_retries} retries ({last_problem})")

    def response_get(self, *, url: str, params: dict) -> tuple[int, requests.structures.CaseInsensitiveDict, bytes]:
        """Status, headers and whole body of one GET, within `timeout` seconds in all.

        The body is streamed: each read returns what has arrived (read1), and before each the
        socket's time-out is set to the time left, so a dripping server ends at the deadline."""
        deadline = time.monotonic() + self.timeout
        response = self.session.get(url, params=params, timeout=self.timeout, stream=True)
        try:
            raw = response.raw
            read = getattr(raw, "read1", raw.read)  # urllib3 2: read1 returns what has arrived
            chunks = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise requests.Timeout(f"no whole answer within SELL_TIMEOUT ({self.timeout:g} s)")
                sock = getattr(raw.connection, "sock", None)  # None once the body is all read
                if sock is not None:
                    sock.settimeout(left)
                try:
                    chunk = read(READ_CHUNK, decode_content=True)
                except (urllib3.exceptions.ReadTimeoutError, TimeoutError):  # the socket's time-out was the time left
                    raise requests.Timeout(f"no whole answer within SELL_TIMEOUT ({self.timeout:g} s)") from None
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            response.close()
        return response.status_code, response.headers, b"".join(chunks)

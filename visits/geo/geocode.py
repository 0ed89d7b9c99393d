"""Customers' addresses to points: geopy's Nominatim against GEOCODER_URL, one request at most
every GEOCODER_MIN_DELAY seconds, each answer cached per normalised address (GeocodeCache) and
copied to every customer at that address. Run by a background task, never by ingestion."""

from __future__ import annotations

import hashlib
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from geopy.adapters import RequestsAdapter
from geopy.exc import GeocoderRateLimited, GeocoderTimedOut, GeopyError
from geopy.geocoders import Nominatim
from requests import RequestException

from visits.models import Customer, GeocodeCache, GeocodeStatus

# An error is tried again after 10 minutes, then 20, 40 ... at most a day apart; "no result" after
# 30 days (an address corrected in Sell gets a new key, and so a new request, at once).
ERROR_RETRY_FIRST = timedelta(minutes=10)
ERROR_RETRY_CAP = timedelta(days=1)
NOT_FOUND_RETRY = timedelta(days=30)
# Longer than any real address; such a text is recorded as no result without being sent.
MAX_QUERY_CHARS = 2000
ERROR_CHARS = 500

_EDGE_PUNCTUATION = " ,.;:-/\\|"  # separators only: brackets and quotes may be part of the text
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")
_COMMA = re.compile(r"\s*,[\s,]*")


def address_normalise(text: str) -> str:
    """The form addresses are compared, cached and sent in: Unicode NFKC, case-folded, control
    characters as spaces, runs of whitespace as one space, ", " between parts (no space before a
    comma, no empty parts), and no punctuation or space at either end. Nothing else is removed:
    markup or a formula stays text, sent as a query parameter and never interpreted."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = _SPACE.sub(" ", _CONTROL.sub(" ", text))
    text = _COMMA.sub(", ", text)
    return text.strip(_EDGE_PUNCTUATION)


def address_key(text: str) -> str:
    """sha256 (hex) of the normalised address; "" for an address that normalises to nothing."""
    normal = address_normalise(text)
    return hashlib.sha256(normal.encode("utf-8", "surrogatepass")).hexdigest() if normal else ""


GEOCODE_FIELDS = (
    "geocode_status", "geocoded_latitude", "geocoded_longitude", "geocode_precision", "geocode_error",
    "geocode_attempts", "geocode_next_at", "geocoded_at",
)  # fmt: skip


# What an address's geocode is, reset when the address changes (customer_address_set).
GEOCODE_RESET = {
    "geocode_status": GeocodeStatus.PENDING,
    "geocoded_latitude": None,
    "geocoded_longitude": None,
    "geocode_precision": "",
    "geocode_error": "",
    "geocode_attempts": 0,
    "geocode_next_at": None,
    "geocoded_at": None,
}


def customer_address_set(customer: Customer, address: str) -> bool:
    """Give `customer` this address (not saved). When its key changes, the geocode of the old
    address is discarded (GEOCODE_RESET: status pending, no point, no error, no attempts), so the
    next geocode_pending asks about the new one. Returns whether the key changed; the caller
    discards the other locations derived from the old address and saves."""
    customer.address = address or ""
    key = address_key(customer.address)
    if key == customer.address_key:
        return False
    customer.address_key = key
    for name, value in GEOCODE_RESET.items():
        setattr(customer, name, value)
    return True


@dataclass
class GeocodeRun:
    """What one geocode_pending did, by address (customers at one address count once)."""

    asked: int = 0  # requests sent to the service
    found: int = 0
    not_found: int = 0
    errors: int = 0
    from_cache: int = 0  # addresses answered by GeocodeCache without a request
    skipped: int = 0  # customers left as they were because geocoding is off
    customers: int = 0  # customers whose geocode fields were written
    off: bool = False
    stopped_early: bool = False  # the limit or the time ran out with addresses still due

    def summary(self) -> str:
        if self.off:
            return f"geocoding is off (GEOCODER_URL is empty): {self.skipped} customers not geocoded"
        text = (
            f"{self.asked} addresses asked, {self.from_cache} from the cache: {self.found} found, "
            f"{self.not_found} without a result, {self.errors} errors; {self.customers} customers updated"
        )
        return text + ("; more are due next run" if self.stopped_early else "")


@dataclass(frozen=True)
class _Answer:
    status: str
    latitude: float | None = None
    longitude: float | None = None
    precision: str = ""
    error: str = ""


_T = TypeVar("_T")


class _Pacer:
    """At least `delay` seconds from the end of one request to the start of the next, in this
    process (threads take turns). Other processes are not counted: run one worker's schedule."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_end = float("-inf")

    def run(self, call: Callable[[], _T], *, delay: float, sleep: Callable[[float], None]) -> _T:
        with self._lock:
            wait = self._last_end + delay - time.monotonic()
            if wait > 0:
                sleep(wait)
            try:
                return call()
            finally:
                self._last_end = time.monotonic()


_PACER = _Pacer()


def geocoder_make() -> Nominatim | None:
    """geopy's Nominatim for GEOCODER_URL, or None when geocoding is off."""
    url = settings.GEOCODER_URL
    if not url:
        return None
    scheme, _, rest = url.partition("://")
    return Nominatim(
        user_agent=settings.GEOCODER_USER_AGENT,
        timeout=settings.GEOCODER_TIMEOUT,
        domain=rest,
        scheme=scheme,
        # No retries inside requests: each would be a request the pace does not see. A failure is
        # recorded and tried again later, with backoff.
        adapter_factory=lambda proxies, ssl_context: RequestsAdapter(
            proxies=proxies, ssl_context=ssl_context, max_retries=0
        ),
    )


def _ask(geocoder: Nominatim, query: str, *, sleep: Callable[[float], None]) -> _Answer:
    """One request; every failure becomes an error answer with a sentence, never an exception."""
    if len(query) > MAX_QUERY_CHARS:
        return _Answer(
            GeocodeStatus.NOT_FOUND, error=f"The address is longer than {MAX_QUERY_CHARS:,} characters; not sent."
        )
    try:
        location = _PACER.run(
            lambda: geocoder.geocode(query, exactly_one=True), delay=settings.GEOCODER_MIN_DELAY, sleep=sleep
        )
        if location is None:
            return _Answer(GeocodeStatus.NOT_FOUND)
        # From the place itself: geopy makes a place without coordinates a Point at (0, 0).
        raw = location.raw
        if not isinstance(raw, dict) or raw.get("lat") in (None, "") or raw.get("lon") in (None, ""):
            return _Answer(GeocodeStatus.NOT_FOUND, error="The geocoder's answer had no coordinates.")
        latitude, longitude = float(raw["lat"]), float(raw["lon"])
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError(f"coordinates out of range: {latitude}, {longitude}")
        return _Answer(GeocodeStatus.FOUND, latitude, longitude, _precision(raw))
    except GeocoderTimedOut as exc:  # geopy maps HTTP 503 and 504 here too
        if "status code" in str(exc):
            error = f"The geocoder is unavailable: {exc}"
        else:
            error = f"The geocoder did not answer within {settings.GEOCODER_TIMEOUT:g} s."
    except GeocoderRateLimited:
        error = "The geocoder refused the request as too frequent (429); raise GEOCODER_MIN_DELAY if it persists."
    except GeopyError as exc:  # 4xx, 5xx, connection refused, a body that is not JSON
        error = f"The geocoder failed: {type(exc).__name__}: {exc}"
    except (OSError, RequestException) as exc:  # what geopy's adapter does not wrap
        error = f"The geocoder could not be reached: {type(exc).__name__}: {exc}"
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSON, but not places with coordinates
        error = f"The geocoder's answer was not understood: {exc}"
    return _Answer(GeocodeStatus.ERROR, error=" ".join(error.split())[:ERROR_CHARS])


def _precision(raw: object) -> str:
    """Nominatim's class/type (addresstype when given) and importance, as short text."""
    if not isinstance(raw, dict):
        return ""
    kind = "/".join(str(raw[k]) for k in ("class", "type") if raw.get(k)) or str(raw.get("addresstype") or "")
    importance = raw.get("importance")
    if isinstance(importance, (int, float, str)):
        try:
            kind += f" (importance {float(importance):.2f})"
        except ValueError:
            pass
    return kind[:100]


def _cache_store(key: str, query: str, answer: _Answer, *, now: datetime) -> GeocodeCache:
    cached = GeocodeCache.objects.filter(address_key=key).first()
    attempts = 1 if cached is None or cached.status == GeocodeStatus.FOUND else cached.attempts + 1
    if answer.status == GeocodeStatus.ERROR:
        retry = min(ERROR_RETRY_FIRST * 2 ** min(attempts - 1, 20), ERROR_RETRY_CAP)
        next_at: datetime | None = now + retry
    elif answer.status == GeocodeStatus.NOT_FOUND:
        next_at = now + NOT_FOUND_RETRY
    else:
        next_at = None  # and attempts says how many it took
    values = {
        "query": query, "status": answer.status, "latitude": answer.latitude, "longitude": answer.longitude,
        "precision": answer.precision, "error": answer.error, "attempts": attempts, "next_attempt_at": next_at,
        "fetched_at": now,
    }  # fmt: skip
    cached, _ = GeocodeCache.objects.update_or_create(address_key=key, defaults=values)
    return cached


def _customers_write(ids: list[int], cached: GeocodeCache) -> int:
    # Only those still at that address: one whose address changed meanwhile waits for its own.
    return Customer.objects.filter(pk__in=ids, address_key=cached.address_key).update(
        geocode_status=cached.status,
        geocoded_latitude=cached.latitude,
        geocoded_longitude=cached.longitude,
        geocode_precision=cached.precision,
        geocode_error=cached.error,
        geocode_attempts=cached.attempts,
        geocode_next_at=cached.next_attempt_at,
        geocoded_at=cached.fetched_at,
    )


def customers_due(*, now: datetime) -> Q:
    """Customers with an address whose geocode is to be made: never made (pending, or off while
    geocoding was off), or an error or no result whose retry time has come."""
    retry = Q(geocode_status__in=[GeocodeStatus.ERROR, GeocodeStatus.NOT_FOUND]) & (
        Q(geocode_next_at__isnull=True) | Q(geocode_next_at__lte=now)
    )
    return ~Q(address="") & (Q(geocode_status__in=[GeocodeStatus.PENDING, GeocodeStatus.OFF]) | retry)


def geocode_pending(
    *,
    limit: int | None = None,
    seconds: float | None = None,
    progress: Callable[[GeocodeRun], None] | None = None,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> GeocodeRun:
    """Geocode every customer that is due (customers_due), address by address:

    1. Due customers are grouped by address_key (a missing key is computed and saved).
    2. For each address: a cached answer that is found, or not yet due for a retry, is copied
       to its customers without a request.
    3. Otherwise the service is asked (paced, see _Pacer), the answer (found, no result, or an
       error with its sentence and the next try, backing off) replaces the cache row, and is
       copied to the customers.
    4. `limit` bounds the requests and `seconds` the time; what is left stays due for the next run.

    With GEOCODER_URL empty nothing is asked: the due customers are marked off (and are due
    again once it is set). Never raises for the service's failures."""
    now = now or timezone.now()
    run = GeocodeRun()
    geocoder = geocoder_make()
    due = Customer.objects.filter(customers_due(now=now))
    if geocoder is None:
        run.off = True
        run.skipped = due.count()
        due.exclude(geocode_status=GeocodeStatus.OFF).update(geocode_status=GeocodeStatus.OFF)
        return run
    started = time.monotonic()
    by_key: dict[str, tuple[str, list[int]]] = {}
    for pk, address, key in due.order_by("pk").values_list("pk", "address", "address_key"):
        if not key:
            key = address_key(address)
            if not key:
                continue  # only spaces and punctuation: nothing to ask about
            Customer.objects.filter(pk=pk).update(address_key=key)
        by_key.setdefault(key, (address_normalise(address), []))[1].append(pk)
    cache = {c.address_key: c for c in GeocodeCache.objects.filter(address_key__in=list(by_key))}
    for key, (query, ids) in by_key.items():
        cached = cache.get(key)
        fresh = cached is not None and (
            cached.status == GeocodeStatus.FOUND
            or (cached.next_attempt_at is not None and cached.next_attempt_at > now)
        )
        if fresh:
            run.from_cache += 1
        else:
            if (limit is not None and run.asked >= limit) or (
                seconds is not None and time.monotonic() - started >= seconds
            ):
                run.stopped_early = True
                break
            run.asked += 1
            cached = _cache_store(key, query, _ask(geocoder, query, sleep=sleep), now=now)
            run.found += cached.status == GeocodeStatus.FOUND
            run.not_found += cached.status == GeocodeStatus.NOT_FOUND
            run.errors += cached.status == GeocodeStatus.ERROR
        assert cached is not None
        run.customers += _customers_write(ids, cached)
        if progress is not None:
            progress(run)
    return run

"""The demo's stand-in for Sell's Core API v2 (`/v2/users`, `/v2/visit_outcomes`, `/v2/visits`),
served by the demo Firehose's server (same port, same token) from `DemoData.core_*`.

Lists have v2's envelope, `page`/`per_page` (25 by default, at most 100), filters and sorts,
`.000Z` times and the 100-page cap (past it: empty pages or an error, a knob); `CoreFaults` adds
403s per feature, 429s, 5xx, a stale listing of deleted visits and malformed items.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from urllib.parse import urlencode

from visits.demo.generator import DemoData

MAX_PAGES = 100
DEFAULT_PER_PAGE, MAX_PER_PAGE = 25, 100
FEATURES = {"/v2/users": "users", "/v2/visit_outcomes": "outcomes", "/v2/visits": "visits"}
PAST_CAP = ("empty", "error")
VISIT_FILTERS = ("creator_id", "outcome_id", "resource_type", "resource_id", "rep_location_verification_status")
INTEGER_FILTERS = ("creator_id", "outcome_id", "resource_id")
FORBIDDEN_DETAILS = "Your account's plan does not include access to this resource."


@dataclass
class CoreFaults:
    """How the Core API misbehaves: probabilities per request (0..1) and switches, all off by default.

    `forbidden` names the features (users, outcomes, visits) that answer 403, as on a lower plan.
    `past_cap` is what a page past 100 gets: "empty" (no items) or "error" (a 422).
    `lists_deleted`: a stale listing that still has the visits the Firehose deleted.
    `malformed`: /v2/visits also lists items a client must reject (see MALFORMED_ITEMS)."""

    forbidden: frozenset[str] = frozenset()
    server_errors: float = 0.0
    rate_limit: float = 0.0
    drop_connection: float = 0.0  # the connection closes with no answer
    past_cap: str = "empty"
    lists_deleted: bool = False
    malformed: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.forbidden = frozenset(self.forbidden)
        unknown = self.forbidden - set(FEATURES.values())
        if unknown:
            raise ValueError(f"unknown Core API features {sorted(unknown)}: choose from users, outcomes, visits")
        for name in ("server_errors", "rate_limit", "drop_connection"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, not {value}")
        if self.past_cap not in PAST_CAP:
            raise ValueError(f"past_cap must be one of {', '.join(PAST_CAP)}, not {self.past_cap!r}")

    def active(self) -> dict[str, object]:
        """The knobs that are on, for printing."""
        knobs: dict[str, object] = {}
        if self.forbidden:
            knobs["core_forbidden"] = ",".join(sorted(self.forbidden))
        for name in ("server_errors", "rate_limit", "drop_connection", "lists_deleted", "malformed"):
            if getattr(self, name):
                knobs[f"core_{name}"] = getattr(self, name)
        if self.past_cap != "empty":
            knobs["core_past_cap"] = self.past_cap
        return knobs


class ApiError(Exception):
    """An answer in Sell's error envelope, from the Firehose's routes or the Core API's."""

    def __init__(
        self, status: int, code: str, message: str, details: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(details)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}


def _malformed_items(creator_id: int) -> list[object]:
    """Items a client must keep as rejects; the dict ones match a creator_id filter of `creator_id`."""
    return [
        "visit at Joe's Diner",
        {"data": "visit 42", "meta": {"type": "visit"}},
        {"data": {"id": "abc", "creator_id": creator_id}, "meta": {"type": "visit"}},
        {"data": {"creator_id": creator_id, "summary": "no id"}, "meta": {"type": "visit"}},
        {"data": {"id": True, "creator_id": creator_id}, "meta": {"type": "visit"}},
    ]


@dataclass
class _Listing:
    """The visits as served, in both orders, each item's JSON encoded once."""

    version: tuple
    by_id: list[tuple[dict, bytes]] = field(default_factory=list)
    by_visited_at: list[tuple[dict, bytes]] = field(default_factory=list)
    malformed: list[tuple[object, bytes]] = field(default_factory=list)


class CoreApi:
    def __init__(self, data: DemoData, *, faults: CoreFaults | None = None) -> None:
        self.data = data
        self._lock = threading.Lock()
        self._listing: _Listing | None = None
        self.faults = faults or CoreFaults()

    @property
    def faults(self) -> CoreFaults:
        return self._faults

    @faults.setter
    def faults(self, faults: CoreFaults) -> None:
        with self._lock:
            self._faults = faults
            self._rng = random.Random(faults.seed)

    def reply(self, path: str, query: dict[str, str], *, base: str) -> bytes | None:
        """The body of a 200 for an authorised request, None to drop the connection; Sell's errors
        are raised as ApiError."""
        feature = FEATURES.get(path)
        if feature is None:
            raise ApiError(404, "incorrect_path", "Incorrect path", f"The requested path {path} does not exist.")
        with self._lock:
            faults, rng = self._faults, self._rng
            failure = rng.choice((500, 503)) if chance(rng, faults.server_errors) else None
            limited = chance(rng, faults.rate_limit)
            drop = chance(rng, faults.drop_connection)
        if drop:
            return None
        if failure == 500:
            raise ApiError(500, "server_error", "Internal server error", "Something went wrong on our side.")
        if failure == 503:
            raise ApiError(
                503, "temporarily_unavailable", "Service temporarily unavailable",
                "The service is temporarily unavailable, try again later.",
            )  # fmt: skip
        if limited:
            raise ApiError(
                429, "rate_limit_exceeded", "Rate limit exceeded",
                "Too many requests for this token (36,000 per hour, 10 per second).",
            )  # fmt: skip
        if feature in faults.forbidden:
            raise ApiError(403, "forbidden", "Forbidden", FORBIDDEN_DETAILS)
        page, per_page = _paging(query)
        if feature == "visits":
            entries = self._visits_select(query, faults=faults)
        elif feature == "users":
            entries = _users_select(self.data.core_users(), query)
        else:
            entries = _outcomes_select(self.data.core_outcomes(), query)
        if page > MAX_PAGES:
            if faults.past_cap == "error":
                raise ApiError(
                    422, "invalid_param", "Invalid parameter page", f"A list reaches at most {MAX_PAGES} pages."
                )
            entries = []
        start = (page - 1) * per_page
        items = [encoded for _, encoded in entries[start : start + per_page]]
        more = page < MAX_PAGES and start + per_page < len(entries)
        links = {"self": f"{base}{path}?{urlencode(query)}"}
        if more:
            links["next_page"] = f"{base}{path}?{urlencode({**query, 'page': page + 1})}"
        meta = json.dumps({"type": "collection", "count": len(items), "links": links}, separators=(",", ":"))
        return b'{"items":[' + b",".join(items) + b'],"meta":' + meta.encode() + b"}"

    def _visits_select(self, query: dict[str, str], *, faults: CoreFaults) -> list[tuple[object, bytes]]:
        filters = {name: query[name] for name in VISIT_FILTERS if name in query}
        if "resource_id" in filters and "resource_type" not in filters:
            raise invalid_param("resource_id", "resource_id needs resource_type.")
        for name in INTEGER_FILTERS:
            if name in filters:
                filters[name] = _integer(name, filters[name])
        sort_key, descending = _sort_parse(query.get("sort_by", "id"), ("id", "visited_at"))
        listing = self._listing_get(faults)
        ordered = listing.by_id if sort_key == "id" else listing.by_visited_at
        chosen = [entry for entry in ordered if all(entry[0].get(k) == v for k, v in filters.items())]
        if descending:
            chosen.reverse()
        for raw, encoded in listing.malformed:  # at the end, whatever the order
            data = raw.get("data") if isinstance(raw, dict) else None
            if not filters or (isinstance(data, dict) and all(data.get(k) == v for k, v in filters.items())):
                chosen.append((raw, encoded))
        return chosen

    def _listing_get(self, faults: CoreFaults) -> _Listing:
        version = (self.data.core_version(), faults.lists_deleted, faults.malformed)
        with self._lock:
            if self._listing is not None and self._listing.version == version:
                return self._listing
        visits = self.data.core_visits()
        if faults.lists_deleted:
            visits.update(self.data.core_deleted_visits())
        encoded = [(data, _item_encode(data, "visit")) for data in visits.values()]
        listing = _Listing(version=version)
        listing.by_id = sorted(encoded, key=lambda entry: entry[0]["id"])
        listing.by_visited_at = sorted(encoded, key=lambda entry: (entry[0]["visited_at"], entry[0]["id"]))
        if faults.malformed:
            creator = min(data["creator_id"] for data in visits.values()) if visits else 0
            listing.malformed = [(raw, _json(raw)) for raw in _malformed_items(creator)]
        with self._lock:
            self._listing = listing
        return listing


def _users_select(users: dict[int, dict], query: dict[str, str]) -> list[tuple[object, bytes]]:
    chosen = list(users.values())
    if "ids" in query:
        ids = {_integer("ids", part) for part in query["ids"].split(",") if part.strip()}
        chosen = [user for user in chosen if user["id"] in ids]
    for name in ("status", "role", "name", "email"):
        if name in query:
            chosen = [user for user in chosen if user.get(name) == query[name]]
    sort_key, descending = _sort_parse(query.get("sort_by", "id"), ("id", "name"))
    chosen.sort(key=lambda user: (user[sort_key], user["id"]), reverse=descending)
    return [(user, _item_encode(user, "user")) for user in chosen]


def _outcomes_select(outcomes: dict[int, str], query: dict[str, str]) -> list[tuple[object, bytes]]:
    _sort_parse(query.get("sort_by", "id"), ("id",))
    stamp = "2024-03-01T09:00:00.000Z"
    return [
        (
            {"id": oid},
            _item_encode({"id": oid, "name": name, "created_at": stamp, "updated_at": stamp}, "visit_outcome"),
        )
        for oid, name in sorted(outcomes.items())
    ]


def _item_encode(data: dict, kind: str) -> bytes:
    return _json({"data": data, "meta": {"type": kind}})


def _json(value: object) -> bytes:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: JSON can carry it only as a \u escape
        return json.dumps(value, separators=(",", ":")).encode()


def _paging(query: dict[str, str]) -> tuple[int, int]:
    page = _integer("page", query.get("page", "1"))
    per_page = _integer("per_page", query.get("per_page", str(DEFAULT_PER_PAGE)))
    if page < 1:
        raise invalid_param("page", "page must be a whole number from 1.")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise invalid_param("per_page", f"per_page must be a whole number from 1 to {MAX_PER_PAGE}.")
    return page, per_page


def _sort_parse(raw: str, keys: tuple[str, ...]) -> tuple[str, bool]:
    key, _, direction = raw.partition(":")
    if key not in keys or direction not in ("", "asc", "desc"):
        choices = ", ".join(keys)
        raise invalid_param("sort_by", f"sort_by must be one of {choices}, with :asc or :desc if you like.")
    return key, direction == "desc"


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise invalid_param(name, f"{name} must be a whole number.") from None


def invalid_param(param: str, details: str) -> ApiError:
    return ApiError(400, "invalid_param", f"Invalid parameter {param}", details)


def chance(rng: random.Random, probability: float) -> bool:
    """Whether a fault of this probability strikes this request (never at 0)."""
    return probability > 0 and rng.random() < probability

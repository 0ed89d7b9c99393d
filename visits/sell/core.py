"""HTTP client for Sell's Core API v2 (users, visit outcomes, visits): lists read page by page
through http.py's retry loop and shared rate limit, with Sell's 100-page cap made visible.

A 403 is FeatureUnavailable (the account's plan has no such data), not a refused token. Items
that are not `{"data": {"id": <int>, ...}}` come back as CoreRejects beside the good ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from visits.sell import events
from visits.sell.http import (  # noqa: F401  callers name the errors here too
    FeatureUnavailable,
    NoToken,
    RequestRejected,
    SellClient,
    SellError,
    TokenRefused,
    Unreachable,
    error_details,
)

MAX_PAGES = 100  # Sell answers nothing past page 100 of a list
MAX_PER_PAGE = 100
# Path -> the feature a 403 takes away, as CoreApiState.feature names it.
USERS_PATH, OUTCOMES_PATH, VISITS_PATH = "/v2/users", "/v2/visit_outcomes", "/v2/visits"
FEATURES = {USERS_PATH: "users", OUTCOMES_PATH: "outcomes", VISITS_PATH: "visits"}


@dataclass(frozen=True)
class CoreReject:
    """An item of a list that is not a usable object: kept for a RejectedItem, never raised."""

    raw: object  # the item as it came (any JSON value)
    reason: str
    item_id: int | None = None  # when the item had a usable id despite the damage


@dataclass(frozen=True)
class CorePage:
    items: list[dict]  # each good item's `data`, in the page's order
    next_page: bool  # Sell gave a next_page link
    raw_items: list  # the page's `items` as they came
    rejects: list[CoreReject] = field(default_factory=list)


def item_check(raw: object) -> dict | CoreReject:
    """The item's `data` when it has an integer id, else why not."""
    if not isinstance(raw, dict):
        return CoreReject(raw, f"the item is a {type(raw).__name__}, not an object")
    data = raw.get("data")
    if not isinstance(data, dict):
        return CoreReject(raw, "the item has no data object")
    item_id = data.get("id")
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        return CoreReject(raw, "the item's data has no integer id")
    if not 0 < item_id < 2**63:
        return CoreReject(raw, f"the item's id {item_id} is out of range")
    return data


def page_parse(body: bytes) -> CorePage | None:
    """A list page, or None when the body is not one (then it is retried like a 5xx)."""
    try:
        document = json.loads(body)
        items = document["items"]
        links = document["meta"].get("links") or {}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    if not isinstance(items, list) or not isinstance(links, dict):
        return None
    good: list[dict] = []
    rejects: list[CoreReject] = []
    for raw in items:
        checked = item_check(raw)
        (rejects if isinstance(checked, CoreReject) else good).append(checked)  # type: ignore[arg-type]
    return CorePage(items=good, next_page=bool(links.get("next_page")), raw_items=items, rejects=rejects)


class CoreListing:
    """The pages of one list query, fetched as they are iterated, from page 1 until a page has no
    next_page link, comes back empty, or is page 100. Afterwards `capped` says whether page 100
    was reached full (Sell may hold more than it will list: split the query), `pages` how many
    were read."""

    def __init__(self, client: CoreClient, *, path: str, params: dict, per_page: int = MAX_PER_PAGE) -> None:
        self.client, self.path, self.params, self.per_page = client, path, dict(params), per_page
        self.capped = False
        self.pages = 0

    def __iter__(self) -> Iterator[CorePage]:
        for number in range(1, MAX_PAGES + 1):
            page = self.client.list_page(self.path, self.params, page=number, per_page=self.per_page)
            self.pages = number
            if page.raw_items:
                yield page
            if number == MAX_PAGES:  # Sell gives no next_page here even when it holds more
                self.capped = len(page.raw_items) >= self.per_page
                return
            if not page.raw_items or not page.next_page:
                return

    def items(self) -> Iterator[dict]:
        """Only the good items' data, across pages (the rejects are dropped: use the pages to keep them)."""
        for page in self:
            yield from page.items


class CoreClient(SellClient):
    """One client per run, with the Firehose's token, headers, deadline, retries and rate limit."""

    def status_error(self, status: int, body: bytes) -> SellError | None:
        if status == 403:
            return FeatureUnavailable(f"HTTP 403: {error_details(body)}")
        return super().status_error(status, body)

    def list_page(self, path: str, params: dict, *, page: int, per_page: int = MAX_PER_PAGE) -> CorePage:
        """One page of a list; `path` like "/v2/visits". A 403 raises FeatureUnavailable with the
        sentence for the feature (users, outcomes or visits)."""
        if not 1 <= per_page <= MAX_PER_PAGE or not 1 <= page <= MAX_PAGES:
            raise ValueError(
                f"page must be 1 to {MAX_PAGES} and per_page 1 to {MAX_PER_PAGE}, not {page} and {per_page}"
            )
        url = f"{self.base_url}{path}"
        query = {**params, "page": page, "per_page": per_page}
        try:
            return self.get_retrying(url=url, params=query, parse=page_parse, what="a Core API list page")
        except FeatureUnavailable as exc:
            feature = FEATURES.get(path, path)
            raise FeatureUnavailable(f"this account's plan has no Core API {feature} ({exc})") from None

    def users_all(self, **filters: str) -> CoreListing:
        """Every user (filters: ids, status, role, ...), by id."""
        return CoreListing(self, path="/v2/users", params={**filters, "sort_by": "id"})

    def outcomes_all(self) -> CoreListing:
        return CoreListing(self, path="/v2/visit_outcomes", params={})

    def visits_iter(self, params: dict, *, sort_by: str = "id", per_page: int = MAX_PER_PAGE) -> CoreListing:
        """Visits matching `params` (creator_id, outcome_id, resource_type, resource_id,
        rep_location_verification_status) in `sort_by` order ("id", "visited_at", ":desc" suffix)."""
        return CoreListing(self, path=VISITS_PATH, params={**params, "sort_by": sort_by}, per_page=per_page)


# --- Parsing: a user's or an outcome's data -> plain fields, or events.Rejected -----------


def user_parse(data: dict) -> dict:
    """A /v2/users item's data as Rep's columns (text bounded, ids checked); raises
    events.Rejected with the reason. Every string is hostile and stays plain text."""
    group = data.get("group")
    if group is not None and not isinstance(group, dict):
        raise events.Rejected(f"group is not an object: {group!r:.60}")
    group = group or {}
    return {
        "id": events.clean_id(data.get("id"), name="id"),
        "name": events.clean_text(data.get("name"), name="name", max_length=255),
        "email": events.clean_text(data.get("email"), name="email", max_length=255),
        # A deleted user, as the Firehose's `deleted` event says it; Sell keeps its visits.
        "status": "deleted"
        if data.get("deleted_at")
        else events.clean_text(data.get("status"), name="status", max_length=40),
        "role": events.clean_text(data.get("role"), name="role", max_length=40),
        "team_name": events.clean_text(data.get("team_name"), name="team_name", max_length=255),
        "group_id": events.clean_id(group.get("id"), name="group.id", nullable=True),
        "group_name": events.clean_text(group.get("name"), name="group.name", max_length=255),
        "reports_to": events.clean_id(data.get("reports_to"), name="reports_to", nullable=True),
        "timezone": events.clean_text(data.get("timezone"), name="timezone", max_length=64),
    }


def outcome_parse(data: dict) -> tuple[int, str]:
    return (
        events.clean_id(data.get("id"), name="id"),
        events.clean_text(data.get("name"), name="name", max_length=255),
    )

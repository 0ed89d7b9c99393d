"""HTTP client for the Zendesk Sell Firehose: fetches one stream page through http.py's retry
loop (429, 5xx, time-outs, dropped or truncated connections; the shared rate limit), and turns
a 410 into PositionExpired, every other refusal into an exception that says what went wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from visits.sell.http import (  # noqa: F401  the errors are the Firehose's too: callers name them here
    BadConfiguration,
    NoToken,
    PositionExpired,
    RequestRejected,
    SellClient,
    SellError,
    TokenRefused,
    Unreachable,
    error_details,
)


@dataclass(frozen=True)
class Page:
    items: list
    position: str
    top: bool


class FirehoseClient(SellClient):
    """One client per sync run; it keeps the connection open between pages."""

    def status_error(self, status: int, body: bytes) -> SellError | None:
        if status == 410:
            return PositionExpired(
                f"the stored position has expired (HTTP 410: {error_details(body)}); Sell keeps events for 72 hours"
            )
        return super().status_error(status, body)

    def page_fetch(self, *, stream: str, position: str, limit: int) -> Page:
        url = f"{self.base_url}/v3/{stream}/stream"
        params = {"position": position, "limit": limit}
        return self.get_retrying(url=url, params=params, parse=self.page_parse, what="a Firehose page")

    @staticmethod
    def page_parse(body: bytes) -> Page | None:
        try:
            data = json.loads(body)
            items = data["items"]
            meta = data["meta"]
            position = meta["position"]
            top = meta["top"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        if not isinstance(items, list) or not isinstance(position, str) or not position or not isinstance(top, bool):
            return None
        return Page(items=items, position=position, top=top)

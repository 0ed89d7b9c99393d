"""The Content-Security-Policy sent with every response: scripts, styles and everything else from
this site only, no inline script or style, no framing. Map documents (the iframes) add the hashes
of folium's inline code, the tile server's host for images, and run sandboxed.

A second wall behind escaping: should text from Sell ever reach a page as markup, the browser
still refuses to run it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from visits.reports.maps import MapDocument

# The map frames may run their scripts and send the user to a visit's page on a click, nothing
# more: no same-origin, so a script in them could not read the page around them, its cookies or
# its forms. The iframes carry the same list as their sandbox attribute (templates/visits/).
MAP_SANDBOX = "allow-scripts allow-top-navigation-by-user-activation"

BASE_POLICY: dict[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'", "data:"),
    "font-src": ("'self'",),
    "connect-src": ("'self'",),
    "frame-src": ("'self'",),
    "object-src": ("'none'",),
    "base-uri": ("'none'",),
    "form-action": ("'self'",),
    "frame-ancestors": ("'none'",),
}


def tiles_source(url: str) -> str | None:
    """The CSP source that MAP_TILES_URL's images come from: None for none or this site."""
    if not url or url.startswith("/"):
        return None
    parts = urlsplit(url)
    host = parts.netloc.replace("{s}", "*")  # tile servers spread over a.-, b.-, c.-subdomains
    if "{" in host or "}" in host:
        return f"{parts.scheme}:"  # a host made of other placeholders: any host on that scheme
    return f"{parts.scheme}://{host}"


def policy_text(policy: Mapping[str, Iterable[str]]) -> str:
    return "; ".join(f"{name} {' '.join(sources)}".strip() for name, sources in policy.items())


def map_policy(*, script_hashes: Iterable[str], style_hashes: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The policy of a map document: its own inline code by hash, tiles, framed by this site only."""
    policy = dict(BASE_POLICY)
    policy["script-src"] = (*policy["script-src"], *script_hashes)
    policy["style-src"] = (*policy["style-src"], *style_hashes)
    tiles = tiles_source(settings.MAP_TILES_URL)
    if tiles:
        policy["img-src"] = (*policy["img-src"], tiles)
    policy["frame-ancestors"] = ("'self'",)
    policy["sandbox"] = tuple(MAP_SANDBOX.split())
    return policy


def map_document_response(*, document: MapDocument) -> HttpResponse:
    """A map document with its own policy (the middleware leaves a response's policy alone)."""
    response = HttpResponse(document.html)
    policy = map_policy(script_hashes=document.script_hashes, style_hashes=document.style_hashes)
    response["Content-Security-Policy"] = policy_text(policy)
    response["X-Frame-Options"] = "SAMEORIGIN"  # for browsers that know no frame-ancestors
    return response


class ContentSecurityPolicyMiddleware:
    """Adds the base policy to every response that has none of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.header = policy_text(BASE_POLICY)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.DEBUG and response.status_code in (404, 500):
            return response  # Django's debug pages style themselves inline; DEBUG is never on in production
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.header
        return response

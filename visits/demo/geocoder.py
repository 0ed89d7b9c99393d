"""A Nominatim-compatible stand-in on 127.0.0.1 for the demo and the tests: `GET /search?q=...`
answers the demo customers' true positions, matched by address_normalise, except a few
unknown addresses (no result) and a few wrong ones (a point 10-40 km away). It enforces a
minimum delay between requests (429 when a client is faster), can fail on purpose, and logs
every request for tests."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from geopy.distance import geodesic

from visits.demo.generator import DemoData
from visits.geo.geocode import address_normalise

JSON_TYPE = "application/json; charset=utf-8"
REQUEST_LOG_SIZE = 10_000


@dataclass(frozen=True)
class Place:
    latitude: float
    longitude: float
    display_name: str
    importance: float


@dataclass
class GeocoderRequest:
    query: dict[str, str]
    status: int
    at: float = field(default_factory=time.monotonic)  # when it came in


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DemoNominatim/1.0"
    timeout = 60

    def do_GET(self) -> None:
        self.server.geocoder.request_handle(self)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the request log is for tests."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    geocoder: DemoGeocoder

    def handle_error(self, request, client_address) -> None:
        """A client that gave up waiting (its timeout, with `delay` set) is normal here, not a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class DemoGeocoder:
    """Answer /search for the customers of `data`; see the module docstring.

    Knobs (attributes, changeable while serving): `min_delay` seconds between two requests
    (from the arrival of one to the next; a faster one gets 429), `error_rate` (503),
    `garbage_rate` (200 with a body that is not JSON), `delay` (seconds before every answer),
    `body` (tests: this body for every search).
    `wrong` maps the customers whose address geocodes far away to (true, answered) points;
    `unknown` holds those whose address has no result."""

    def __init__(
        self,
        data: DemoData,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        min_delay: float = 1.0,
        error_rate: float = 0.0,
        wrong_addresses: int = 3,
        unknown_addresses: int = 2,
        seed: int = 0,
    ) -> None:
        self.min_delay = min_delay
        self.error_rate = error_rate
        self.garbage_rate = 0.0
        self.delay = 0.0
        self.body: bytes | None = None  # for tests: the answer to every search, as given
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._last_at = float("-inf")
        self._requests: deque[GeocoderRequest] = deque(maxlen=REQUEST_LOG_SIZE)
        addresses = data.core_addresses()
        keys = sorted(k for k in addresses if k in data.customers)
        picks = random.Random(seed + 1).sample(keys, min(len(keys), wrong_addresses + unknown_addresses))
        self.wrong: dict[tuple[str, int], tuple[tuple[float, float], tuple[float, float]]] = {}
        self.unknown: set[tuple[str, int]] = set(picks[wrong_addresses:])
        dice = random.Random(seed + 2)
        # Customers sharing an address (the generator's dice make a few) share the first one's
        # point; a wrong address's far point wins, and an unknown address answers nothing.
        self.places: dict[str, Place] = {}
        for key in keys:
            point, normal = data.customers[key], address_normalise(addresses[key])
            importance = round(dice.uniform(0.2, 0.7), 4)
            if key in picks[:wrong_addresses]:
                far = geodesic(kilometers=dice.uniform(10, 40)).destination(point, dice.uniform(0, 360))
                self.wrong[key] = (point, (far.latitude, far.longitude))
                self.places[normal] = Place(round(far.latitude, 7), round(far.longitude, 7), addresses[key], importance)
            elif key not in self.unknown and normal not in self.places:
                self.places[normal] = Place(round(point[0], 7), round(point[1], 7), addresses[key], importance)
        for key in self.unknown:
            self.places.pop(address_normalise(addresses[key]), None)
        self._httpd = _Server((host, port), _Handler)
        self._httpd.geocoder = self
        self._serving: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DemoGeocoder:
        if self._serving is None:
            self._serving = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="demo-geocoder", daemon=True
            )
            self._serving.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        if self._serving is not None:
            self._httpd.shutdown()
            self._serving.join()
        self._httpd.server_close()

    def __enter__(self) -> DemoGeocoder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def requests(self) -> list[GeocoderRequest]:
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def request_handle(self, handler: _Handler) -> None:
        arrived = time.monotonic()
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            too_soon = arrived - self._last_at < self.min_delay
            self._last_at = arrived  # every request counts, as the public Nominatim counts them
            roll = self._rng.random()
        if self.delay:
            time.sleep(self.delay)
        if parts.path not in ("/search", "/search.php"):
            status, body = HTTPStatus.NOT_FOUND, b'{"error": "Unknown path"}'
        elif too_soon:
            status, body = HTTPStatus.TOO_MANY_REQUESTS, b'{"error": "Too many requests: at most one a second"}'
        elif roll < self.error_rate:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, b'{"error": "Service temporarily unavailable"}'
        elif roll < self.error_rate + self.garbage_rate:
            status, body = HTTPStatus.OK, b"<html>Nominatim is being updated</html>"
        elif self.body is not None:
            status, body = HTTPStatus.OK, self.body
        elif "q" not in query:
            status, body = HTTPStatus.BAD_REQUEST, b'{"error": "Nothing to search for: give q"}'
        else:
            status, body = HTTPStatus.OK, json.dumps(self._search(query), ensure_ascii=False).encode()
        with self._lock:
            self._requests.append(GeocoderRequest(query=query, status=int(status), at=arrived))
        handler.send_response(status)
        handler.send_header("Content-Type", JSON_TYPE)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _search(self, query: dict[str, str]) -> list[dict]:
        place = self.places.get(address_normalise(query["q"]))
        if place is None:
            return []
        return [
            {
                "place_id": zlib.crc32(place.display_name.encode("utf-8", "surrogatepass")),
                "lat": f"{place.latitude:.7f}",
                "lon": f"{place.longitude:.7f}",
                "display_name": place.display_name,
                "class": "building",
                "type": "yes",
                "addresstype": "building",
                "importance": place.importance,
            }
        ]

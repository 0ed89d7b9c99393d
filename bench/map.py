"""Map speed at scale: 100,000 visits on SQLite, beside the naive map (one folium marker with a
popup per visit) at 10,000 visits.

    .venv/bin/python bench/map.py            # print the figures
    .venv/bin/python bench/map.py --write    # also update docs/PERFORMANCE.md

For each: the size of the map document, the server's time to build it (median of 3), and the
time headless Chromium (Debian's, offline, no tiles) takes from navigation until the map is
usable: for visitsdash, every visit loaded into the clustered layer and the page answering a
script; for the naive map, its script run and the page answering. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import machine, section_write, visits_write  # noqa: E402 (after the path is set)

REPS, OUTCOMES, DAYS = 200, 12, 365
END = datetime(2026, 11, 1, tzinfo=UTC)
CITIES = [(41.88, -87.63), (39.77, -86.16), (43.04, -87.91), (42.33, -83.05), (38.63, -90.20)]
STATUSES = (
    ("verified",) * 82
    + ("resource_location_too_far",) * 11
    + ("location_unknown",) * 4
    + ("location_services_disabled",) * 3
)
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def visits_load(*, visits: int) -> None:
    from django.core.management import call_command

    from visits.models import Outcome, Rep

    call_command("migrate", verbosity=0)
    Rep.objects.bulk_create([Rep(id=1000 + i, name=f"Rep {i:03d}") for i in range(REPS)])
    Outcome.objects.bulk_create([Outcome(id=100 + i, name=f"Outcome {i:02d}") for i in range(OUTCOMES)])
    visits_write(visit_rows(visits=visits))


def visit_rows(*, visits: int):
    """(id, row) pairs around five Midwest cities."""
    rng = random.Random(3)
    for visit_id in range(1, visits + 1):
        at = END - timedelta(seconds=rng.randrange(DAYS * 86400))
        status = rng.choice(STATUSES)
        lat, lng = rng.choice(CITIES)
        located = status in ("verified", "resource_location_too_far")
        yield visit_id, {
            "rep_id": 1000 + rng.randrange(REPS), "resource_type": "lead", "resource_id": rng.randrange(1, 50_000),
            "visited_at": at, "created_at": at, "summary": "Met the buyer, left samples, follow up next week.",
            "outcome_id": 100 + rng.randrange(OUTCOMES),
            "latitude": lat + rng.gauss(0, 0.25) if located else None,
            "longitude": lng + rng.gauss(0, 0.3) if located else None,
            "verification_status": status, "sequence": 1, "event_time": at, "deleted_at": None,
        }  # fmt: skip


def naive_render(*, limit: int) -> str:
    """One folium marker with a popup per visit: what a first version would write (its popups
    carry only the visit's id and time here: Sell's text never goes through folium)."""
    import html

    import folium

    from visits.models import Visit
    from visits.reports import maps

    maps.assets_localize()
    m = folium.Map(tiles=None, **{"maxZoom": 19})
    points = []
    for visit in Visit.objects.filter(latitude__isnull=False).select_related("rep", "outcome")[:limit]:
        points.append([visit.latitude, visit.longitude])
        text = html.escape(f"Visit {visit.id}, {visit.visited_at:%Y-%m-%d %H:%M}")
        folium.Marker([visit.latitude, visit.longitude], popup=folium.Popup(text)).add_to(m)
    m.fit_bounds(maps.bounds_of(points))
    return m.get_root().render()


def timed(render, repeat: int = 3) -> tuple[str, float]:
    times, html = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        html = render()
        times.append(time.perf_counter() - started)
    return html, statistics.median(times)


def chromium_seconds(url: str, *, ready: str, cookies: list[dict] | None = None) -> float:
    """Navigation to usable, in headless Chromium; fails if the page asks any other host."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        if cookies:
            context.add_cookies(cookies)
        page = context.new_page()
        outside = []
        page.on("request", lambda r: "127.0.0.1" not in r.url and outside.append(r.url))
        started = time.perf_counter()
        page.goto(url, wait_until="load", timeout=120_000)
        page.wait_for_function(ready, timeout=120_000, polling=50)
        page.evaluate("() => 1")  # the page answers
        seconds = time.perf_counter() - started
        browser.close()
    assert not outside, outside[:3]
    return seconds


class StaticHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=10_000)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    os.environ.update(
        DATABASE_URL=f"sqlite:///{tmp}/map.sqlite3", DJANGO_SETTINGS_MODULE="visitsdash.settings",
        ALLOWED_HOSTS="testserver,127.0.0.1", MAP_TILES_URL="",
    )  # fmt: skip
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client

    from visits.models import Visit

    visits_load(visits=args.visits)
    located = Visit.objects.filter(latitude__isnull=False).count()
    user = User.objects.create_superuser("bench", password="bench")
    client = Client()
    client.force_login(user)
    html, render_seconds = timed(lambda: client.get("/map/frame/").content)
    naive_html, naive_seconds = timed(lambda: naive_render(limit=args.naive).encode(), repeat=1)

    # Chromium loads the app's map from a real server (runserver) and the naive one from a file server.
    port = 18765
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=ROOT,
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    (Path(tmp) / "naive.html").write_bytes(naive_html)
    static = ThreadingHTTPServer(("127.0.0.1", 0), partial(StaticHandler, directory=tmp))
    os.symlink(ROOT / "static", Path(tmp) / "static")
    threading.Thread(target=static.serve_forever, daemon=True).start()
    try:
        for _ in range(100):
            try:
                import urllib.request

                urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        cookie = [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": f"http://127.0.0.1:{port}"}]
        app_browser = statistics.median(
            chromium_seconds(
                f"http://127.0.0.1:{port}/map/frame/", ready="window.visitsdashLoaded === true", cookies=cookie
            )
            for _ in range(3)
        )
        naive_browser = chromium_seconds(
            f"http://127.0.0.1:{static.server_address[1]}/naive.html",
            ready="document.querySelectorAll('.leaflet-marker-icon').length > 0",
        )
    finally:
        server.terminate()
        static.shutdown()
    rows = [
        (f"visitsdash `/map/frame/`, {args.visits:,} visits ({located:,} with a location, clustered)",
         len(html), render_seconds, app_browser),
        (f"naive: a folium marker with a popup per visit, {args.naive:,} visits", len(naive_html), naive_seconds,
         naive_browser),
    ]  # fmt: skip
    for label, size, render, browser in rows:
        print(
            f"{label}\n    HTML {size / 1e6:.2f} MB   server {render * 1000:,.0f} ms   "
            f"Chromium to usable {browser:.2f} s"
        )
    if args.write:
        lines = [
            "## Maps (`bench/map.py`)",
            "",
            f"Measured {datetime.now().date().isoformat()} on {machine()}. SQLite; server time through Django's"
            " test client (median of 3; the naive map built once); Chromium: Debian's headless build, offline,"
            " no tiles, from navigation until every visit is loaded and the page answers (median of 3 for visitsdash).",
            "",
            "| map | HTML MB | server ms | Chromium to usable s |",
            "|---|---:|---:|---:|",
            *(
                f"| {label} | {size / 1e6:.2f} | {render * 1000:,.0f} | {browser:.2f} |"
                for label, size, render, browser in rows
            ),
            "",
            "Targets with 100,000 visits: HTML at most 6 MB, server render at most 1.5 s, "
            "usable in Chromium within 5 s.",
            "",
        ]
        section_write(heading="## Maps (", lines=lines)


if __name__ == "__main__":
    main()

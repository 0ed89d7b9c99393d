"""Map speed at scale: 100,000 visits on SQLite, beside the naive map (one folium marker with a
popup per visit) at 10,000 visits.

    .venv/bin/python bench/map.py            # print the figures
    .venv/bin/python bench/map.py --write    # also update docs/PERFORMANCE.md
    .venv/bin/python bench/map.py --clusters DATABASE_URL [--write]   # /map/clusters.json at scale
    .venv/bin/python bench/map.py --probe DATABASE_URL   # what the map tally's triggers cost a write
    .venv/bin/python bench/map.py --browser DATABASE_URL  # Chromium to usable and the web process's RSS

--browser serves the database given (a copy: it writes a user and a session) with `manage.py
runserver` and opens /map/ in headless Chromium (offline, no tiles), median of 3: from navigation
until the map's first clusters are drawn (the world view, every located visit counted), then a
zoom to a city and to a street (points.json), each until drawn; and the web process's peak RSS
(VmHWM) after all that.

--clusters migrates the database given (a copy of the reports bench's, 1,000,000 visits: the
migration to 0023 fills the map tally) and times `/map/clusters.json` for the world, a region,
one rep and one month: the server's time (median of 7, through Django's test client) and the bytes.
--probe writes 50,000 located visits into the (empty, migrated) database given, in pages of
5,000, with and without the map tally's triggers.

For each: the size of the map document, the server's time to build it (median of 3), and the
time headless Chromium (Debian's, offline, no tiles) takes from navigation until the map is
usable: for visitsdash, every visit loaded into the clustered layer and the page answering a
script; for the naive map, its script run and the page answering. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
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

from _report import machine, section_write, server_wait, visits_write  # noqa: E402 (after the path is set)

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


def server_cookie(*, port: int, client) -> list[dict]:
    """Wait for the runserver on `port` to answer, then the test client's session as a cookie for it."""
    server_wait(port)
    return [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": f"http://127.0.0.1:{port}"}]


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


def django_on(database_url: str) -> None:
    os.environ.update(
        DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="visitsdash.settings", ALLOWED_HOSTS="testserver,127.0.0.1",
        MAP_TILES_URL="",
    )  # fmt: skip
    import django

    django.setup()


def city(lat: float, lng: float, *, zoom: int) -> str:
    """The box of a 1,900 x 1,000 pixel view at `zoom` around a point (a degree of latitude taken as
    1.35 of longitude, as near 42 degrees north)."""
    wide = 1900 / 256 * 360 / 2**zoom
    high = 1000 / 256 * 360 / 2**zoom / 1.35
    return f"{lng - wide / 2:.4f},{lat - high / 2:.4f},{lng + wide / 2:.4f},{lat + high / 2:.4f}"


def clusters_bench(*, database_url: str, write: bool) -> None:
    """/map/clusters.json on a big database: the world (zoom 2), a region (zoom 7), one rep and one
    month (zoom 4), each from the map tally."""
    django_on(database_url)
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from visits.models import MapCellTally, Visit

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    migrate_seconds = time.perf_counter() - started
    visits, tally_rows = Visit.objects.count(), MapCellTally.objects.count()
    lat, lng = Visit.objects.filter(latitude__isnull=False).values_list("latitude", "longitude").first()
    rep_id = Visit.objects.order_by("id").values_list("rep_id", flat=True).first()
    newest = Visit.objects.order_by("-visited_at").values_list("local_day", flat=True).first()
    month_start = newest.replace(day=1)
    month_end = (month_start + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    user = User.objects.filter(username="bench-map").first() or User.objects.create_superuser("bench-map", password="-")
    client = Client()
    client.force_login(user)
    week = f"start={month_start.replace(day=3)}&end={month_start.replace(day=9)}"
    cases = [
        ("the world, zoom 2", "bbox=-180,-85,180,85&zoom=2"),
        ("one region, zoom 7", f"bbox={city(lat, lng, zoom=7)}&zoom=7"),
        ("one rep, zoom 4", f"bbox=-150,-60,150,75&zoom=4&rep={rep_id}"),
        (
            f"one month ({month_start:%Y-%m}), zoom 4",
            f"bbox=-150,-60,150,75&zoom=4&start={month_start}&end={month_end}",
        ),
        # beyond the goals: where the bench's visits are densest (all in one square degree)
        ("a city, zoom 10", f"bbox={city(lat, lng, zoom=10)}&zoom=10"),
        ("a city, zoom 12", f"bbox={city(lat, lng, zoom=12)}&zoom=12"),
        ("a city, zoom 12, one rep (from the visits)", f"bbox={city(lat, lng, zoom=12)}&zoom=12&rep={rep_id}"),
        ("one region, zoom 7, days 3-9 (from the visits)", f"bbox={city(lat, lng, zoom=7)}&zoom=7&{week}"),
    ]
    rows = []
    points = [
        ("points: a street, zoom 15", f"bbox={city(lat, lng, zoom=15)}&zoom=15"),
        ("points: a district, zoom 13 (5,000 of them)", f"bbox={city(lat, lng, zoom=13)}&zoom=13"),
    ]
    for label, query in cases + points:
        url = f"/map/{'points' if label.startswith('points') else 'clusters'}.json?{query}"
        times, body = [], b""
        for _ in range(7):
            began = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - began)
            assert response.status_code == 200, response.content[:300]
            body = response.content
        answer = json.loads(body)
        n = len(answer["clusters"] if "clusters" in answer else answer["rows"])
        rows.append((label, statistics.median(times), len(body), n, answer.get("total", n)))
    vendor = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    print(f"{vendor}: {visits:,} visits, map tally {tally_rows:,} rows; migrate (fills it) {migrate_seconds:.1f} s")
    for label, seconds, size, n, total in rows:
        print(f"  {label:48} {seconds * 1000:7.1f} ms  {size / 1000:7.1f} KB  {n:5} clusters  {total:,} visits")
    if write:
        lines = [
            f"| {vendor} | {label} | {seconds * 1000:,.0f} | {size / 1000:,.1f} | {n:,} | {total:,} |"
            for label, seconds, size, n, total in rows
        ]
        print("\n".join(lines))


def triggers_probe(*, database_url: str) -> None:
    """Seconds to write 50,000 located visits, pages of 5,000, with the map tally's triggers and without."""
    django_on(database_url)
    from django.core.management import call_command
    from django.db import transaction

    from visits.ingest import map_tally
    from visits.ingest.pages import visits_upsert
    from visits.models import Rep, Visit

    call_command("migrate", verbosity=0)
    if not Rep.objects.exists():
        Rep.objects.bulk_create([Rep(id=1000 + i, name=f"Rep {i:03d}") for i in range(REPS)])
    results = {}
    for label, installed in (("with", True), ("without", False), ("with", True), ("without", False)):
        Visit.objects.all().delete()
        (map_tally.triggers_install if installed else map_tally.triggers_drop)()
        rows = dict(visit_rows(visits=50_000))
        for row in rows.values():
            row["outcome_id"] = None
            row["latitude"], row["longitude"] = row["latitude"] or 41.9, row["longitude"] or -87.6
        ids = sorted(rows)
        began = time.perf_counter()
        for start in range(0, len(ids), 5000):
            with transaction.atomic():
                visits_upsert(rows={i: rows[i] for i in ids[start : start + 5000]})
        results.setdefault(label, []).append(time.perf_counter() - began)
    map_tally.triggers_install()
    Visit.objects.all().delete()
    for label, seconds in results.items():
        print(f"  {label} the map tally's triggers: {min(seconds):.2f} s for 50,000 located visits (best of 2)")


def browser_bench(*, database_url: str) -> None:
    """Chromium time to usable on /map/ and the web process's peak memory, at scale."""

    from playwright.sync_api import sync_playwright

    django_on(database_url)
    from django.contrib.auth.models import User
    from django.test import Client

    from visits.models import Visit

    located = Visit.objects.filter(latitude__isnull=False, deleted_at__isnull=True).count()
    # the city and the street zoomed to: around a visit (where the bench's visits are)
    spot = Visit.objects.filter(latitude__isnull=False).order_by("id").values_list("latitude", "longitude").first()
    user = User.objects.filter(username="bench-map").first() or User.objects.create_superuser("bench-map", password="x")
    client = Client()
    client.force_login(user)
    port = 18766
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=ROOT,
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pages = {}
    for path in ("/map/", "/map/frame/"):  # the server's time for the page and its map document
        times = []
        for _ in range(5):
            began = time.perf_counter()
            assert client.get(path).status_code == 200
            times.append(time.perf_counter() - began)
        pages[path] = statistics.median(times)
    the_map = "window[Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))]"
    figures: dict[str, list[float]] = {"world": [], "city": [], "street": []}
    asked: list[dict] = []  # the map's JSON requests, as the page saw them (Resource Timing)
    try:
        cookie = server_cookie(port=port, client=client)
        with sync_playwright() as p:
            for _ in range(3):
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1600, "height": 1000})
                context.add_cookies(cookie)
                page = context.new_page()
                outside: list[str] = []
                page.on("request", lambda r, outside=outside: "127.0.0.1" not in r.url and outside.append(r.url))
                started = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/map/", wait_until="load", timeout=120_000)
                frame = page.frames[1]
                frame.wait_for_function("() => window.visitsdashLoaded === true", timeout=120_000, polling=20)
                frame.evaluate("() => 1")  # the frame answers
                figures["world"].append(time.perf_counter() - started)
                for name, (lat, lng, zoom) in (("city", (*spot, 10)), ("street", (*spot, 15))):
                    draws = frame.evaluate("() => window.visitsdashDraws")
                    started = time.perf_counter()
                    frame.evaluate(f"() => {{ {the_map}.setView([{lat}, {lng}], {zoom}); }}")
                    frame.wait_for_function(
                        "d => window.visitsdashDraws > d && !window.visitsdashPending", arg=draws, timeout=120_000,
                        polling=20,
                    )  # fmt: skip
                    figures[name].append(time.perf_counter() - started)
                asked += page.evaluate(
                    "() => performance.getEntriesByType('resource').filter(e => /\\/map\\/(clusters|points)\\.json/"
                    ".test(e.name)).map(e => ({name: e.name, wait: e.responseStart - e.requestStart,"
                    " bytes: e.encodedBodySize}))"
                )
                browser.close()
                assert not outside, outside[:3]
        status = Path(f"/proc/{server.pid}/status").read_text()
        lines = [line for line in status.splitlines() if line.startswith(("VmHWM", "Rss"))]
        memory = {line.split(":")[0]: int(line.split()[1]) for line in lines}
    finally:
        server.terminate()
        server.wait()
    vendor = "PostgreSQL" if "postgres" in database_url else "SQLite"
    print(f"{vendor}: {located:,} located visits")
    for path, seconds in pages.items():
        print(f"    {path} through the test client (the server alone), median of 5: {seconds * 1000:.0f} ms")
    for kind in ("clusters", "points"):
        seen = [a for a in asked if f"/{kind}.json" in a["name"]]
        if seen:
            waits = sorted(a["wait"] for a in seen)
            for a in seen:
                print(
                    f"      zoom {a['name'].split('zoom=')[1].split('&')[0]:>2}: {a['wait']:4.0f} ms,"
                    f" {a['bytes']:7,} bytes"
                )
            print(
                f"    {len(seen)} {kind}.json asked by the page: the server's answer (request to first byte) median"
                f" {statistics.median(waits):.0f} ms, slowest {waits[-1]:.0f} ms; largest"
                f" {max(a['bytes'] for a in seen) / 1000:.1f} KB"
            )
    print("  Chromium, median of 3 (each from a fresh browser):")
    world = statistics.median(figures["world"])
    print(f"    /map/ to its first clusters drawn (the opening view, every located visit in it): {world:.2f} s")
    print(f"    a zoom to a city (zoom 10), clusters drawn: {statistics.median(figures['city']):.2f} s")
    print(f"    a zoom to a street (zoom 15), points drawn: {statistics.median(figures['street']):.2f} s")
    print(
        f"    the web process's peak RSS: {memory['VmHWM'] / 1024:.0f} MB; at the end {memory['RssAnon'] / 1024:.0f} MB"
        f" its own (anonymous), {memory['RssFile'] / 1024:.0f} MB file pages (code, SQLite's map of the database)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=10_000)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--clusters", metavar="DATABASE_URL")
    parser.add_argument("--probe", metavar="DATABASE_URL")
    parser.add_argument("--browser", metavar="DATABASE_URL")
    args = parser.parse_args()
    if args.browser:
        browser_bench(database_url=args.browser)
        return
    if args.clusters:
        clusters_bench(database_url=args.clusters, write=args.write)
        return
    if args.probe:
        triggers_probe(database_url=args.probe)
        return
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
        cookie = server_cookie(port=port, client=client)
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

"""The review queue at scale (issue 13): 1,000,000 visits on PostgreSQL, a quarter flagged with
risks and tiers set, customers located, a few decisions.

    .venv/bin/python bench/review.py --database-url postgres://postgres@127.0.0.1:5432/visitsdash_queue
    .venv/bin/python bench/review.py --database-url ... --reuse     # keep a database built before

The data set is bench/reports.py's visits (bench/_report.py), written through ingestion's upsert;
then, in plain SQL (the risk helper computes them for real; here they are only needed to be
there): one visit in four flagged with a rule mix, a risk 0-100 spread over the ids and its
tier, one Flag row per rule bit, a Customer per resource with a point, every located visit's
distance to it; and 1% of the flagged visits decided through the queue's decisions_record.

Then, per URL, the median server time of --repeat requests through Django's test client, with
its SQL queries; the PostgreSQL plan of the ranked first page's ids; and headless Chromium
(Debian's, offline) loading the first queue page from a live server: the time to
DOMContentLoaded and to load (the page usable: every card and its drawn day, no frame), median
of --repeat. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import VISITS, database_settle, django_setup, machine, server_wait, visits_load  # noqa: E402

BENCH_USER = "bench-queue"
FLAGGED_EVERY = 4  # one visit in four flagged, as in the demo
DECIDED_EVERY = 100  # of the flagged visits
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
GOAL_SERVER_MS, GOAL_BROWSER_MS = 150, 1500

# The rules a flagged bench visit gets, by its id / FLAGGED_EVERY (bits of models.RULE_BITS).
RULE_MIX = [1, 8, 2 | 64, 16, 256 | 1, 128, 4, 8 | 16]


def build(*, visits: int) -> dict:
    """The visits, then their flags, risks, customers and decisions; the bench user last, so that
    its presence says the build completed."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from visits.models import Customer, Visit
    from visits.review.queue import decisions_record

    started = time.perf_counter()
    call_command("migrate", verbosity=0)  # a fresh database has no tables to ask yet
    if not Visit.objects.exists():  # a build stopped after the visits resumes from its next step
        visits_load(visits=visits, flag=False)
    loaded = time.perf_counter() - started
    if not Visit.objects.filter(flagged=True).exists():
        flags_set()
    if not Customer.objects.exists():
        customers_make()
    reviewer = User.objects.get_or_create(username="bench-reviewer")[0]
    flagged = list(Visit.objects.filter(flagged=True).order_by("id").values_list("id", flat=True))
    chosen = flagged[::DECIDED_EVERY]
    for at in range(0, len(chosen), 1000):
        decisions_record(visit_ids=chosen[at : at + 1000], kind="follow_up", note="Bench.", user=reviewer)
    database_settle()
    User.objects.create_superuser(BENCH_USER, password=None)
    return {"load_seconds": loaded, "seconds": time.perf_counter() - started, "flagged": len(flagged)}


def flags_set() -> None:
    """One visit in FLAGGED_EVERY flagged, with rules, a risk and its tier, and a Flag row per rule."""
    from django.db import connection

    from visits.models import RULE_BITS, Visit

    mix = " ".join(f"WHEN {i} THEN {bits}" for i, bits in enumerate(RULE_MIX))
    with connection.cursor() as cursor:
        table = Visit._meta.db_table
        cursor.execute(
            f"UPDATE {table} SET flagged = TRUE, flag_rules = CASE (id / {FLAGGED_EVERY}) % {len(RULE_MIX)} {mix} END, "
            "risk = (id * 37) % 101, "
            "risk_tier = CASE WHEN (id * 37) % 101 >= 70 THEN 'high' WHEN (id * 37) % 101 >= 40 THEN 'medium' "
            f"ELSE 'low' END WHERE id % {FLAGGED_EVERY} = 1 AND deleted_at IS NULL"
        )
        rules = ", ".join(f"({bit}, '{rule}')" for rule, bit in RULE_BITS.items())
        cursor.execute(
            "INSERT INTO visits_flag (visit_id, rule, numbers, sentence) "
            f"SELECT v.id, r.rule, '{{}}', 'Flagged by the bench (' || r.rule || ').' FROM {table} v "
            f"JOIN (VALUES {rules}) AS r (bit, rule) ON v.flag_rules & r.bit <> 0 WHERE v.flagged"
        )


def customers_make() -> None:
    """A Customer with a point per resource the visits name, and every located visit's distance to it."""
    from django.db import connection

    from visits.models import Customer, Visit

    table = Visit._meta.db_table
    pairs = Visit.objects.order_by().values_list("resource_type", "resource_id").distinct()
    Customer.objects.bulk_create(
        [
            Customer(resource_type=kind, resource_id=rid, location="geocoded",
                     latitude=41.8 + (rid % 997) / 997, longitude=-87.6 + (rid % 991) / 991)
            for kind, rid in pairs
        ],
        batch_size=5000,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} v SET customer_location = 'geocoded', customer_distance_m = 111195 * sqrt("
            "power(v.latitude - c.latitude, 2) + power((v.longitude - c.longitude) * cos(radians(v.latitude)), 2)) "
            "FROM visits_customer c WHERE c.resource_type = v.resource_type AND c.resource_id = v.resource_id "
            "AND v.latitude IS NOT NULL"
        )


SERVER_URLS = [
    ("/review/", "ranked first page (risk, highest first)"),
    ("/review/?tier=high", "tier-filtered: high"),
    ("/review/?tier=low&tier=medium", "tier-filtered: medium and low"),
    ("/review/?sort=newest", "newest first"),
    ("/review/reps/", "by rep (awaiting)"),
    ("/review/reps/?tier=high", "by rep, high tier"),
    ("/review/reps/?review=all", "by rep, every flagged visit"),
    ("/review/rules/", "the rules' precision"),
    ("/review/rules.csv", "the rules' precision as CSV"),
]


def server_times(client, *, repeat: int) -> list[dict]:
    """Median server time of each SERVER_URLS request (after one warm-up), of it the Python process's
    CPU time and the SQL queries' time (on a shared machine, wall time also counts the waits for
    a core), and its SQL queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rows = []
    for url, label in [*SERVER_URLS, (deep_url(client), "a deep page (after the 5,000th page's last visit)")]:
        client.get(url)
        times, cpu, sql = [], [], []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries:
                started, on_cpu = time.perf_counter(), time.process_time()
                response = client.get(url)
                # a CSV is written as it is read: read it within the time
                body = b"".join(response.streaming_content) if response.streaming else response.content
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - on_cpu) * 1000)
            sql.append(sum(float(q["time"]) for q in queries.captured_queries) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        rows.append({
            "url": url, "label": label, "ms": statistics.median(times), "python_cpu_ms": statistics.median(cpu),
            "sql_ms": statistics.median(sql), "queries": len(queries),
            "bytes": len(body),
        })  # fmt: skip
        r = rows[-1]
        print(f"  {r['ms']:7.1f} ms (Python CPU {r['python_cpu_ms']:5.1f}, SQL {r['sql_ms']:5.1f}) {r['queries']:3} q "
              f"{r['bytes']:9,} B  {url}", file=sys.stderr)  # fmt: skip
    return rows


def deep_url(client) -> str:
    from visits.models import Visit
    from visits.review.queue import flagged_visits

    rows = flagged_visits(visits=Visit.objects.live()).order_by("-risk", "-visited_at", "-id")
    return f"/review/?after={rows.values_list('id', flat=True)[5_000 * 20 - 1]}"


def plans(client) -> dict[str, str]:
    """PostgreSQL's plans (EXPLAIN ANALYZE) of the SQL of the ranked first page's ids and of the
    by-rep counts, as the views send them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    found = {}
    for name, url, marker in (("first page ids", "/review/", "UNION ALL"), ("by rep", "/review/reps/", "GROUP BY")):
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        sql = next(q["sql"] for q in queries.captured_queries if marker in q["sql"])
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            found[name] = "\n".join(row[0] for row in cursor.fetchall())
    return found


def chromium_times(base: str, cookie: str, *, repeat: int) -> list[dict]:
    """Headless Chromium opening the first queue page: ms to DOMContentLoaded and to load, from the
    navigation's start (the browser's own Navigation Timing), each a new page in one browser."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": base}])
        outside: list[str] = []
        for n in range(repeat + 1):
            page = context.new_page()
            page.on("request", lambda r: "127.0.0.1" not in r.url and outside.append(r.url))
            page.goto(f"{base}/review/", wait_until="load", timeout=60_000)
            timing = page.evaluate(
                """() => { const t = performance.getEntriesByType('navigation')[0];
                   return {dcl: t.domContentLoadedEventEnd, load: t.loadEventEnd, ttfb: t.responseStart,
                           cards: document.querySelectorAll('article.review-item').length,
                           pictures: document.querySelectorAll('svg.day-picture, p.day-picture').length,
                           frames: document.querySelectorAll('iframe').length}; }"""
            )
            page.close()
            if n:  # the first one warms the browser's cache of the static files
                rows.append(timing)
        browser.close()
    assert not outside, outside[:3]
    return rows


def measure(*, repeat: int) -> dict:
    import subprocess

    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.get(username=BENCH_USER))
    print("server times (Django's test client, in process):", file=sys.stderr)
    server = server_times(client, repeat=repeat)
    plan = plans(client)
    for name, text in plan.items():
        print(f"\nplan of the {name}:\n{text}", file=sys.stderr)
    port = 18766
    env = {**os.environ, "ALLOWED_HOSTS": "127.0.0.1,testserver", "DEBUG": "false"}
    runner = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        server_wait(port)
        browser = chromium_times(f"http://127.0.0.1:{port}", client.cookies["sessionid"].value, repeat=repeat)
    finally:
        runner.terminate()
        runner.wait()
    dcl = statistics.median(t["dcl"] for t in browser)
    load = statistics.median(t["load"] for t in browser)
    print(f"\nChromium, /review/ at 1366x768: DOMContentLoaded {dcl:.0f} ms, load {load:.0f} ms (median of "
          f"{len(browser)}; {browser[0]['cards']} cards, {browser[0]['pictures']} drawn days, "
          f"{browser[0]['frames']} frames)", file=sys.stderr)  # fmt: skip
    return {"machine": machine(), "server": server, "plans": plan, "chromium": browser,
            "chromium_dcl_ms": dcl, "chromium_load_ms": load}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url", required=True, help="a PostgreSQL database (dropped and built unless --reuse)"
    )
    parser.add_argument("--visits", type=int, default=VISITS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="reuse the database if a build completed in it")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue a build that stopped, from its next step")
    args = parser.parse_args()
    server, name = args.database_url.rsplit("/", 1)
    if not args.reuse or not built_in(args.database_url, visits=args.visits):
        from _report import postgres_fresh

        if not args.resume:
            postgres_fresh(f"{server}/postgres", name)
        django_setup(args.database_url)
        print(f"building {args.visits:,} visits", file=sys.stderr, flush=True)
        print(json.dumps(build(visits=args.visits)), file=sys.stderr, flush=True)
    else:
        django_setup(args.database_url)
    if args.build_only:
        return
    results = measure(repeat=args.repeat)
    print(json.dumps(results, indent=1))


def built_in(url: str, *, visits: int) -> bool:
    """Whether a completed build is in the database at `url` (asked without Django)."""
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            user = conn.execute("SELECT 1 FROM auth_user WHERE username = %s", [BENCH_USER]).fetchone()
            count = conn.execute("SELECT count(*) FROM visits_visit").fetchone()[0]
    except psycopg.Error:
        return False
    return bool(user) and count == visits


if __name__ == "__main__":
    main()

"""Ingestion speed: events per second applied from the demo Firehose (no faults, limit 100),
on SQLite and on PostgreSQL, beside a baseline that fetches and parses the same pages
without writing anything.

    .venv/bin/python bench/ingest.py                 # SQLite only
    .venv/bin/python bench/ingest.py --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/ingest.py --postgres ... --write   # also update docs/PERFORMANCE.md

Each measurement runs in a fresh process with a fresh database; figures are medians of
--runs runs. It also prints how fast the demo Firehose itself serves pages (with and without
its `slow` fault). Nothing here is part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import machine, section_write  # noqa: E402 - bench/ is the script's own folder

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def measure(*, mode: str, url: str, database_url: str, limit: int) -> dict:
    """Runs inside the child process: migrate a fresh database, then time one stream."""
    os.environ.update(
        DATABASE_URL=database_url, SELL_API_URL=url, SELL_ACCESS_TOKEN=TOKEN, SELL_PAGE_LIMIT=str(limit),
        SELL_RATE_LIMIT="0",  # it measures the code, not Sell's 10 requests a second
        DJANGO_SETTINGS_MODULE="visitsdash.settings",
    )  # fmt: skip
    import django

    django.setup()
    from django.core.management import call_command

    from visits.ingest.sync import stream_sync
    from visits.sell.events import items_parse
    from visits.sell.firehose import FirehoseClient

    if mode in ("baseline", "fetch"):
        client = FirehoseClient()
        position, events, pages = "tail", 0, 0
        started = time.perf_counter()
        while True:
            page = client.page_fetch(stream="visits", position=position, limit=limit)
            if mode == "baseline":  # parse as ingestion does: JSON, then each item validated into an Event
                items_parse(stream="visits", items=page.items)
            events += len(page.items)
            pages += 1
            position = page.position
            if page.top:
                break
        seconds = time.perf_counter() - started
        return {"events": events, "pages": pages, "seconds": seconds}
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    result = stream_sync(stream="visits", max_seconds=3600)
    seconds = time.perf_counter() - started
    assert result.at_top and not result.error, result
    return {"events": result.applied + result.skipped, "pages": result.pages, "seconds": seconds}


def child(mode: str, url: str, database_url: str, limit: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--url",
            url,
            "--database-url",
            database_url,
            "--limit",
            str(limit),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def request_times(*, url: str, stream: str, limit: int, count: int) -> list[float]:
    """Seconds each of `count` requests for the first page took, on one kept-alive connection."""
    import requests

    with requests.Session() as http:

        def get() -> None:
            params = {"position": "tail", "limit": limit}
            response = http.get(f"{url}/v3/{stream}/stream", params=params, headers=AUTH, timeout=30)
            response.raise_for_status()

        get()  # opens the connection
        times = []
        for _ in range(count):
            started = time.perf_counter()
            get()
            times.append(time.perf_counter() - started)
    return times


def demo_server_figures(data) -> None:
    """The demo Firehose's own speed, printed (tests only check what it serves): a page of 100,
    and the latency its `slow` fault adds (up to MAX_DELAY)."""
    from visits.demo.server import MAX_DELAY, DemoFirehose, Faults

    with DemoFirehose(data, token=TOKEN).start() as server:
        plain = request_times(url=server.url, stream="visits", limit=100, count=30)
    with DemoFirehose(data, token=TOKEN, faults=Faults(slow=1.0, seed=2)).start() as server:
        slow = request_times(url=server.url, stream="users", limit=25, count=8)
    print(
        f"demo Firehose: a page of 100 in median {statistics.median(plain) * 1000:.2f} ms "
        f"(min {min(plain) * 1000:.2f}, max {max(plain) * 1000:.2f}; meant to be well under 5 ms)"
    )
    print(
        f"demo Firehose, slow fault on: mean {statistics.mean(slow) * 1000:.0f} ms a request, "
        f"max {max(slow) * 1000:.0f} ms (the fault adds 0 to {MAX_DELAY * 1000:.0f} ms)"
    )


def postgres_fresh(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["baseline", "fetch", "ingest"])
    parser.add_argument("--url")
    parser.add_argument("--database-url")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--reps", type=int, default=120)
    parser.add_argument("--weeks", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", help="server URL of a PostgreSQL to create bench databases on")
    parser.add_argument("--write", action="store_true", help="update the ingestion section of docs/PERFORMANCE.md")
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(mode=args.child, url=args.url, database_url=args.database_url, limit=args.limit)))
        return

    from visits.demo.generator import team_generate
    from visits.demo.server import DemoFirehose

    data = team_generate(seed=1, reps=args.reps, weeks=args.weeks, updates=True, deletes=True)
    print(f"demo stream: {len(data.visits_events):,} visit events, limit {args.limit}")
    demo_server_figures(data)
    rows = []
    with DemoFirehose(data, token=TOKEN).start() as server, tempfile.TemporaryDirectory() as tmp:
        targets = [
            ("baseline: fetch + parse, no writes", "baseline", None),
            ("for reference: fetch + JSON decoding only", "fetch", None),
            ("SQLite", "ingest", "sqlite"),
        ]
        if args.postgres:
            targets.append(("PostgreSQL", "ingest", "postgres"))
        # Rounds interleave the targets, so that a machine slowing down or speeding up
        # (this one does, by tens of per cent) weighs on every target alike.
        rates: dict[str, list[float]] = {label: [] for label, _, _ in targets}
        events = 0
        for run in range(args.runs):
            for label, mode, backend in targets:
                if backend == "postgres":
                    db = postgres_fresh(args.postgres, f"visitsdash_bench_{run}")
                else:
                    db = f"sqlite:///{tmp}/bench-{run}.sqlite3"
                figures = child(mode, server.url, db, args.limit)
                events = figures["events"]
                rates[label].append(figures["events"] / figures["seconds"])
        for label, _, _ in targets:
            rate = statistics.median(rates[label])
            rows.append((label, events, rate, min(rates[label]), max(rates[label])))
            print(
                f"{label:38} {events:>8,} events  median {rate:>9,.0f} events/s  "
                f"(min {min(rates[label]):,.0f}, max {max(rates[label]):,.0f})"
            )
    baseline = rows[0][2]
    for label, _, rate, _, _ in rows[2:]:
        print(f"{label}: {rate / baseline:.1%} of the baseline's rate")
    if args.write:
        write_report(rows=rows, data_events=len(data.visits_events), limit=args.limit, runs=args.runs)


def write_report(*, rows, data_events: int, limit: int, runs: int) -> None:
    baseline = rows[0][2]
    lines = [
        "## Ingestion (`bench/ingest.py`)",
        "",
        f"Measured {date.today().isoformat()} on {machine()}.",
        f"Stream: {data_events:,} visit events from the demo Firehose on 127.0.0.1, no faults, limit {limit};"
        f" median of {runs} rounds; each round runs every target once, in a fresh process and database.",
        "",
        "| what | events | events/s (median) | min | max | share of baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, events, rate, low, high in rows:
        lines.append(f"| {label} | {events:,} | {rate:,.0f} | {low:,.0f} | {high:,.0f} | {rate / baseline:.1%} |")
    lines += [
        "",
        "Target: at least 10,000 events/s on SQLite, and at least half the baseline's rate.",
        "",
        "**What the baseline does.** It fetches the same pages from the same server and parses them as",
        "ingestion does: JSON decoding, then `events.items_parse`, the validation that turns each item",
        "into an event or a rejected item. The second row, fetching and decoding JSON only, is there for",
        "reference.",
        "",
    ]
    section_write(heading="## Ingestion (", lines=lines)


if __name__ == "__main__":
    main()

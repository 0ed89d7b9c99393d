"""History backfill speed: visits per second stored by `backfill_visits`' path (ingest.backfill)
from the demo Core API, with Sell's 10 requests a second on (SELL_RATE_LIMIT=10) and off (0),
beside the ceiling those requests allow (10 requests/s x 100 visits = 1,000 visits/s).

    .venv/bin/python bench/backfill.py                 # SQLite only, about 30,000 visits
    .venv/bin/python bench/backfill.py --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/backfill.py --write          # also update docs/PERFORMANCE.md

Each run is a fresh process with a fresh database, against one demo server in this process.
The goal: with the limit on, at least 85% of the ceiling. Nothing here is part of the test suite.

`--archive` then runs bench/archive.py (archive_export and archive_import at 1,000,000 visits, rows
a second and peak memory) with the same --postgres and --write: the other half of keeping the history.
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

from _report import child, machine, postgres_fresh, section_write  # noqa: E402 - bench/ is the script's own folder

TOKEN = "bench-token"
CEILING_REQUESTS = 10  # Sell's requests a second per token
PER_PAGE = 100


def measure(*, url: str, database_url: str, rate: float) -> dict:
    """Runs inside the child process: migrate a fresh database, then time one whole backfill."""
    os.environ.update(
        DATABASE_URL=database_url, SELL_API_URL=url, SELL_ACCESS_TOKEN=TOKEN, SELL_RATE_LIMIT=str(rate),
        DJANGO_SETTINGS_MODULE="visitsdash.settings", LOG_LEVEL="WARNING",
    )  # fmt: skip
    import django

    django.setup()
    from django.core.management import call_command

    from visits.ingest.backfill import history_backfill, unreachable_parts

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    run = history_backfill()
    seconds = time.perf_counter() - started
    assert not unreachable_parts(run=run), "a part was unreachable"
    return {"stored": run.stored, "listed": run.listed, "requests": run.requests, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--database-url")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--history-weeks", type=int, default=60, help="about 500 visits a rep a month")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--postgres", help="server URL of a PostgreSQL to create bench databases on")
    parser.add_argument("--write", action="store_true", help="update the backfill section of docs/PERFORMANCE.md")
    parser.add_argument("--archive", action="store_true", help="then run bench/archive.py (export and import at 1M)")
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(url=args.url, database_url=args.database_url, rate=args.rate)))
        return

    from visits.demo.generator import team_generate
    from visits.demo.server import DemoFirehose

    data = team_generate(seed=1, reps=args.reps, weeks=1, history_weeks=args.history_weeks)
    visits = len(data.core_visits())
    print(f"demo Core API: {visits:,} visits of {args.reps} reps ({args.history_weeks} weeks of history and one more)")
    targets = [("SQLite", "sqlite")] + ([("PostgreSQL", "postgres")] if args.postgres else [])
    rows = []
    with DemoFirehose(data, token=TOKEN).start() as server, tempfile.TemporaryDirectory() as tmp:
        for label, backend in targets:
            for rate in (float(CEILING_REQUESTS), 0.0):
                figures = []
                for run in range(args.runs):
                    if backend == "postgres":
                        db = postgres_fresh(args.postgres, "visitsdash_backfill")
                    else:
                        db = f"sqlite:///{tmp}/backfill-{rate:g}-{run}.sqlite3"
                    script = str(Path(__file__).resolve())
                    figures.append(
                        child(script, "--child", "--url", server.url, "--database-url", db, "--rate", str(rate))
                    )
                rate_of = [f["stored"] / f["seconds"] for f in figures]
                best = figures[rate_of.index(statistics.median(rate_of))] if len(figures) % 2 else figures[0]
                row = {"target": label, "limit": rate, **best, "rate": statistics.median(rate_of)}
                rows.append(row)
                print(line(row))
    if args.write:
        write_report(rows=rows, visits=visits, reps=args.reps, runs=args.runs)
    if args.archive:
        more = (["--postgres", args.postgres] if args.postgres else []) + (["--write"] if args.write else [])
        subprocess.run([sys.executable, str(ROOT / "bench" / "archive.py"), *more], check=True)


def line(row: dict) -> str:
    limit = f"SELL_RATE_LIMIT={row['limit']:g}"
    share = f", {row['rate'] / (CEILING_REQUESTS * PER_PAGE):.0%} of the 1,000 visits/s ceiling" if row["limit"] else ""
    return (
        f"{row['target']:10} {limit:18} {row['stored']:>7,} visits stored ({row['listed']:,} listed) in "
        f"{row['requests']:,} requests, {row['seconds']:.1f}s: {row['rate']:,.0f} visits/s, "
        f"{row['requests'] / row['seconds']:.1f} requests/s{share}"
    )


def write_report(*, rows: list[dict], visits: int, reps: int, runs: int) -> None:
    lines = [
        "## History backfill (`bench/backfill.py`)",
        "",
        f"Measured {date.today().isoformat()} on {machine()}.",
        f"{visits:,} visits of {reps} reps from the demo Core API on 127.0.0.1, 100 a page; median of {runs} run(s),",
        "each in a fresh process and database. The ceiling: 10 requests/s x 100 visits = 1,000 visits/s.",
        "",
        "| database | SELL_RATE_LIMIT | visits stored | requests | seconds | visits/s | share of the ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        share = f"{row['rate'] / (CEILING_REQUESTS * PER_PAGE):.0%}" if row["limit"] else "(no limit)"
        lines.append(
            f"| {row['target']} | {row['limit']:g} | {row['stored']:,} | {row['requests']:,} | {row['seconds']:.1f} "
            f"| {row['rate']:,.0f} | {share} |"
        )
    lines += ["", "Goal: with the limit on, at least 85% of the ceiling.", ""]
    section_write(heading="## History backfill (", lines=lines)


if __name__ == "__main__":
    main()

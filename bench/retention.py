"""The retention rule's speed (geo/retention.py) on the reports benchmark's data set.

    .venv/bin/python bench/retention.py --postgres postgres://postgres@127.0.0.1:5432/postgres --visits 1000000

Loads the visits (two years, through ingestion's upsert) and their flags, then times in this process
`coordinates_retain` with a window of a year (about half the positions removed, in chunks of 5,000
each under its reps' locks, the flags that read them frozen), its rows per second, and the run of the
next day (nothing left to remove: what the daily task costs once caught up), then a flags_rebuild
(every rep's flags with the removed ones frozen). Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import END, database_settle, django_setup, machine, postgres_fresh, visits_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--postgres", help="server URL of a PostgreSQL to create the bench database on")
    where.add_argument("--sqlite", help="path of a SQLite file to create (replaced)")
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365, help="COORDINATES_RETENTION_DAYS")
    parser.add_argument("--database", default="visitsdash_bench_retention", help="the bench database's name")
    args = parser.parse_args()
    if args.postgres:
        url = postgres_fresh(args.postgres, args.database)
    else:
        Path(args.sqlite).unlink(missing_ok=True)
        url = f"sqlite:///{Path(args.sqlite).resolve()}"
    django_setup(url)
    from datetime import timedelta

    from visits.geo.retention import coordinates_retain
    from visits.models import Flag, Visit
    from visits.review.flags import flags_rebuild

    seconds = visits_load(visits=args.visits)
    database_settle()
    located = Visit.objects.filter(latitude__isnull=False).count()
    engine = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{machine()}\n{engine}: {args.visits:,} visits loaded in {seconds:.0f} s,"
          f" {located:,} with a position, {Flag.objects.count():,} flags")  # fmt: skip

    started = time.perf_counter()
    result = coordinates_retain(now=END, days=args.days)
    took = time.perf_counter() - started
    print(f"  coordinates_retain, a window of {args.days} days   {took:7.2f} s  {result.visits / took:9,.0f} visits/s")
    print(f"    {result.summary()}")
    database_settle()
    started = time.perf_counter()
    again = coordinates_retain(now=END + timedelta(days=1), days=args.days)
    took = time.perf_counter() - started
    print(f"  the next day's run ({again.visits:,} removed){'':<10} {took:7.2f} s")
    started = time.perf_counter()
    reps, changes = flags_rebuild()
    print(
        f"  flags_rebuild after it{'':<24} {time.perf_counter() - started:7.2f} s  ({reps} reps, {changes:,} changes)"
    )


if __name__ == "__main__":
    main()

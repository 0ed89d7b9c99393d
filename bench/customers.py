"""Customers' refresh speed (geo/customers.py) on the reports benchmark's data set.

    .venv/bin/python bench/customers.py --postgres postgres://postgres@127.0.0.1:5432/postgres --visits 100000

Loads the visits (through ingestion's upsert, without flags), then times in this process:
`customers_refresh(everything=True)` on no customers (the first run: every customer created,
learned and every visit measured), the same again with nothing changed, and the periodic
incremental refresh after 1,000 visits moved (as ingestion writes them: position and ingested_at)
and with nothing new, the visits then ingested an hour before and the last refresh half an hour.
Each refresh is followed by the flags_refresh() its task runs (the flags its distances reach),
timed apart. The database is settled (VACUUM ANALYZE, as autovacuum soon would) after the load and
after the first refresh: without statistics, the flags' window queries ran ten times slower.
Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import database_settle, django_setup, machine, postgres_fresh, visits_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", required=True, help="server URL of a PostgreSQL to create the bench database on")
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--database", default="visitsdash_bench_customers", help="the bench database's name")
    args = parser.parse_args()
    django_setup(postgres_fresh(args.postgres, args.database))
    from datetime import timedelta

    from django.db.models import F
    from django.utils import timezone

    from visits.geo.customers import customers_refresh
    from visits.models import Customer, DistanceState, Visit
    from visits.review.flags import flags_refresh

    seconds = visits_load(visits=args.visits, flag=False)
    database_settle()
    print(f"{machine()}\nPostgreSQL: {args.visits:,} visits loaded in {seconds:.0f} s")

    def timed(label: str, **kwargs) -> None:
        started = time.perf_counter()
        result = customers_refresh(**kwargs)
        print(
            f"  {label:<42} {time.perf_counter() - started:7.2f} s  ({result.customers:,} customers,"
            f" {result.visits_measured:,} visits measured, {result.distances_written:,} written)"
        )
        started = time.perf_counter()
        reps, changes = flags_refresh()
        print(
            f"    then flags_refresh{'':<25} {time.perf_counter() - started:7.2f} s  ({reps} reps, {changes:,} changes)"
        )

    timed("first refresh (every customer and visit)", everything=True)
    database_settle()  # as autovacuum soon would after every visit's distance was written
    timed("everything again, nothing changed", everything=True)
    # As in a running deployment: the visits ingested an hour ago, the last refresh half an hour ago.
    hour_ago = timezone.now() - timedelta(hours=1)
    Visit.objects.update(ingested_at=hour_ago)
    DistanceState.objects.update(visits_measured_to=hour_ago + timedelta(minutes=30))
    moved = list(Visit.objects.filter(latitude__isnull=False).order_by("id").values_list("id", flat=True)[:1000])
    Visit.objects.filter(id__in=moved).update(latitude=F("latitude") + 0.001, ingested_at=timezone.now())
    timed("periodic refresh after 1,000 visits moved")
    timed("periodic refresh, nothing new")
    # The suspect addresses' part of every refresh, alone (geo/suspects.py), and a mark's copy onto
    # the visits of the customer with the most.
    from visits.geo.suspects import addresses_wrong_keep, customer_visits_mark, suspects_refresh

    started = time.perf_counter()
    suspects = suspects_refresh()
    print(f"  {'suspects_refresh (every customer)':<42} {time.perf_counter() - started:7.2f} s  ({suspects:,} suspect)")
    started = time.perf_counter()
    addresses_wrong_keep()
    print(f"  {'addresses_wrong_keep, nothing marked':<42} {time.perf_counter() - started:7.2f} s")
    biggest = Customer.objects.order_by("-learned_visits", "id").first()
    if biggest is not None:
        Customer.objects.filter(pk=biggest.pk).update(address_wrong=True)
        biggest.address_wrong = True
        started = time.perf_counter()
        changed = customer_visits_mark(customer=biggest)
        print(f"  {'a mark copied onto its visits':<42} {time.perf_counter() - started:7.2f} s  ({changed:,} visits)")
        started = time.perf_counter()
        addresses_wrong_keep()
        print(f"  {'addresses_wrong_keep, one customer marked':<42} {time.perf_counter() - started:7.2f} s")
    located = Visit.objects.filter(customer_distance_m__isnull=False).count()
    print(f"  {Customer.objects.exclude(location='').count():,} customers located, {located:,} visits with a distance")


if __name__ == "__main__":
    main()

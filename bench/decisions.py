"""The review's decisions at scale (issue 13): the rules' precision page and CSV, the queue by rep,
/review.csv, the bulk accept's confirmation and the bulk accept itself of a filter's whole low tier.

    .venv/bin/python bench/decisions.py                       # SQLite, 200,000 visits (var/bench/)
    .venv/bin/python bench/decisions.py --visits 1000000 --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/decisions.py --reuse ...           # keep and reuse the database built before

The data set is bench/reports.py's (bench/_report.py), one visit in 500 deleted in Sell, flagged by
flags_rebuild; every flagged visit is given a risk (a fixed function of its id) and its tier
(high from 70, medium from 40, else low: the risk module's own scoring is not this bench's
subject), and 5% of the flagged visits are decided through queue.decisions_record. Requests go
through Django's test client as a superuser; the median of --repeat. The bulk accept (POST) runs
once, inside a transaction rolled back afterwards (so --reuse finds the same data): its time is
the whole request's, without the final commit. Prints figures; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import database_settle, django_setup, machine, postgres_fresh, visits_load  # noqa: E402

POSTGRES_DB = "visitsdash_bench_decisions"
BENCH_USER = "bench"


def build(*, visits: int) -> dict:
    import random

    from django.contrib.auth.models import User
    from django.db import connection

    from visits.models import AcceptReason, DecisionKind, Visit
    from visits.review.queue import decisions_record

    started = time.perf_counter()
    visits_load(visits=visits, deleted_every=500)
    with connection.cursor() as cursor:  # risk 0-100 from the id; its tier as the thresholds say
        risk = "(id * 37) % 101"
        tier = f"CASE WHEN {risk} >= 70 THEN 'high' WHEN {risk} >= 40 THEN 'medium' ELSE 'low' END"
        cursor.execute(f"UPDATE visits_visit SET risk = {risk}, risk_tier = {tier} WHERE flagged")
    reviewer = User.objects.create_user("bench-reviewer")
    rng = random.Random(13)
    flagged = list(Visit.objects.live().filter(flagged=True).order_by("id").values_list("id", flat=True))
    chosen = sorted(rng.sample(flagged, len(flagged) // 20))
    kinds = [DecisionKind.ACCEPT, DecisionKind.REJECT, DecisionKind.FOLLOW_UP]
    for at in range(0, len(chosen), 1000):
        kind = kinds[at // 1000 % 3]
        decisions_record(
            visit_ids=chosen[at : at + 1000], kind=kind, note="bench", user=reviewer,
            reason=AcceptReason.GPS_NOISE if kind == DecisionKind.ACCEPT else "",
        )  # fmt: skip
    User.objects.create_superuser(BENCH_USER, email="bench@example.com", password=None)
    database_settle()
    return {"build_seconds": time.perf_counter() - started, "flagged": len(flagged), "decided": len(chosen)}


def state(*, visits: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import DatabaseError

    from visits.models import Visit

    try:
        return {"complete": User.objects.filter(username=BENCH_USER).exists() and Visit.objects.count() == visits}
    except DatabaseError:
        return {"complete": False}


def timed(client, url: str, *, repeat: int) -> dict:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    times, cpu, sql, size, queries = [], [], [], 0, 0
    for _ in range(repeat):
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            started, on_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            body = response.streaming_content if response.streaming else [response.content]
            size = sum(len(chunk) for chunk in body)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - on_cpu)  # SQLite's work included: it runs in this process
        sql.append(sum(float(q["time"]) for q in captured.captured_queries))
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured.captured_queries)
    return {
        "url": url, "ms": statistics.median(times) * 1000, "cpu_ms": statistics.median(cpu) * 1000,
        "sql_ms": statistics.median(sql) * 1000, "queries": queries, "bytes": size,
    }  # fmt: skip


def measure(*, repeat: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.test import Client

    from visits.models import Decision, Visit
    from visits.review.queue import low_tier_awaiting

    client = Client()
    client.force_login(User.objects.get(username=BENCH_USER))
    urls = [
        "/review/rules/", "/review/rules/?start=2026-09-01&end=2026-09-30", "/review/rules/?rep=1042",
        "/review/rules/?tier=low", "/review/rules.csv", "/review/reps/", "/review/reps/?review=all",
        "/review.csv", "/review.csv?sort=oldest",
        "/review.csv?review=all&rep=1042", "/review/accept-low/", "/review/accept-low/?rep=1042",
    ]  # fmt: skip
    rows = [timed(client, url, repeat=repeat) for url in urls]
    for row in rows:
        print(
            f"  {row['ms']:9,.0f} ms (CPU {row['cpu_ms']:7,.0f}, SQL {row['sql_ms']:7,.0f}) {row['queries']:4} q "
            f"{row['bytes']:>12,} B  {row['url']}",
            file=sys.stderr,
        )
    count = low_tier_awaiting(visits=Visit.objects.live()).count()
    before = Decision.objects.count()
    with transaction.atomic():
        started = time.perf_counter()
        response = client.post("/review/accept-low/", {"expected": str(count), "reason": "gps_noise"})
        seconds = time.perf_counter() - started
        assert response.status_code == 302, response.status_code
        recorded = Decision.objects.count() - before
        assert recorded == count and not low_tier_awaiting(visits=Visit.objects.live()).exists()
        transaction.set_rollback(True)
    print(f"  bulk accept: {count:,} visits in {seconds:.2f} s ({count / seconds:,.0f} a second)", file=sys.stderr)
    return {"rows": rows, "bulk": {"visits": count, "seconds": seconds}}


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"bench/decisions.py --child {args[0]} failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["state", "build", "measure"])
    parser.add_argument("--database-url")
    parser.add_argument("--visits", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", help="server URL of a PostgreSQL to build visitsdash_bench_decisions on")
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    if args.child:
        django_setup(args.database_url)
        if args.child == "state":
            result = state(visits=args.visits)
        elif args.child == "build":
            result = build(visits=args.visits)
        else:
            result = measure(repeat=args.repeat)
        print(json.dumps(result))
        return
    if args.postgres:
        name, url = "PostgreSQL", args.postgres.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"
    else:
        path = ROOT / "var" / "bench" / f"decisions-{args.visits}.sqlite3"
        name, url = "SQLite", f"sqlite:///{path}"
    print(f"{machine()}; {name}, {args.visits:,} visits", file=sys.stderr)
    if not (args.reuse and child("state", "--database-url", url, "--visits", str(args.visits))["complete"]):
        if args.postgres:
            postgres_fresh(args.postgres, POSTGRES_DB)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            for old in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                old.unlink(missing_ok=True)
        built = child("build", "--database-url", url, "--visits", str(args.visits))
        print(f"  built in {built['build_seconds']:.0f} s: {built['flagged']:,} flagged, {built['decided']:,} decided",
              file=sys.stderr)  # fmt: skip
    child("measure", "--database-url", url, "--repeat", str(args.repeat))


if __name__ == "__main__":
    main()

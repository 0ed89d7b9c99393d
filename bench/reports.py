"""Report speed at scale: 1,000,000 visits (200 reps, 12 outcomes, two years).

    .venv/bin/python bench/reports.py                       # SQLite only
    .venv/bin/python bench/reports.py --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/reports.py --postgres ... --write   # also update docs/PERFORMANCE.md
    .venv/bin/python bench/reports.py --team [--postgres ...] [--write]  # a team's manager (issue 14)

Measures the server time (Django's test client, in process) of `/`, `/reports/reps/`,
`/reports/outcomes/`, `/reports/matrix/` and one rep's page for the whole range and for one month,
beside a plain GROUP BY on the visits table; and the rows per second and peak memory (RSS of a fresh
process) of `/visits.csv` beside Python's own driver and `csv` module writing the same rows.
The visits are written with the ingestion's own upsert, then flagged (flags.flags_rebuild), as
the reps report counts flagged and rejected visits; then every located visit is given a distance
from its customer by one UPDATE (the triggers keep the far counts and the distance tally, as after
the customers' refresh), so the reports' distance columns and the rep page's histogram have
something to read. Nothing here is part of the tests.

With --team: the reports a Manager of one team reads (reps, outcomes, matrix, teams; the whole
range, a month, 30 days), on databases kept between runs (var/bench/reports.sqlite3 and
visitsdash_bench_reports, built when missing, migrated when reused): the 200 reps are put in
TEAMS Sell groups of equal size, each group's first rep managing the rest; the Managers account
`bench-team-manager` is linked to the first group's manager, so sees its 50 reps (a quarter of
the visits) through visits.access; the same pages as a superuser with `?team=` beside them.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import OUTCOMES, REPS, VISITS, database_settle, django_setup, machine, section_write, visits_load  # noqa: E402
from _report import child as script_child  # noqa: E402

MONTH = ("2026-09-01", "2026-09-30")
THIRTY_DAYS = ("2026-09-15", "2026-10-14")  # not aligned on months: half of it is read from the edges
PAGES = ["/", "/reports/reps/", "/reports/outcomes/", "/reports/matrix/", "/reports/reps/1000/"]
TEAM_PAGES = ["/reports/reps/", "/reports/outcomes/", "/reports/matrix/", "/reports/teams/"]
TEAMS, FIRST_GROUP = 4, 3001  # Sell groups 3001-3004, 50 reps each; the manager: rep 1000 of group 3001
TEAM_MANAGER = "bench-team-manager"
SQLITE_KEPT = ROOT / "var" / "bench" / "reports.sqlite3"


def distances_set() -> float:
    """Every located visit a distance from its customer, drawn from its id: the verified mostly
    within 100 m (one in 33 at 1.5-2.5 km), the too-far 200 m to 40 km, log-spread. One UPDATE,
    through the triggers. Returns its seconds."""
    from django.db import connection, transaction

    spread = "((id * 7919) % 1000) / 1000.0"
    sql = (
        "UPDATE visits_visit SET customer_distance_m = CASE "
        f"WHEN verification_status = 'resource_location_too_far' THEN 200 * exp({spread} * 5.3) "
        f"WHEN id % 33 = 0 THEN 1500 + 1000 * {spread} ELSE 100 * {spread} END, customer_location = 'learned' "
        "WHERE latitude IS NOT NULL AND deleted_at IS NULL"
    )
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    return time.perf_counter() - started


def load(*, visits: int) -> float:
    """The shared data set, loaded and settled; returns the seconds the writing took."""
    seconds = visits_load(visits=visits)
    distances = distances_set()
    print(f"distances written in {distances:.0f} s", file=sys.stderr)
    database_settle()
    return seconds


def pages_measure(*, repeat: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    user, _ = User.objects.get_or_create(username="bench", defaults={"is_superuser": True, "is_staff": True})
    client = Client()
    client.force_login(user)
    figures = {}
    ranges = (("whole range", "", None), ("one month", f"?start={MONTH[0]}&end={MONTH[1]}", MONTH),
              ("30 days across two months", f"?start={THIRTY_DAYS[0]}&end={THIRTY_DAYS[1]}", THIRTY_DAYS))  # fmt: skip
    for label, query, bounds in ranges:
        for path in PAGES:
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(path + query)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, (path, response.status_code)
            figures[f"{path} ({label})"] = statistics.median(times) * 1000
        where = "" if not query else (
            " WHERE visited_at >= %s AND visited_at < %s"
        )  # fmt: skip
        params = (
            []
            if not bounds
            else [
                datetime.fromisoformat(bounds[0]).replace(tzinfo=UTC),
                datetime.fromisoformat(bounds[1]).replace(tzinfo=UTC) + timedelta(days=1),
            ]
        )
        if connection.vendor == "sqlite":
            params = [str(p.replace(tzinfo=None)) for p in params]
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT rep_id, verification_status, COUNT(*) FROM visits_visit{where} GROUP BY 1, 2", params
                )
                cursor.fetchall()
            times.append(time.perf_counter() - started)
        figures[f"baseline: plain GROUP BY rep, status ({label})"] = statistics.median(times) * 1000
        figures.update(distance_costs(bounds=bounds, label=label, repeat=repeat))
    return figures


def team_setup() -> dict:
    """The reps in TEAMS groups (the first of each managing the others), the team manager's
    account linked to rep 1000; migrations first (a reused database may be behind)."""
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    from visits.models import Rep, SellLink, SellLinkVia

    call_command("migrate", verbosity=0)
    reps = list(Rep.objects.order_by("id").values_list("id", flat=True))
    size = -(-len(reps) // TEAMS)
    for index in range(TEAMS):
        members = reps[index * size : (index + 1) * size]
        Rep.objects.filter(id__in=members).update(group_id=FIRST_GROUP + index, group_name=f"Team {index + 1}")
        Rep.objects.filter(id__in=members[1:]).update(reports_to=members[0])
    user, _ = User.objects.get_or_create(username=TEAM_MANAGER)
    user.groups.set([Group.objects.get(name="Managers")])
    SellLink.objects.update_or_create(user=user, defaults={"rep_id": reps[0], "via": SellLinkVia.ADMIN})
    User.objects.get_or_create(username="bench", defaults={"is_superuser": True, "is_staff": True})
    return {"team_reps": size}


def team_measure(*, repeat: int) -> dict:
    """The team pages as the team's manager and as a superuser filtering by the team: median ms
    and queries of each."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from visits.access import rep_filter_for_user

    manager = User.objects.get(username=TEAM_MANAGER)
    seen = rep_filter_for_user(manager)
    assert seen is not None and len(seen) > 1, "the team manager sees no team: is visits.access merged?"
    clients = {}
    for who, username in (("manager", TEAM_MANAGER), ("superuser ?team=", "bench")):
        clients[who] = Client()
        clients[who].force_login(User.objects.get(username=username))
    ranges = (("whole range", ""), ("one month", f"start={MONTH[0]}&end={MONTH[1]}"),
              ("30 days", f"start={THIRTY_DAYS[0]}&end={THIRTY_DAYS[1]}"))  # fmt: skip
    figures = {}
    for label, query in ranges:
        for path in TEAM_PAGES:
            for who, client in clients.items():
                url = path + "?" + "&".join(q for q in (query, f"team={FIRST_GROUP}" if who != "manager" else "") if q)
                times = []
                for _ in range(repeat):
                    with CaptureQueriesContext(connection) as queries:
                        started = time.perf_counter()
                        response = client.get(url)
                        times.append(time.perf_counter() - started)
                    assert response.status_code == 200, (url, response.status_code)
                figures[f"{path} ({label}) as {who}"] = [statistics.median(times) * 1000, len(queries)]
    return figures


def team_run(*, name: str, database_url: str, visits: int, repeat: int) -> dict:
    state = child("--child", "team-state", "--database-url", database_url)
    if state["visits"] < visits:
        loaded = child("--child", "load", "--database-url", database_url, "--visits", str(visits))
        print(f"{name}: loaded {visits:,} visits in {loaded['seconds']:.0f} s")
    else:
        print(f"{name}: reusing {state['visits']:,} visits")
    child("--child", "team-setup", "--database-url", database_url)
    pages = child("--child", "team-pages", "--database-url", database_url, "--repeat", str(repeat))
    for label, (ms, queries) in pages.items():
        print(f"  {label:62} median {ms:8.1f} ms, {queries} queries")
    return pages


def team_state() -> dict:
    """The visits the database holds (0 when it is empty or unmigrated)."""
    from django.db import connection

    if "visits_visit" not in connection.introspection.table_names():
        return {"visits": 0}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM visits_visit")
        return {"visits": cursor.fetchone()[0]}


def team_report(*, results: dict, visits: int, repeat: int) -> None:
    lines = [
        "## Reports for one team's manager (`bench/reports.py --team`)",
        "",
        f"Measured {datetime.now().date().isoformat()} on {machine()}.",
        f"{visits:,} visits (the Reports data set: {REPS} reps, two years), the reps in {TEAMS} Sell groups of"
        f" {REPS // TEAMS}; a Managers account linked to the first group's manager sees its {REPS // TEAMS} reps"
        " (a quarter of the visits) through `visits.access`; beside it a superuser asking for the same team with"
        f" `?team={FIRST_GROUP}`. Server time through Django's test client, median of {repeat} requests, and the"
        f" queries of one; one month = {MONTH[0]} to {MONTH[1]}; 30 days = {THIRTY_DAYS[0]} to {THIRTY_DAYS[1]}.",
        "",
        "| page | " + " | ".join(f"{name} ms (queries)" for name in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for label in next(iter(results.values())):
        cells = " | ".join(f"{r[label][0]:,.0f} ({r[label][1]})" for r in results.values())
        lines.append(f"| {label} | {cells} |")
    lines += ["", "Goal: each page at a median of 150 ms or less.", ""]
    section_write(heading="## Reports for one team's manager", lines=lines)


def distance_costs(*, bounds, label: str, repeat: int) -> dict:
    """What the distances add to a report: its too-far percentiles read (tally and edge days), by
    rep and by rep and outcome (the matrix CSV's cells), beside the counts alone."""
    from datetime import date

    from visits.reports import analytics
    from visits.reports.scope import Scope

    scope = Scope() if not bounds else Scope(start=date.fromisoformat(bounds[0]), end=date.fromisoformat(bounds[1]))
    figures = {}
    for by in (("rep",), ("rep", "outcome")):
        for what, run in (
            ("counts", lambda by=by: analytics.counts_by(scope=scope, by=by)),
            ("too-far percentiles", lambda by=by: analytics.too_far_percentiles(scope=scope, by=by)),
        ):
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
            figures[f"  {what} by {' and '.join(by)} ({label})"] = statistics.median(times) * 1000
    return figures


def export_measure(*, mode: str, database_url: str) -> dict:
    """In a fresh process: stream /visits.csv (or the baseline) to nowhere; rows/s and peak RSS."""
    started = time.perf_counter()
    rows = 0
    if mode == "app":
        from django.contrib.auth.models import User
        from django.test import Client

        client = Client()
        client.force_login(User.objects.get(username="bench"))
        response = client.get("/visits.csv")
        for chunk in response.streaming_content:
            rows += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
        rows -= 1  # the header
    else:
        import csv
        import io

        from django.db import connection

        out = io.StringIO()
        writer = csv.writer(out)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT v.id, v.visited_at, v.created_at, v.rep_id, r.name, v.resource_type, v.resource_id, "
                "v.outcome_id, o.name, v.verification_status, v.latitude, v.longitude, v.summary "
                "FROM visits_visit v JOIN visits_rep r ON r.id = v.rep_id "
                "LEFT JOIN visits_outcome o ON o.id = v.outcome_id "
                "WHERE v.deleted_at IS NULL ORDER BY v.visited_at, v.id"
            )
            while batch := cursor.fetchmany(5000):
                for row in batch:
                    writer.writerow(row)
                    rows += 1
                out.seek(0)
                out.truncate()
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "rows_per_second": rows / seconds, "peak_mb": peak_mb}


def child(*args: str) -> dict:
    return script_child(__file__, *args)


def backend_run(*, name: str, database_url: str, visits: int, repeat: int, export: bool = True) -> dict:
    loaded = child("--child", "load", "--database-url", database_url, "--visits", str(visits))
    print(f"{name}: loaded {visits:,} visits in {loaded['seconds']:.0f} s")
    pages = child("--child", "pages", "--database-url", database_url, "--repeat", str(repeat))
    for label, ms in pages.items():
        print(f"  {label:58} median {ms:8.1f} ms")
    # Three rounds, each running the app's export and the baseline once, in fresh processes:
    # the machine's drift weighs on both alike. Medians of the rounds.
    if not export:
        return {"pages": pages, "exports": {}}
    rounds = [
        {mode: child("--child", f"export-{mode}", "--database-url", database_url) for mode in ("app", "baseline")}
        for _ in range(3)
    ]
    exports = {
        mode: {
            "rows": rounds[0][mode]["rows"],
            "rows_per_second": statistics.median(r[mode]["rows_per_second"] for r in rounds),
            "peak_mb": max(r[mode]["peak_mb"] for r in rounds),
        }
        for mode in ("app", "baseline")
    }
    for mode, figures in exports.items():
        print(
            f"  /visits.csv {mode:9} {figures['rows']:>9,} rows  {figures['rows_per_second']:>9,.0f} rows/s  "
            f"peak {figures['peak_mb']:.0f} MB"
        )
    return {"pages": pages, "exports": exports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child")
    parser.add_argument("--database-url")
    parser.add_argument("--visits", type=int, default=VISITS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", help="server URL of a PostgreSQL to create the bench database on")
    parser.add_argument("--write", action="store_true", help="update the reports section of docs/PERFORMANCE.md")
    parser.add_argument("--no-export", action="store_true", help="the pages only, not /visits.csv")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--team", action="store_true", help="a team's manager's reports, on kept databases")
    args = parser.parse_args()
    if args.child:
        django_setup(args.database_url)
        if args.child == "load":
            result = {"seconds": load(visits=args.visits)}
        elif args.child == "team-state":
            result = team_state()
        elif args.child == "team-setup":
            result = team_setup()
        elif args.child == "team-pages":
            result = team_measure(repeat=args.repeat)
        elif args.child == "pages":
            result = pages_measure(repeat=args.repeat)
        else:
            result = export_measure(mode=args.child.removeprefix("export-"), database_url=args.database_url)
        print(json.dumps(result))
        return
    if args.team:
        team_main(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sqlite:
            results["SQLite"] = backend_run(
                name="SQLite", database_url=f"sqlite:///{tmp}/reports.sqlite3", visits=args.visits,
                repeat=args.repeat, export=not args.no_export,
            )  # fmt: skip
        if args.postgres:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute("DROP DATABASE IF EXISTS visitsdash_bench_reports")
                conn.execute("CREATE DATABASE visitsdash_bench_reports")
            url = args.postgres.rsplit("/", 1)[0] + "/visitsdash_bench_reports"
            results["PostgreSQL"] = backend_run(
                name="PostgreSQL", database_url=url, visits=args.visits, repeat=args.repeat, export=not args.no_export
            )
    if args.write:
        write_report(results=results, visits=args.visits, repeat=args.repeat)


def team_main(args) -> None:
    results = {}
    if not args.no_sqlite:
        SQLITE_KEPT.parent.mkdir(parents=True, exist_ok=True)
        results["SQLite"] = team_run(
            name="SQLite", database_url=f"sqlite:///{SQLITE_KEPT}", visits=args.visits, repeat=args.repeat
        )
    if args.postgres:
        import psycopg

        with psycopg.connect(args.postgres, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'visitsdash_bench_reports'").fetchone():
                conn.execute("CREATE DATABASE visitsdash_bench_reports")
        url = args.postgres.rsplit("/", 1)[0] + "/visitsdash_bench_reports"
        results["PostgreSQL"] = team_run(name="PostgreSQL", database_url=url, visits=args.visits, repeat=args.repeat)
    if args.write:
        team_report(results=results, visits=args.visits, repeat=args.repeat)


def write_report(*, results: dict, visits: int, repeat: int) -> None:
    lines = [
        "## Reports (`bench/reports.py`)",
        "",
        f"Measured {datetime.now().date().isoformat()} on {machine()}.",
        f"{visits:,} visits ({REPS} reps, {OUTCOMES} outcomes, two years); server time through Django's test client,"
        f" median of {repeat} requests; one month = {MONTH[0]} to {MONTH[1]}; 30 days = {THIRTY_DAYS[0]} to"
        f" {THIRTY_DAYS[1]}. Export: median rows/s of 3 rounds (app and baseline alternating, fresh processes),"
        " highest peak.",
        "",
        "| page | " + " | ".join(f"{name} ms" for name in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    labels = list(next(iter(results.values()))["pages"])
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{r['pages'][label]:,.0f}" for r in results.values()) + " |")
    lines += ["", "| export | " + " | ".join(f"{name} rows/s | {name} peak MB" for name in results) + " |",
              "|---|" + "---:|---:|" * len(results)]  # fmt: skip
    for mode, label in (("app", "`/visits.csv`"), ("baseline", "baseline: driver + `csv` module")):
        cells = " | ".join(
            f"{r['exports'][mode]['rows_per_second']:,.0f} | {r['exports'][mode]['peak_mb']:,.0f}"
            for r in results.values()
        )
        lines.append(f"| {label} | {cells} |")
    lines += ["", "Targets: report pages at a median of 150 ms or less; the export at 50,000 rows/s or more with"
              " peak memory under 200 MB.", ""]  # fmt: skip
    section_write(heading="## Reports (", lines=lines)


if __name__ == "__main__":
    main()

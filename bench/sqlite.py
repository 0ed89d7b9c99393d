"""SQLite's connection settings at scale: the page cache and the memory map (SQLITE_CACHE_MB,
SQLITE_MMAP_MB) on 1,000,000 visits.

    .venv/bin/python bench/sqlite.py            # build (or reuse) var/bench-sqlite.sqlite3, print
    .venv/bin/python bench/sqlite.py --write    # also update docs/PERFORMANCE.md

The database is the reports' (bench/_report.py's loader: the ingestion's own upsert, then the
flags), kept in var/ for the next run. The targets: opening a connection (its PRAGMAs), two queries
that probe an index once per visit, and pages through Django's test client (server time). Every
run opens a new connection, as a request does (CONN_MAX_AGE 0 on SQLite), with the PRAGMAs that
settings.database_settings writes for the variant; the variants take turns run by run, so a busy
machine's drift weighs on all of them alike. WAL and synchronous=NORMAL are on in every variant.
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import VISITS, django_setup, machine, section_write, visits_load  # noqa: E402 (after the path is set)

DATABASE = ROOT / "var" / "bench-sqlite.sqlite3"
BEFORE = "2 MB cache (SQLite's default), no map"
DEFAULTS = "8 MB cache, 1 GB map (the defaults)"
KEPT = "the defaults, one connection kept for every run"
VARIANTS = {  # label: (SQLITE_CACHE_MB, SQLITE_MMAP_MB)
    BEFORE: (2, 0),
    "64 MB cache, no map": (64, 0),
    "64 MB cache, 1 GB map": (64, 1024),
    "2 MB cache, 1 GB map": (2, 1024),
    DEFAULTS: (8, 1024),
    KEPT: (8, 1024),  # for comparison: what a persistent connection (CONN_MAX_AGE above 0) would give
}
QUERIES = {
    "query: visits with a flag (an EXISTS probe per visit)": (
        "SELECT COUNT(*) FROM visits_visit v WHERE v.deleted_at IS NULL"
        " AND EXISTS (SELECT 1 FROM visits_flag f WHERE f.visit_id = v.id)"
    ),
    "query: visits per rep name (a rep probe per visit)": (
        "SELECT r.name, COUNT(*) FROM visits_visit v JOIN visits_rep r ON r.id = v.rep_id"
        " WHERE v.deleted_at IS NULL GROUP BY r.name"
    ),
}
PAGES = ["/", "/reports/reps/", "/review/", "/visits/", "/admin/visits/visit/", "/status/"]
CONNECT = "open a connection (its PRAGMAs), µs"


def measure(*, url: str, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per run: {target: {variant: [runs]}}, after one unmeasured run of each."""
    from django.contrib.auth.models import User
    from django.db import connection, connections
    from django.test import Client

    from visitsdash.settings import database_settings

    pragmas = {
        label: database_settings(url, sqlite_cache_mb=cache_mb, sqlite_mmap_mb=mmap_mb)["OPTIONS"]["init_command"]
        for label, (cache_mb, mmap_mb) in VARIANTS.items()
    }
    fresh = connections["default"]
    kept = connections.create_connection("default")  # its own settings, so its PRAGMAs stay
    kept.settings_dict = {**kept.settings_dict, "OPTIONS": {**kept.settings_dict["OPTIONS"]}}
    kept.settings_dict["OPTIONS"]["init_command"] = pragmas[KEPT]

    def use(label: str) -> None:
        """The connection for the next run: for KEPT the same open one every time, else a new
        one with `label`'s PRAGMAs (Django reads OPTIONS at each connect)."""
        if label == KEPT:
            connections["default"] = kept
            return
        connections["default"] = fresh
        fresh.close()
        fresh.settings_dict["OPTIONS"]["init_command"] = pragmas[label]

    user, _ = User.objects.get_or_create(username="bench", defaults={"is_superuser": True, "is_staff": True})
    client = Client()
    client.force_login(user)

    def run_sql(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            cursor.fetchall()

    def run_page(path: str) -> None:
        response = client.get(path)  # the test client leaves the connection open: use() decides
        assert response.status_code == 200, (path, response.status_code)

    targets = {CONNECT: connection.ensure_connection}
    targets.update({label: (lambda sql=sql: run_sql(sql)) for label, sql in QUERIES.items()})
    targets.update({f"page: `{path}`": (lambda path=path: run_page(path)) for path in PAGES})
    times: dict[str, dict[str, list[float]]] = {
        t: {v: [] for v in VARIANTS if (t, v) != (CONNECT, KEPT)} for t in targets
    }
    for target, run in targets.items():
        runs = repeat * 20 if target == CONNECT else repeat
        for n in range(runs + 1):
            for label in times[target]:
                use(label)
                started = time.perf_counter()
                run()
                if n:
                    times[target][label].append(time.perf_counter() - started)
    connections["default"] = fresh
    fresh.close()
    kept.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child")
    parser.add_argument("--database", type=Path, default=DATABASE)
    parser.add_argument("--visits", type=int, default=VISITS, help="when building the database")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="update the SQLite section of docs/PERFORMANCE.md")
    args = parser.parse_args()
    if args.child == "load":  # in a process of its own, with the defaults' PRAGMAs
        django_setup(f"sqlite:///{args.database.resolve()}")
        print(json.dumps({"seconds": visits_load(visits=args.visits)}))
        return
    if not args.database.exists():
        # Built under another name and renamed when complete: an interrupted load is not reused.
        building = args.database.with_name(args.database.name + ".building")
        building.parent.mkdir(exist_ok=True)
        for stale in building.parent.glob(building.name + "*"):
            stale.unlink()
        out = subprocess.run(
            [sys.executable, __file__, "--child", "load", "--database", str(building), "--visits", str(args.visits)],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        building.rename(args.database)
        seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        print(f"loaded {args.visits:,} visits into {args.database} in {seconds:.0f} s")
    url = f"sqlite:///{args.database.resolve()}"
    django_setup(url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # a database kept from an earlier run: brought up to date
    times = measure(url=url, repeat=args.repeat)
    scale = {t: 1e6 if t == CONNECT else 1000 for t in times}
    results = {
        t: {v: (statistics.median(r) * scale[t], min(r) * scale[t]) for v, r in by_variant.items()}
        for t, by_variant in times.items()
    }
    for target, by_variant in results.items():
        print(target)
        for label, (median, fastest) in by_variant.items():
            print(f"  {label:40} median {median:9.1f}   fastest {fastest:9.1f}")
    if args.write:
        write_report(results=results, database=args.database, repeat=args.repeat)


def write_report(*, results: dict, database: Path, repeat: int) -> None:
    import sqlite3

    with sqlite3.connect(database) as db:
        visits = db.execute("SELECT COUNT(*) FROM visits_visit").fetchone()[0]
        flags = db.execute("SELECT COUNT(*) FROM visits_flag").fetchone()[0]
    lines = [
        "## SQLite settings (`bench/sqlite.py`)",
        "",
        f"Measured {datetime.now().date().isoformat()} on {machine()}.",
        f"{visits:,} visits and {flags:,} flags (bench/_report.py's data), a {database.stat().st_size / 2**20:,.0f} MB"
        " file in the operating system's cache; WAL and `synchronous=NORMAL` in every variant. ms (µs where said),"
        f" median of {repeat} runs (of {repeat * 20} for the connection) and the fastest in brackets; every run on a"
        " new connection, as a request gets (CONN_MAX_AGE 0), except in the last column; the variants take turns"
        " run by run.",
        "",
        "| target | " + " | ".join(VARIANTS) + " | before / the defaults |",
        "|---|" + "---:|" * (len(VARIANTS) + 1),
    ]
    for target, by_variant in results.items():
        cells = " | ".join(
            f"{by_variant[v][0]:,.1f} ({by_variant[v][1]:,.1f})" if v in by_variant else "" for v in VARIANTS
        )
        lines.append(f"| {target} | {cells} | {by_variant[BEFORE][0] / by_variant[DEFAULTS][0]:.2f}x |")
    lines.append("")
    section_write(heading="## SQLite settings (", lines=lines)


if __name__ == "__main__":
    main()

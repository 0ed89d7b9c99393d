"""Archive speed at scale: archive_export and archive_import of 1,000,000 visits (the data set of
bench/reports.py, one visit in a hundred deleted, flagged), with some decisions and rejected items.

    .venv/bin/python bench/archive.py                       # SQLite only
    .venv/bin/python bench/archive.py --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/archive.py --visits 100000       # a quicker look
    .venv/bin/python bench/archive.py --postgres ... --write   # also update docs/PERFORMANCE.md

Each step runs in a fresh process: the export's and the import's rows per second (every row of
every file) and their peak memory (the child's getrusage maxrss, Django included). The import
goes into a fresh database of the same kind, and into the other kind when --postgres is given
(SQLite to PostgreSQL, the laptop's move). Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import VISITS, django_setup, machine, postgres_fresh, section_write, visits_load  # noqa: E402
from _report import child as script_child  # noqa: E402

GOAL_ROWS_PER_SECOND, GOAL_PEAK_MB = 100_000, 200


def load(*, visits: int) -> dict:
    """The shared data set, plus decisions by two reviewers and rejected items."""
    from django.contrib.auth.models import User

    from visits.models import Decision, RejectedItem, Visit

    seconds = visits_load(visits=visits, deleted_every=100)
    reviewers = [User.objects.create_user(f"reviewer{i}") for i in range(2)]
    flagged = Visit.objects.filter(flagged=True).order_by("id").values_list("id", flat=True)[:2000]
    Decision.objects.bulk_create(
        [Decision(visit_id=v, kind="accept", note=f"checked {v}", decided_by=reviewers[v % 2]) for v in flagged]
    )
    RejectedItem.objects.bulk_create(
        [
            RejectedItem(stream="visits", digest=f"{i:064x}", raw='{"data": {"id": "x"}}', reason="no id")
            for i in range(500)
        ]
    )
    return {"seconds": seconds}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export_measure(*, path: str) -> dict:
    from visits.archive.export import archive_export

    result = archive_export(path=Path(path))
    visits = next(f["rows"] for f in result.manifest["files"] if f["name"] == "visits.csv")
    return {
        "rows": result.rows, "visits": visits, "seconds": result.seconds,
        "rows_per_second": result.rows / result.seconds, "peak_mb": peak_mb(), "megabytes": os.path.getsize(path) / 1e6,
    }  # fmt: skip


def import_measure(*, path: str) -> dict:
    from django.core.management import call_command

    from visits.archive.load import archive_import

    call_command("migrate", verbosity=0)
    result = archive_import(path=Path(path))
    rows = sum(result.rows.values())
    return {
        "rows": rows, "seconds": result.seconds, "rows_per_second": rows / result.seconds, "phases": result.phases,
        "load_rows_per_second": rows / result.phases["load"], "flags_equal": result.flags.equal, "peak_mb": peak_mb(),
    }  # fmt: skip


def child(*args: str) -> dict:
    return script_child(__file__, *args)


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def backend_run(*, name: str, source: str, targets: dict[str, str], visits: int, tmp: str) -> dict:
    loaded = child("--child", "load", "--database-url", source, "--visits", str(visits))
    print(f"{name}: loaded {visits:,} visits in {loaded['seconds']:.0f} s (load average {load_average()})")
    path = f"{tmp}/{name}.zip"
    exported = child("--child", "export", "--database-url", source, "--path", path)
    print(
        f"  export: {exported['rows']:,} rows in {exported['seconds']:.1f} s, "
        f"{exported['rows_per_second']:,.0f} rows/s, peak {exported['peak_mb']:.0f} MB, "
        f"{exported['megabytes']:.0f} MB zip (load average {load_average()})"
    )
    imports = {}
    for target, url in targets.items():
        got = child("--child", "import", "--database-url", url, "--path", path)
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in got["phases"].items())
        print(
            f"  import into {target}: {got['seconds']:.1f} s ({phases}), {got['rows_per_second']:,.0f} rows/s "
            f"({got['load_rows_per_second']:,.0f} rows/s loading), peak {got['peak_mb']:.0f} MB, "
            f"flags equal: {got['flags_equal']} (load average {load_average()})"
        )
        imports[target] = got
    return {"export": exported, "imports": imports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child")
    parser.add_argument("--database-url")
    parser.add_argument("--path")
    parser.add_argument("--visits", type=int, default=VISITS)
    parser.add_argument("--postgres", help="server URL of a PostgreSQL to create the bench databases on")
    parser.add_argument("--write", action="store_true", help="update the archive section of docs/PERFORMANCE.md")
    args = parser.parse_args()
    if args.child:
        django_setup(args.database_url)
        if args.child == "load":
            result = load(visits=args.visits)
        elif args.child == "export":
            result = export_measure(path=args.path)
        else:
            result = import_measure(path=args.path)
        print(json.dumps(result))
        return
    started = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        targets = {"SQLite": f"sqlite:///{tmp}/import.sqlite3"}
        if args.postgres:
            targets["PostgreSQL"] = postgres_fresh(args.postgres, "visitsdash_bench_archive_import")
        results["SQLite"] = backend_run(
            name="SQLite", source=f"sqlite:///{tmp}/archive.sqlite3", targets=targets, visits=args.visits, tmp=tmp
        )
        if args.postgres:
            source = postgres_fresh(args.postgres, "visitsdash_bench_archive")
            targets = {
                "PostgreSQL": postgres_fresh(args.postgres, "visitsdash_bench_archive_import"),
                "SQLite": f"sqlite:///{tmp}/import2.sqlite3",
            }
            results["PostgreSQL"] = backend_run(
                name="PostgreSQL", source=source, targets=targets, visits=args.visits, tmp=tmp
            )
    print(f"all done in {time.monotonic() - started:.0f} s")
    for name, result in results.items():
        export = result["export"]
        met = export["rows_per_second"] >= GOAL_ROWS_PER_SECOND and export["peak_mb"] < GOAL_PEAK_MB
        print(
            f"{name} export goal ({GOAL_ROWS_PER_SECOND:,} rows/s under {GOAL_PEAK_MB} MB): "
            + ("met" if met else "MISSED")
        )
    if args.write:
        write_report(results=results, visits=args.visits)


def write_report(*, results: dict, visits: int) -> None:
    lines = [
        "## Archive (`bench/archive.py`)",
        "",
        f"Measured {datetime.now().date().isoformat()} on {machine()}.",
        f"{visits:,} visits (one in a hundred deleted, flagged), 2,000 decisions, 500 rejected items; each step in a"
        " fresh process; rows/s count every row of every file; peak = the process's maxrss, Django included.",
        "",
        "| from | step | seconds | rows/s | peak MB |",
        "|---|---|---:|---:|---:|",
    ]
    for name, result in results.items():
        e = result["export"]
        lines.append(
            f"| {name} | export ({e['megabytes']:.0f} MB zip) | {e['seconds']:.1f} | {e['rows_per_second']:,.0f} "
            f"| {e['peak_mb']:.0f} |"
        )
        for target, i in result["imports"].items():
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in i["phases"].items())
            lines.append(
                f"| {name} | import into {target} ({phases}) | {i['seconds']:.1f} | {i['rows_per_second']:,.0f} | "
                f"{i['peak_mb']:.0f} |"
            )
    lines += ["", f"Goal: the export at {GOAL_ROWS_PER_SECOND:,} rows/s or more under {GOAL_PEAK_MB} MB.", ""]
    section_write(heading="## Archive (", lines=lines)


if __name__ == "__main__":
    main()

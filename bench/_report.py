"""What the benchmarks share: the machine's description, writing their section of
docs/PERFORMANCE.md (replaced in place, other sections kept), a fresh process and a fresh
PostgreSQL database, and the 1,000,000-visit data set of bench/reports.py, bench/pages.py and
bench/flags.py (its generator and its loader)."""

import json
import os
import platform
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE = ROOT / "docs" / "PERFORMANCE.md"

VISITS, REPS, OUTCOMES, DAYS = 1_000_000, 200, 12, 730
END = datetime(2026, 11, 1, tzinfo=UTC)
STATUSES = (
    ("verified",) * 82
    + ("resource_location_too_far",) * 11
    + ("location_unknown",) * 4
    + ("location_services_disabled",) * 3
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def section_write(*, heading: str, lines: list[str]) -> None:
    """Put `lines` under `heading` (a '## ' line that starts them) in docs/PERFORMANCE.md."""
    section = "\n".join(lines)
    text = (
        PERFORMANCE.read_text()
        if PERFORMANCE.exists()
        else "# Performance\n\nFigures printed by the scripts in `bench/`.\n\n"
    )
    start = text.find(heading)
    if start == -1:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section.rstrip() + ("\n\n" + text[end + 1 :] if end != -1 else "")
    PERFORMANCE.write_text(text.rstrip() + "\n")
    print(f"wrote {PERFORMANCE.relative_to(ROOT)}")


def visits_write(rows) -> None:
    """Write (visit id, row) pairs through ingestion's own upsert, 5,000 to a transaction."""
    from django.db import transaction

    from visits.ingest.pages import visits_upsert

    batch: dict[int, dict] = {}
    for visit_id, row in rows:
        batch[visit_id] = row
        if len(batch) == 5000:
            with transaction.atomic():
                visits_upsert(rows=batch)
            batch = {}
    if batch:
        with transaction.atomic():
            visits_upsert(rows=batch)


def child(script: str, *args: str) -> dict:
    """Run a benchmark `script` with `args` in a fresh process; the JSON of its last line."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def postgres_fresh(server: str, name: str) -> str:
    """Drop and create database `name` on the PostgreSQL server at URL `server`; its URL."""
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.rsplit("/", 1)[0] + "/" + name


def django_setup(database_url: str) -> None:
    os.environ.update(
        DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="visitsdash.settings", ALLOWED_HOSTS="testserver"
    )
    import django

    django.setup()


def visit_rows(*, visits: int, deleted_every: int = 0):
    """(id, row) pairs: 200 reps, 12 outcomes, two years, around Chicago; with `deleted_every`,
    every such visit (by id, so the others are the same whatever it is) deleted in Sell a day later."""
    rng = random.Random(1)
    for visit_id in range(1, visits + 1):
        at = END - timedelta(seconds=rng.randrange(DAYS * 86400))
        status = rng.choice(STATUSES)
        located = status in ("verified", "resource_location_too_far")
        deleted = bool(deleted_every) and visit_id % deleted_every == 0
        yield (
            visit_id,
            {
                "rep_id": 1000 + rng.randrange(REPS),
                "resource_type": rng.choice(("lead", "contact")),
                "resource_id": rng.randrange(1, 50_000),
                "visited_at": at,
                "created_at": at + timedelta(minutes=5),
                "summary": "Met the buyer, left samples, follow up next week.",
                "outcome_id": 100 + rng.randrange(OUTCOMES),
                "latitude": 41.8 + rng.random() if located else None,
                "longitude": -87.6 + rng.random() if located else None,
                "verification_status": status,
                "sequence": 2 if deleted else 1,
                "event_time": at + timedelta(minutes=5),
                "deleted_at": at + timedelta(days=1) if deleted else None,
            },
        )


def visits_load(*, visits: int, deleted_every: int = 0, flag: bool = True) -> float:
    """Migrate, write the team and `visits` visits (of visit_rows) through ingest.visits_upsert,
    and flag them (unless not `flag`: bench/flags.py times that); returns the seconds the writing
    of the visits took."""
    from django.core.management import call_command

    from visits.models import Outcome, Rep
    from visits.review.flags import flags_rebuild

    call_command("migrate", verbosity=0)
    Rep.objects.bulk_create([Rep(id=1000 + i, name=f"Rep {i:03d}") for i in range(REPS)])
    Outcome.objects.bulk_create([Outcome(id=100 + i, name=f"Outcome {i:02d}") for i in range(OUTCOMES)])
    started = time.perf_counter()
    visits_write(visit_rows(visits=visits, deleted_every=deleted_every))
    seconds = time.perf_counter() - started
    if flag:
        flags_rebuild()  # the reports count flagged visits, the queue shows them: measure with flags present
    return seconds


def database_settle() -> None:
    """What autovacuum does soon after a bulk load on PostgreSQL: statistics, and the visibility
    map that lets a covering index answer on its own (nothing to do on SQLite)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def server_wait(port: int) -> None:
    """Until a server (runserver, started by the bench) answers on 127.0.0.1:`port`, ten seconds at most."""
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=1)
            return
        except OSError:
            time.sleep(0.1)

"""Flag speed at scale: `flags_rebuild` over 1,000,000 visits, and the refresh after a small sync.

    .venv/bin/python bench/flags.py                       # SQLite only
    .venv/bin/python bench/flags.py --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/flags.py --postgres ... --write   # also update docs/PERFORMANCE.md
    .venv/bin/python bench/flags.py --sqlite var/flags.sqlite3  # keep the SQLite database (and reuse it)

Builds the reports benchmark's data set (_report.visits_load: 200 reps of about 5,000 visits,
without flags), then, each step in a fresh process:
1. flags_rebuild() with no flag stored (the first build), then again with nothing changed;
2. --rounds syncs that each touch 2 of the 200 reps: per rep a visit created, one moved in time,
   one moved in space, one moved to the other rep and one deleted, as Firehose items through
   items_parse and page_apply (a sync's own path), each followed by the flags_refresh() a pull
   runs. It prints the median refresh, and checks both reps' stored flags against a
   computation from scratch after every round.
Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import (  # noqa: E402
    REPS,
    VISITS,
    child,
    database_settle,
    django_setup,
    machine,
    postgres_fresh,
    section_write,
    visits_load,
)

TOUCHED = (1017, 1123)  # the two reps each sync touches
OWNER = "bench"


def load(*, visits: int) -> dict:
    """The shared data set; or, for a kept SQLite database that holds visits, those visits
    with their flags removed."""
    from django.core.management import call_command
    from django.db.models import Q

    from visits.models import DirtyRep, Flag, FlagWindow, Visit

    call_command("migrate", verbosity=0)
    if Visit.objects.exists():
        Flag.objects.all().delete()
        Visit.objects.filter(Q(flagged=True) | ~Q(flag_rules=0) | ~Q(risk=0) | ~Q(risk_tier="")).update(
            flagged=False, flag_rules=0, risk=0, risk_tier=""
        )  # as a first build finds them
        DirtyRep.objects.all().delete()
        FlagWindow.objects.all().delete()
        return {"seconds": 0.0, "visits": Visit.objects.count(), "reused": True}
    seconds = visits_load(visits=visits, flag=False)
    database_settle()
    return {"seconds": seconds, "visits": Visit.objects.count(), "reused": False}


def rebuild() -> dict:
    from visits.models import Flag
    from visits.review.flags import flags_rebuild

    started, on_cpu = time.perf_counter(), time.process_time()
    reps, changes = flags_rebuild()
    seconds, cpu = time.perf_counter() - started, time.process_time() - on_cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "reps": reps, "changes": changes, "flags": Flag.objects.count()}


def visit_item(visit_id: int, sequence: int, row: dict | None) -> dict:
    """A Firehose item: the snapshot `row` (as Visit.objects.values() gives it), or an id-only delete."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    meta = {"type": "visit", "event_type": "updated" if row else "deleted", "sequence": sequence, "event_time": stamp}
    if row is None:
        return {"data": {"id": visit_id}, "meta": meta}
    data = {
        "id": visit_id,
        "creator_id": row["rep_id"],
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "summary": row["summary"],
        "visited_at": row["visited_at"].isoformat(),
        "created_at": row["created_at"].isoformat(),
        "outcome": None if row["outcome_id"] is None else {"id": row["outcome_id"], "name": ""},
        "sales_rep_location": {
            "latitude": row["latitude"],
            "longitude": row["longitude"],
            "verification_status": row["verification_status"],
        },
    }
    return {"data": data, "meta": meta}


def sync_items(*, rng: random.Random) -> list[dict]:
    """Per touched rep: one visit created, one moved in time, one moved in space, one moved to
    the other rep, one deleted."""
    from django.db.models import Max

    from visits.models import Visit

    top = Visit.objects.aggregate(sequence=Max("sequence"), id=Max("id"))
    sequence, new_id = top["sequence"] + 1, top["id"] + 1
    items = []
    for rep_id, other in (TOUCHED, TOUCHED[::-1]):
        ids = list(Visit.objects.live().filter(rep_id=rep_id).values_list("id", flat=True))
        chosen = rng.sample(ids, 4)
        rows = {r["id"]: r for r in Visit.objects.filter(id__in=chosen).values()}
        in_time, in_space, moved, deleted = (rows[i] for i in chosen)
        shift = timedelta(minutes=rng.randrange(-180, 180))
        in_time.update(visited_at=in_time["visited_at"] + shift, created_at=in_time["created_at"] + shift)
        if in_space["latitude"] is not None:
            in_space.update(latitude=41.8 + rng.random(), longitude=-87.6 + rng.random())
        moved["rep_id"] = other
        created = dict(in_time, id=new_id, latitude=41.8 + rng.random(), longitude=-87.6 + rng.random())
        created.update(visited_at=created["visited_at"] + timedelta(minutes=7), verification_status="verified")
        for row in (in_time, in_space, moved, created):
            items.append(visit_item(row["id"], sequence, row))
        items.append(visit_item(deleted["id"], sequence, None))
        new_id += 1
    return items


def refresh(*, rounds: int) -> dict:
    """`rounds` syncs touching the two reps, each followed by flags_refresh(), both timed."""
    from django.db import transaction

    from visits.ingest.pages import page_apply
    from visits.models import Flag, Stream, SyncState, Visit
    from visits.review import flags
    from visits.sell.events import items_parse

    SyncState.objects.update_or_create(stream=Stream.VISITS, defaults={"lock_owner": OWNER})
    rng = random.Random(5)
    figures: dict[str, list[float]] = {"sync_ms": [], "refresh_ms": [], "changes": [], "events": []}
    for _ in range(rounds):
        items = sync_items(rng=rng)
        started = time.perf_counter()
        with transaction.atomic():
            page_apply(stream=Stream.VISITS, events=items_parse(stream=Stream.VISITS, items=items), position="p",
                       at_top=True, owner=OWNER, lease=timedelta(seconds=60))  # fmt: skip
        figures["sync_ms"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        reps, changes = flags.flags_refresh()
        figures["refresh_ms"].append((time.perf_counter() - started) * 1000)
        figures["changes"].append(changes)
        figures["events"].append(len(items))
        for rep_id in TOUCHED:  # the refresh left both reps as a computation from scratch would
            wanted = {key: (f.numbers, f.sentence) for key, f in flags.flags_expected(rep_ids=[rep_id]).items()}
            stored = {(f.visit_id, f.rule): (f.numbers, f.sentence) for f in Flag.objects.filter(visit__rep_id=rep_id)}
            assert stored == wanted, f"rep {rep_id}: the stored flags differ from a computation from scratch"
            flagged = set(Visit.objects.live().filter(rep_id=rep_id, flagged=True).values_list("id", flat=True))
            assert flagged == {visit_id for visit_id, _ in wanted}, f"rep {rep_id}: Visit.flagged differs"
    return figures


def backend_run(*, name: str, database_url: str, visits: int, rounds: int) -> dict:
    loaded = child(__file__, "--child", "load", "--database-url", database_url, "--visits", str(visits))
    how = "reused" if loaded["reused"] else f"loaded in {loaded['seconds']:.0f} s"
    print(f"{name}: {loaded['visits']:,} visits ({how})")
    first = child(__file__, "--child", "rebuild", "--database-url", database_url)
    print(
        f"  flags_rebuild, first build     {first['seconds']:7.1f} s (CPU {first['cpu_seconds']:.1f} s)"
        f"  ({first['changes']:,} changes, {first['flags']:,} flags)"
    )
    again = child(__file__, "--child", "rebuild", "--database-url", database_url)
    print(
        f"  flags_rebuild, nothing changed {again['seconds']:7.1f} s (CPU {again['cpu_seconds']:.1f} s)"
        f"  ({again['changes']:,} changes)"
    )
    synced = child(__file__, "--child", "refresh", "--database-url", database_url, "--rounds", str(rounds))
    refresh_ms, sync_ms = statistics.median(synced["refresh_ms"]), statistics.median(synced["sync_ms"])
    print(
        f"  refresh after a sync touching 2 of {REPS} reps: median {refresh_ms:.0f} ms"
        f" (min {min(synced['refresh_ms']):.0f}, max {max(synced['refresh_ms']):.0f}; {rounds} rounds of"
        f" {synced['events'][0]} events, applied in median {sync_ms:.0f} ms; median"
        f" {statistics.median(synced['changes']):.0f} flag changes)"
    )
    return {"first": first, "again": again, "refresh": synced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["load", "rebuild", "refresh"])
    parser.add_argument("--database-url")
    parser.add_argument("--visits", type=int, default=VISITS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sqlite", help="a SQLite file to keep the database in (reused if it holds visits)")
    parser.add_argument("--postgres", help="server URL of a PostgreSQL to create the bench database on")
    parser.add_argument("--write", action="store_true", help="update the flags section of docs/PERFORMANCE.md")
    args = parser.parse_args()
    if args.child:
        django_setup(args.database_url)
        if args.child == "load":
            result = load(visits=args.visits)
        elif args.child == "rebuild":
            result = rebuild()
        else:
            result = refresh(rounds=args.rounds)
        print(json.dumps(result))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = args.sqlite or f"{tmp}/flags.sqlite3"
        results["SQLite"] = backend_run(name="SQLite", database_url=f"sqlite:///{path}", visits=args.visits,
                                        rounds=args.rounds)  # fmt: skip
    if args.postgres:
        url = postgres_fresh(args.postgres, "visitsdash_bench_flags")
        results["PostgreSQL"] = backend_run(name="PostgreSQL", database_url=url, visits=args.visits,
                                            rounds=args.rounds)  # fmt: skip
    if args.write:
        write_report(results=results, visits=args.visits, rounds=args.rounds)


def write_report(*, results: dict, visits: int, rounds: int) -> None:
    lines = [
        "## Flags (`bench/flags.py`)",
        "",
        f"Measured {datetime.now().date().isoformat()} on {machine()}.",
        f"{visits:,} visits ({REPS} reps of about {visits // REPS:,}, the reports benchmark's data set);"
        " `flags_rebuild()` timed in a fresh process, first with no flag stored, then again with nothing"
        f" changed; the refresh: median of {rounds} syncs, each touching 2 of the {REPS} reps (per rep a visit"
        " created, one moved in time, one in space, one to the other rep, one deleted) through `page_apply`,"
        " then `flags_refresh()` as a pull runs it.",
        "",
        "| what | " + " | ".join(results) + " |",
        "|---|" + "---:|" * len(results),
        "| `flags_rebuild`, first build | "
        + " | ".join(f"{r['first']['seconds']:.1f} s" for r in results.values())
        + " |",
        "| `flags_rebuild`, nothing changed | "
        + " | ".join(f"{r['again']['seconds']:.1f} s" for r in results.values())
        + " |",
        "| refresh after a sync touching 2 of 200 reps | "
        + " | ".join(f"{statistics.median(r['refresh']['refresh_ms']):.0f} ms" for r in results.values())
        + " |",
        "| (that sync's `page_apply`) | "
        + " | ".join(f"{statistics.median(r['refresh']['sync_ms']):.0f} ms" for r in results.values())
        + " |",
        "| flags stored | " + " | ".join(f"{r['first']['flags']:,}" for r in results.values()) + " |",
        "",
        "Goals: `flags_rebuild` within 20 s, first build and no change; the refresh after a sync touching 1% of"
        " the reps within 100 ms.",
        "",
    ]
    section_write(heading="## Flags (", lines=lines)


if __name__ == "__main__":
    main()

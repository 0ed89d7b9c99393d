"""Flags recomputed around changes (review/flags.py): what ingestion records, and random
creates, updates, moves and deletes through the real ingestion path, after each of which the
stored flags must equal a computation from scratch."""

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction

from visits.ingest.pages import page_apply
from visits.models import DirtyRep, Flag, FlagWindow, Rep, SyncState
from visits.review import flags
from visits.sell.events import items_parse

from .conftest import assert_flags_match

pytestmark = pytest.mark.django_db

UTC = ZoneInfo("UTC")
T0 = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
REPS = (1, 2, 3)
# A few spots 10 to 40 km apart (impossible travel within minutes, coordinate reuse at each),
# no position, and 0,0.
SPOTS = [(41.88, -87.63), (41.97, -87.66), (41.79, -87.60), (42.05, -87.69), (41.75, -87.95), None, (0.0, 0.0)]
STATUSES = ["verified"] * 6 + ["resource_location_too_far", "location_unknown"]


@pytest.fixture
def rules_that_fire_often(settings):
    """Thresholds at which a few hundred random visits set off every rule."""
    settings.FLAG_MAX_SPEED_KMH = 150
    settings.FLAG_REUSE_CUSTOMERS = 2
    settings.FLAG_LATE_HOURS = 3
    settings.FLAG_BURST_VISITS = 3
    settings.FLAG_BURST_MINUTES = 10


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Stream:
    """Visits as Sell holds them, and the Firehose items that tell of their changes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.visits: dict[int, dict] = {}  # id -> the latest snapshot (data), None when deleted
        self.sequence: dict[int, int] = {}
        self.next_id = 1

    def item(self, visit_id: int, *, deleted: bool = False, id_only: bool = False, stale: bool = False) -> dict:
        sequence = self.sequence[visit_id] - 1 if stale else self.sequence.get(visit_id, 0) + 1
        if not stale:
            self.sequence[visit_id] = sequence
        event_type = "deleted" if deleted else ("created" if sequence == 1 else "updated")
        meta = {"type": "visit", "event_type": event_type, "sequence": max(sequence, 1), "event_time": stamp(T0)}
        return {"data": {"id": visit_id} if id_only else dict(self.visits[visit_id]), "meta": meta}

    def snapshot(self, visit_id: int, rep: int) -> dict:
        rng = self.rng
        visited = T0 + timedelta(minutes=rng.choice((rng.uniform(0, 3000), rng.uniform(0, 120))))
        created = visited + timedelta(minutes=rng.choice((0, 5, rng.uniform(0, 400))))
        spot = rng.choice(SPOTS)
        return {
            "id": visit_id, "creator_id": rep, "resource_type": "lead", "summary": "",
            "resource_id": rng.choice((None, *range(1, 6))), "outcome": None,
            "visited_at": stamp(visited), "created_at": stamp(created),
            "sales_rep_location": {"latitude": spot and spot[0], "longitude": spot and spot[1],
                                   "verification_status": rng.choice(STATUSES)},
        }  # fmt: skip

    def changes(self, count: int) -> list[dict]:
        """`count` random changes: mostly creates at first, then every kind."""
        rng, items = self.rng, []
        for _ in range(count):
            held = [vid for vid, data in self.visits.items() if data is not None]
            gone = [vid for vid, data in self.visits.items() if data is None]
            kind = rng.choice(("create",) * 3 + ("update",) * 4 + ("move", "delete", "erase", "restore", "stale"))
            if kind == "create" or not held:
                visit_id, self.next_id = self.next_id, self.next_id + 1
                self.visits[visit_id] = self.snapshot(visit_id, rng.choice(REPS))
                items.append(self.item(visit_id))
                continue
            visit_id = rng.choice(held)
            data = self.visits[visit_id]
            if kind == "update":  # some of what the rules read, or only what they do not
                fresh = self.snapshot(visit_id, data["creator_id"])
                for key in rng.sample(["visited_at", "created_at", "sales_rep_location", "resource_id", "summary"],
                                      rng.randrange(1, 4)):  # fmt: skip
                    data[key] = fresh[key] if key != "summary" else f"note {rng.random()}"
                items.append(self.item(visit_id))
            elif kind == "move":
                data["creator_id"] = rng.choice([r for r in REPS if r != data["creator_id"]])
                items.append(self.item(visit_id))
            elif kind == "delete":  # an id-only delete
                items.append(self.item(visit_id, deleted=True, id_only=True))
                self.visits[visit_id] = None
            elif kind == "erase":  # a delete carrying the snapshot
                items.append(self.item(visit_id, deleted=True))
                self.visits[visit_id] = None
            elif kind == "restore" and gone:
                visit_id = rng.choice(gone)
                self.visits[visit_id] = self.snapshot(visit_id, rng.choice(REPS))
                items.append(self.item(visit_id))
            elif kind == "stale":  # an older event again: a no-op
                items.append(self.item(visit_id, stale=True))
        return items


def apply(items: list[dict]) -> None:
    with transaction.atomic():
        page_apply(stream="visits", events=items_parse(stream="visits", items=items), position="p", at_top=True,
                   owner="me", lease=timedelta(seconds=60))  # fmt: skip


@pytest.fixture
def stream(db):
    SyncState.objects.create(stream="visits", lock_owner="me")
    Rep.objects.bulk_create([Rep(id=r, name=f"Rep {r}") for r in REPS])


@pytest.mark.parametrize("seed", [1, 2])
def test_random_changes_keep_the_flags_equal_to_a_computation_from_scratch(
    seed, stream, rules_that_fire_often, monkeypatch
):
    """A sync's pages of random creates, updates, moves, deletes, restores and stale events;
    after each, the refresh leaves the flags, Visit.flagged and the tallies as from scratch."""
    recomputed = {"windows": 0, "whole": 0}
    for name, kind in (("windows_flag", "windows"), ("rep_flag", "whole")):
        real = getattr(flags, name)

        def counting(*args, _real=real, _kind=kind, **kwargs):
            recomputed[_kind] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(flags, name, counting)
    monkeypatch.setattr(flags, "WINDOW_LIMIT", 12)  # a big page now and then goes whole
    sell = Stream(seed)
    apply(sell.changes(200))  # a first sync
    flags.flags_refresh()
    assert_flags_match()
    for _ in range(150):
        apply(sell.changes(sell.rng.choice((1, 2, 3, 8, 8, 40))))
        flags.flags_refresh()
        assert_flags_match()
    assert recomputed["whole"] > 20 and recomputed["windows"] > 250, recomputed
    assert {"impossible_travel", "coordinate_reuse", "burst", "late_logging", "impossible_coordinates",
            "resource_location_too_far"} <= set(Flag.objects.values_list("rule", flat=True))  # fmt: skip


def test_a_change_the_rules_do_not_read_marks_nothing(stream):
    sell = Stream(3)
    apply(sell.changes(5))
    flags.flags_refresh()
    visit_id = next(vid for vid, data in sell.visits.items() if data)
    sell.visits[visit_id]["summary"] = "a longer note"
    apply([sell.item(visit_id)])
    assert not DirtyRep.objects.exists() and not FlagWindow.objects.exists()


def test_a_change_records_the_former_place_and_the_rep_it_moved_to(stream):
    sell = Stream(4)
    sell.visits[1] = sell.snapshot(1, 1)
    apply([sell.item(1)])
    flags.flags_refresh()
    sell.visits[1]["creator_id"] = 2
    apply([sell.item(1)])
    windows = {(w.rep_id, w.visit_id, w.visited_at is not None) for w in FlagWindow.objects.all()}
    assert windows == {(1, 1, True), (2, 1, False)}  # where it was, with its facts; where it is
    assert set(DirtyRep.objects.values_list("rep_id", "whole", "windows")) == {(1, False, 1), (2, False, 1)}


def test_a_rep_with_too_many_changes_is_marked_whole(stream):
    sell = Stream(5)
    for visit_id in range(1, flags.WINDOW_LIMIT + 2):
        sell.visits[visit_id] = sell.snapshot(visit_id, 1)
    apply([sell.item(visit_id) for visit_id in sell.visits])
    assert list(DirtyRep.objects.values_list("rep_id", "whole")) == [(1, True)]
    assert not FlagWindow.objects.exists()  # a whole recompute needs none
    flags.flags_refresh()
    assert_flags_match()


@pytest.mark.parametrize("in_bulk", [True, False])
def test_many_visits_flagged_at_once_move_the_tallies_in_bulk(in_bulk, serve, small_team, monkeypatch):
    """SQLite drops the tally triggers for a big write of Visit.flagged and moves the tallies in
    grouped statements (tallies.flagged_in_bulk); the triggers are back after it."""
    from visits.ingest import tallies
    from visits.ingest.sync import streams_sync

    serve(small_team)
    streams_sync()
    monkeypatch.setattr(tallies, "BULK_FROM", 1 if in_bulk else 10**9)
    flags.flags_rebuild()
    assert_flags_match()  # the tallies' flagged counts too
    assert Flag.objects.exists()
    names = set(tallies.TRIGGER_SET.names(connection.vendor))
    assert names <= tallies.triggers_installed()

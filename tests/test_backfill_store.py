"""The backfill's store step (ingest/history.py) against a real database: what a Core API visit
becomes, what it may and may not change of what the Firehose delivered, and the Firehose winning
afterwards (ingest/pages.py's upsert)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from visits.ingest.history import history_store, resurrections_undo
from visits.ingest.sync import streams_sync
from visits.models import DeletedVisit, MonthTally, Outcome, RejectedItem, Rep, Visit, VisitSource
from visits.review.flags import flags_refresh
from visits.sell.core_items import history_items_parse

from .conftest import assert_db_matches, assert_flags_match, assert_tallies_match

pytestmark = pytest.mark.django_db


def v2_item(snapshot: dict, *, address: str = "", updated_at: str | None = None) -> dict:
    """A Firehose snapshot as the Core API lists the same visit: flat outcome_id, no coordinates,
    times with milliseconds."""

    def core_time(text: str) -> str:
        return text.replace("Z", ".000Z")

    return {
        "data": {
            "id": snapshot["id"],
            "creator_id": snapshot["creator_id"],
            "outcome_id": (snapshot.get("outcome") or {}).get("id"),
            "resource_type": snapshot["resource_type"],
            "resource_id": snapshot["resource_id"],
            "visited_at": core_time(snapshot["visited_at"]),
            "created_at": core_time(snapshot["created_at"]),
            "updated_at": core_time(updated_at or snapshot["created_at"]),
            "summary": snapshot["summary"],
            "rep_location_verification_status": snapshot["sales_rep_location"]["verification_status"],
            "resource_address": address,
        },
        "meta": {"type": "visit"},
    }


def store(items: list[dict]):
    return history_store(parsed=history_items_parse(items=items), now=timezone.now())


def live_snapshots(data) -> dict[int, dict]:
    return {vid: v["snapshot"] for vid, v in data.expected_visits().items() if v["snapshot"] and not v["deleted"]}


def test_history_visit_is_stored_without_position_and_counted_and_flagged(small_team):
    snapshots = live_snapshots(small_team)
    result = store([v2_item(s, address=f"{vid} Main St") for vid, s in snapshots.items()])
    assert result.stored == len(snapshots) > 0
    flags_refresh()
    for visit in Visit.objects.all():
        snap = snapshots[visit.id]
        assert visit.source == VisitSource.CORE_API
        assert (visit.latitude, visit.longitude, visit.sequence) == (None, None, 0)
        assert visit.event_time == visit.created_at  # updated_at: never edited
        assert visit.resource_address == f"{visit.id} Main St"
        assert visit.verification_status == snap["sales_rep_location"]["verification_status"]
        assert visit.outcome_id == snap["outcome"]["id"]
        assert visit.local_day == visit.visited_at.date()  # DISPLAY_TIME_ZONE is UTC in tests
    assert set(Rep.objects.values_list("id", flat=True)) == {s["creator_id"] for s in snapshots.values()}
    assert set(Outcome.objects.values_list("id", flat=True)) == {s["outcome"]["id"] for s in snapshots.values()}
    assert sum(MonthTally.objects.values_list("visits", flat=True)) == len(snapshots)
    assert_tallies_match()
    assert_flags_match()  # too-far and unknown-location statuses flag history visits too


def test_second_store_of_the_same_page_changes_nothing(small_team):
    items = [v2_item(s, address="1 Elm St") for s in live_snapshots(small_team).values()]
    store(items)
    before = list(Visit.objects.order_by("id").values())
    again = store(items)
    assert (again.stored, again.updated, again.addresses) == (0, 0, 0)
    assert list(Visit.objects.order_by("id").values()) == before


def test_held_firehose_visits_get_only_their_address(serve, small_team):
    serve(small_team)
    streams_sync()
    before = {v["id"]: v for v in Visit.objects.values()}
    items = []
    for vid, snap in live_snapshots(small_team).items():
        other = dict(snap, summary="changed in the Core API", creator_id=snap["creator_id"])
        other["sales_rep_location"] = {**snap["sales_rep_location"], "verification_status": "location_unknown"}
        items.append(v2_item(other, address=f"{vid} Oak Ave", updated_at="2030-01-01T00:00:00Z"))
    result = store(items)
    assert result.stored == 0 and result.addresses == len(items) > 0
    for visit in Visit.objects.values():
        want = dict(before[visit["id"]])
        if visit["deleted_at"] is None:
            want["resource_address"] = f"{visit['id']} Oak Ave"
        assert visit == want
    assert_db_matches(small_team)


def test_visit_deleted_in_the_firehose_never_comes_back(serve, small_team):
    serve(small_team)
    streams_sync()
    flags_refresh()
    expected = small_team.expected_visits()
    deleted = {vid: v for vid, v in expected.items() if v["deleted"] and v["snapshot"]}
    unseen = [vid for vid, v in expected.items() if v["snapshot"] is None]
    assert deleted and unseen and DeletedVisit.objects.filter(id__in=unseen).exists()
    items = [v2_item(v["snapshot"]) for v in deleted.values()]
    # A tombstoned visit the Core API still lists (the demo's lists_deleted knob).
    template = next(iter(deleted.values()))["snapshot"]
    items += [v2_item(dict(template, id=vid)) for vid in unseen]
    result = store(items)
    assert result.stored == 0 and result.deleted_kept == len(items)
    assert not Visit.objects.filter(id__in=unseen).exists()
    assert Visit.objects.filter(id__in=list(deleted), deleted_at__isnull=True).count() == 0
    assert_db_matches(small_team)


def test_resurrected_history_visit_is_deleted_again():
    template = {
        "id": 90_001, "creator_id": 7, "outcome": {"id": 3}, "resource_type": "lead", "resource_id": 5,
        "visited_at": "2026-01-05T10:00:00Z", "created_at": "2026-01-05T10:05:00Z", "summary": "",
        "sales_rep_location": {"verification_status": "verified"},
    }  # fmt: skip
    store([v2_item(template)])
    # As if the Firehose's delete of a visit it never held landed while that page was stored.
    DeletedVisit.objects.create(id=90_001, sequence=4, deleted_at=timezone.now())
    assert resurrections_undo() == 1
    visit = Visit.objects.get(id=90_001)
    assert visit.deleted_at is not None and visit.sequence == 4 and visit.source == VisitSource.FIREHOSE
    assert not MonthTally.objects.filter(visits__gt=0).exists()


def test_firehose_wins_afterwards_and_keeps_the_address(serve, small_team):
    snapshots = live_snapshots(small_team)
    store([v2_item(s, address=f"{vid} Pine Rd", updated_at="2000-01-01T00:00:00Z") for vid, s in snapshots.items()])
    flags_refresh()
    serve(small_team)
    results = streams_sync()
    assert [r.error for r in results] == ["", ""]
    flags_refresh()
    assert_db_matches(small_team)  # coordinates, sequences, statuses, deletes: the Firehose's
    assert not Visit.objects.filter(source=VisitSource.CORE_API).exists()
    for visit in Visit.objects.filter(id__in=list(snapshots)):
        assert visit.resource_address == f"{visit.id} Pine Rd"
    assert_flags_match()


def test_history_visit_changed_in_sell_is_rewritten_but_not_one_the_firehose_delivered():
    base = {
        "id": 91_001, "creator_id": 8, "outcome": {"id": 3}, "resource_type": "lead", "resource_id": 5,
        "visited_at": "2026-01-05T10:00:00Z", "created_at": "2026-01-05T10:05:00Z", "summary": "first",
        "sales_rep_location": {"verification_status": "verified"},
    }  # fmt: skip
    store([v2_item(base)])
    later = dict(base, summary="edited", outcome={"id": 4})
    result = store([v2_item(later, updated_at="2026-01-06T09:00:00Z")])
    assert result.updated == 1
    visit = Visit.objects.get(id=91_001)
    assert (visit.summary, visit.outcome_id, visit.source) == ("edited", 4, VisitSource.CORE_API)
    assert visit.event_time == visit.created_at + timedelta(hours=22, minutes=55)
    Visit.objects.filter(id=91_001).update(sequence=2, source=VisitSource.FIREHOSE)
    store([v2_item(dict(base, summary="older news"), updated_at="2026-01-07T09:00:00Z")])
    assert Visit.objects.get(id=91_001).summary == "edited"
    flags_refresh()
    assert_flags_match()


def test_malformed_core_items_become_rejected_items_and_never_stop_the_page():
    good = {
        "id": 92_001, "creator_id": 9, "outcome": None, "resource_type": "contact", "resource_id": None,
        "visited_at": "2026-01-05T10:00:00Z", "created_at": "2026-01-05T10:05:00Z", "summary": "=cmd|' /C calc'!A0",
        "sales_rep_location": {"verification_status": "location_unknown"},
    }  # fmt: skip
    bad = [
        v2_item(dict(good, id=92_002, visited_at="yesterday")),
        {"data": dict(v2_item(dict(good, id=92_003))["data"], rep_location_verification_status=["verified"])},
        {"data": dict(v2_item(dict(good, id=92_004))["data"], summary="lone \ud800 surrogate")},
        "not an object",
    ]
    result = store([bad[0], v2_item(good, address="<script>x</script>"), *bad[1:]])
    assert result.stored == 1 and result.rejected == len(bad)
    assert Visit.objects.get(id=92_001).resource_address == "<script>x</script>"
    reasons = list(RejectedItem.objects.values_list("reason", flat=True))
    assert all(reason.startswith("Core API visit: ") for reason in reasons), reasons

"""The far_from_customer flag and the risk of flagged visits: the rule's threshold and sentence, a
customer's address marked wrong dropping both distance flags, the flags following the customers'
points without a rebuild, the risk's order on hand-made cases, and the stored risk kept equal to a
computation from scratch through refreshes, decisions, deletes and rebuilds."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import transaction

from visits.archive.load import flags_check
from visits.geo.customers import customers_refresh, visits_customer_write
from visits.ingest.pages import page_apply
from visits.models import (
    AcceptReason,
    Customer,
    Decision,
    DecisionKind,
    DirtyRep,
    Flag,
    GeocodeStatus,
    Rep,
    SyncState,
    Visit,
)
from visits.review import flags, rules
from visits.review.queue import decisions_record
from visits.review.rules import VisitFacts, visit_risk
from visits.sell.events import items_parse
from visits.tasks import customers_refresh_task

from .conftest import assert_flags_match
from .test_customers import SHOP, offset, visit_add

T0 = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)


def facts(vid, *, metres=None, location="learned", wrong=False, status="verified"):
    return VisitFacts(vid, T0, T0, 41.0, -87.0, status, ("lead", vid), metres, location if metres else "", wrong)


def far(km, location="learned"):
    return ("far_from_customer", {"km": km, "location": location})


# --- The rule ----------------------------------------------------------------------------------


def test_far_from_customer_flags_past_its_threshold_with_the_km_in_its_sentence(settings):
    settings.FLAG_CUSTOMER_KM = 5.0
    visits = [facts(1, metres=5000.0), facts(2, metres=5000.4), facts(3, metres=12_345.0, location="geocoded"),
              facts(4), facts(5, metres=80.0)]  # fmt: skip
    found = {f.visit_id: f for f in rules.visit_findings(visits) if f.rule == "far_from_customer"}
    assert set(found) == {2, 3}  # more than 5 km: exactly 5 km is not
    assert found[3].sentence == "12.3 km from the customer's geocoded point."
    assert found[3].numbers == {"km": 12.3, "location": "geocoded"}
    assert found[2].sentence == "5.0 km from the customer's learned point."
    settings.FLAG_CUSTOMER_KM = 10.0
    assert {f.visit_id for f in rules.visit_findings(visits) if f.rule == "far_from_customer"} == {3}
    assert (
        "Far from the customer",
        "more than 10 km from the customer's point, unless its address is marked wrong",
    ) in (rules.rule_thresholds())


def test_an_address_marked_wrong_raises_neither_distance_flag():
    visits = [facts(1, metres=30_000.0, status="resource_location_too_far"),
              facts(2, metres=30_000.0, status="resource_location_too_far", wrong=True),
              facts(3, status="location_unknown", wrong=True)]  # fmt: skip
    found = {(f.visit_id, f.rule) for f in rules.visit_findings(visits)}
    assert found == {(1, "far_from_customer"), (1, "resource_location_too_far"), (3, "location_unknown")}


# --- Risk on hand-made cases ---------------------------------------------------------------------


def test_risk_orders_the_hand_made_cases_and_rejections_raise_it():
    travel = visit_risk(flags=[("impossible_travel", {"km": 300})], rejected=0)
    far_30 = visit_risk(flags=[far(30.0)], rejected=0)
    far_6 = visit_risk(flags=[far(6.0)], rejected=0)
    unknown = visit_risk(flags=[("location_unknown", {})], rejected=0)
    assert travel.score > far_30.score > far_6.score > unknown.score > 0
    assert (travel.score, far_30.score, far_6.score, unknown.score) == (80, 78, 39, 15)
    assert (travel.tier, far_30.tier, far_6.tier, unknown.tier) == ("high", "high", "low", "low")
    # Far grows with the km, log-scaled, to RISK_FAR_MAX from RISK_FAR_FULL_KM on.
    scores = [visit_risk(flags=[far(km)], rejected=0).score for km in (5.1, 10, 20, 50, 500)]
    assert scores == sorted(scores) and scores[-2] == scores[-1] == 90 and scores[0] == 35
    # A rep with rejected visits: 5 each, at most 20.
    assert [visit_risk(flags=[far(6.0)], rejected=n).score for n in (0, 1, 2, 4, 9)] == [39, 44, 49, 59, 59]
    assert visit_risk(flags=[far(6.0)], rejected=1).tier == "medium"
    # Each flag after the weightiest adds 10; never above 100.
    both = visit_risk(flags=[("location_unknown", {}), ("late_logging", {"hours": 30})], rejected=0)
    assert (both.score, both.tier) == (35, "low")
    assert both.why == "Logged late 25 + 1 more flag 10 = 35"
    most = visit_risk(flags=[("impossible_travel", {}), ("coordinate_reuse", {}), far(60.0)], rejected=4)
    assert (most.score, most.tier) == (100, "high")
    assert most.why.endswith("= 100 (at most 100)") and most.why.startswith("Far from the customer (60.0 km) 90")
    assert visit_risk(flags=[], rejected=3) == rules.NO_RISK


def test_the_weights_and_tiers_come_from_settings(settings):
    settings.RISK_WEIGHTS = {**settings.RISK_WEIGHTS, "location_unknown": 45}
    settings.RISK_MEDIUM_FROM, settings.RISK_HIGH_FROM = 30, 45
    assert visit_risk(flags=[("location_unknown", {})], rejected=0)[:2] == (45, "high")
    assert visit_risk(flags=[("late_logging", {})], rejected=0)[:2] == (25, "low")
    assert visit_risk(flags=[("late_logging", {})], rejected=1)[:2] == (30, "medium")


# --- Stored with the flags -----------------------------------------------------------------------


def flagged_world():
    """Customer 1 learned at SHOP from three verified visits (rep 1), and visits of rep 1 and 2
    at 6 km and 30 km from it (too far for Sell), and one whose position Sell did not know."""
    for n in range(3):
        visit_add(n + 1, position=offset(SHOP, east_m=5 * n), address="1 Main St")
    visit_add(10, position=offset(SHOP, north_m=6_000), status="resource_location_too_far")
    visit_add(11, position=offset(SHOP, north_m=30_000), status="resource_location_too_far", rep_id=2)
    visit_add(12, position=None, status="location_unknown", rep_id=2)
    flags.flags_rebuild()  # made here without ingestion: their flags as ingestion would leave them


def rules_of(visit_id):
    return set(Flag.objects.filter(visit_id=visit_id).values_list("rule", flat=True))


@pytest.mark.django_db
def test_an_address_marked_wrong_drops_both_distance_flags_from_the_visits_and_the_risk():
    flagged_world()
    customers_refresh()
    flags.flags_refresh()
    assert rules_of(10) == rules_of(11) == {"resource_location_too_far", "far_from_customer"}
    assert_flags_match()
    assert Visit.objects.get(id=11).risk > Visit.objects.get(id=10).risk > Visit.objects.get(id=12).risk > 0
    # Set by hand, and the reps marked whole: the rules read the mark.
    Visit.objects.filter(resource_id=1).update(customer_address_wrong=True)
    DirtyRep.objects.bulk_create([DirtyRep(rep_id=1, whole=True), DirtyRep(rep_id=2, whole=True)])
    flags.flags_refresh()
    assert rules_of(10) == rules_of(11) == set() and rules_of(12) == {"location_unknown"}
    assert_flags_match()
    assert Visit.objects.get(id=10).risk_tier == "" and Visit.objects.get(id=12).risk == 15
    # Unmarked through geo's write, which records the visits for the flags itself.
    unmarked = [Visit(id=v, rep_id=r, customer_address_wrong=False) for v, r in [(10, 1), (11, 2)]]
    visits_customer_write(names=["customer_address_wrong"], visits=unmarked)
    assert DirtyRep.objects.count() == 2 and not DirtyRep.objects.filter(whole=True).exists()
    flags.flags_refresh()
    assert rules_of(10) == rules_of(11) == {"resource_location_too_far", "far_from_customer"}
    assert_flags_match()


@pytest.mark.django_db
def test_far_flags_follow_a_customers_new_point_without_a_rebuild(settings):
    settings.SELL_ACCESS_TOKEN = "token"
    flagged_world()
    customers_refresh_task()
    assert "far_from_customer" in rules_of(10)
    assert Flag.objects.get(visit_id=10, rule="far_from_customer").numbers == {"km": 6.0, "location": "learned"}
    # The learned point turns noisy and a geocode 5 km north is found: visit 10 is 1 km from it,
    # visit 11 25 km; the customer's other visits 5 km.
    settings.CUSTOMER_LEARNED_MAX_SPREAD_M = 1
    geocoded = offset(SHOP, north_m=5_000)
    Customer.objects.filter(resource_id=1).update(
        geocoded_latitude=geocoded[0], geocoded_longitude=geocoded[1], geocode_status=GeocodeStatus.FOUND
    )
    line = customers_refresh_task()
    assert line.endswith("; flags of 2 reps recomputed")
    assert rules_of(10) == {"resource_location_too_far"}
    assert Flag.objects.get(visit_id=11, rule="far_from_customer").sentence == (
        "25.0 km from the customer's geocoded point."
    )
    assert_flags_match()
    # Back to the learned point (the command this time): visit 10's far flag returns.
    settings.CUSTOMER_LEARNED_MAX_SPREAD_M = 1000
    out = io.StringIO()
    call_command("customers_locate", stdout=out)
    assert "flags: 2 reps recomputed" in out.getvalue()
    assert "far_from_customer" in rules_of(10)
    assert_flags_match()


@pytest.mark.django_db
def test_a_small_move_within_the_flag_distance_records_nothing_for_the_flags():
    visit_add(13, position=offset(SHOP, north_m=100), status="resource_location_too_far")
    flagged_world()
    customers_refresh()
    flags.flags_refresh()
    # Sell moves visit 13 (not one the point is learned from) 100 m further: 200 m from the customer.
    Visit.objects.filter(id=13).update(latitude=offset(SHOP, north_m=200)[0], ingested_at=datetime.now(UTC))
    result = customers_refresh()
    assert (result.points_moved, result.distances_written) == (0, 1) and not DirtyRep.objects.exists()
    assert Visit.objects.get(id=13).customer_distance_m == pytest.approx(200, abs=2)
    assert_flags_match()
    # Further than the flag's distance, it is recorded, and flagged at the refresh.
    Visit.objects.filter(id=13).update(latitude=offset(SHOP, north_m=9000)[0], ingested_at=datetime.now(UTC))
    customers_refresh()
    assert list(DirtyRep.objects.values_list("rep_id", "whole")) == [(1, False)]
    flags.flags_refresh()
    assert rules_of(13) == {"resource_location_too_far", "far_from_customer"}
    assert_flags_match()


def visit_event(vid, seq, *, rep, at, lat, lng, status="verified", deleted=False):
    data = {
        "id": vid, "creator_id": rep, "resource_type": "lead", "resource_id": vid, "summary": "",
        "visited_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "created_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "outcome": None, "sales_rep_location": {"latitude": lat, "longitude": lng, "verification_status": status},
    }  # fmt: skip
    meta = {"type": "visit", "event_type": "deleted" if deleted else ("created" if seq == 1 else "updated"),
            "sequence": seq, "event_time": at.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
    return {"data": {"id": vid} if deleted else data, "meta": meta}


def apply(*events):
    with transaction.atomic():
        page_apply(stream="visits", events=items_parse(stream="visits", items=list(events)), position="p",
                   at_top=True, owner="me", lease=timedelta(seconds=60))  # fmt: skip
    flags.flags_refresh()


@pytest.mark.django_db
def test_stored_risk_follows_decisions_deletes_and_rebuilds(cast, settings):
    SyncState.objects.create(stream="visits", lock_owner="me")
    Rep.objects.bulk_create([Rep(id=1, name="A"), Rep(id=2, name="B")])
    apply(*[visit_event(n, 1, rep=1, at=T0 + timedelta(hours=n), lat=None, lng=None, status="location_unknown")
            for n in range(1, 6)],
          visit_event(9, 1, rep=2, at=T0, lat=None, lng=None, status="location_unknown"))  # fmt: skip
    assert_flags_match()
    assert set(Visit.objects.values_list("risk", "risk_tier").distinct()) == {(15, "low")}
    # Two of rep 1's visits rejected (the queue), one through Decision.save: the others rise by 5 each.
    decisions_record(visit_ids=[1, 2], kind=DecisionKind.REJECT, note="", user=cast.reviewer)
    Decision(visit_id=3, kind=DecisionKind.REJECT, decided_by=cast.reviewer).save()
    assert_flags_match()
    risks = dict(Visit.objects.values_list("id", "risk"))
    assert (risks[1], risks[4], risks[9]) == (25, 30, 15)  # visit 1 counts the 2 others; rep 2 is apart
    # Accepted after all: back down.
    decisions_record(
        visit_ids=[3], kind=DecisionKind.ACCEPT, reason=AcceptReason.GPS_NOISE, note="", user=cast.reviewer
    )
    assert_flags_match()
    assert Visit.objects.get(id=4).risk == 25
    # A rejected visit deleted in Sell, and one moved to rep 2: both reps' risks follow.
    moved = visit_event(2, 2, rep=2, at=T0 + timedelta(hours=2), lat=None, lng=None, status="location_unknown")
    apply(visit_event(1, 2, rep=1, at=T0, lat=0, lng=0, deleted=True), moved)
    assert_flags_match()
    assert (Visit.objects.get(id=4).risk, Visit.objects.get(id=9).risk) == (15, 20)
    # New weights take effect with a rebuild, which mends any risk it finds wrong.
    settings.RISK_WEIGHTS = {**settings.RISK_WEIGHTS, "location_unknown": 50}
    Visit.objects.filter(id=5).update(risk=3)
    flags.flags_rebuild()
    assert_flags_match()
    assert Visit.objects.get(id=4).risk_tier == "medium"


@pytest.mark.django_db
def test_the_archive_check_finds_a_risk_that_does_not_follow_the_flags():
    flagged_world()
    customers_refresh()
    flags.flags_refresh()
    assert flags_check().equal
    Visit.objects.filter(id=10).update(risk=99, risk_tier="high")
    check = flags_check()
    assert not check.equal and (check.differing, check.visits_differing, check.risks_differing) == (0, 0, 1)
    assert any(example.startswith("visit 10: risk (99, 'high')") for example in check.examples)


@pytest.mark.django_db
def test_the_visit_page_shows_the_risk_its_tier_and_why(client, cast):
    flagged_world()
    customers_refresh()
    flags.flags_refresh()
    decisions_record(visit_ids=[10], kind=DecisionKind.REJECT, note="", user=cast.reviewer)
    client.force_login(cast.manager)
    body = client.get("/visits/11/").content.decode()
    risk = Visit.objects.get(id=11).risk
    assert f'<strong class="risk-score">{risk}</strong> of 100' in body and ">High</span>" in body
    assert f"Far from the customer (30.0 km) 78 + 1 more flag 10 = {risk}" in body  # rep 2 has no rejections
    body = client.get("/visits/1/").content.decode()
    assert "risk-score" not in body  # not flagged

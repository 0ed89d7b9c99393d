"""Flag rules on hand-made cases between real cities, their thresholds from settings, and the
stored flags kept equal to a computation from scratch as visits arrive, change and go."""

import itertools
import math
import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from geographiclib.geodesic import Geodesic
from geopy.distance import geodesic

from visits.geo import distance
from visits.geo.distance import km_between
from visits.ingest.pages import page_apply
from visits.ingest.sync import streams_sync
from visits.models import Flag, Rep, SyncState
from visits.review import flags, rules
from visits.review.rules import Finding, VisitFacts
from visits.sell.events import items_parse

from .conftest import assert_flags_match

UTC = ZoneInfo("UTC")
T0 = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
CHICAGO, MILWAUKEE, INDIANAPOLIS = (41.8781, -87.6298), (43.0389, -87.9065), (39.7684, -86.1581)
PARIS, LONDON = (48.8566, 2.3522), (51.5074, -0.1278)


def facts(vid, *, minutes=0, at=None, status="verified", customer=None, created_after_hours=0.0):
    lat, lng = at if at is not None else (None, None)
    visited = T0 + timedelta(minutes=minutes)
    return VisitFacts(vid, visited, visited + timedelta(hours=created_after_hours), lat, lng, status,
                      ("lead", customer if customer is not None else vid))  # fmt: skip


def by_rule(findings, rule):
    return {f.visit_id: f for f in findings if f.rule == rule}


def test_the_distances_are_those_between_the_cities():
    assert 125 < km_between(CHICAGO, MILWAUKEE) < 135
    assert 260 < km_between(CHICAGO, INDIANAPOLIS) < 270
    assert 340 < km_between(PARIS, LONDON) < 346


# --- The bound before the geodesic --------------------------------------------------------


def random_points(rng: random.Random, count: int) -> list[tuple[float, float]]:
    """Anywhere, and the awkward places: poles, the equator, the antimeridian, -0.0."""
    points = []
    for _ in range(count):
        kind = rng.randrange(6)
        if kind == 0:
            points.append((rng.choice((90.0, -90.0)), rng.uniform(-180, 180)))
        elif kind == 1:
            points.append((rng.uniform(-1, 1), rng.choice((180.0, -180.0, rng.uniform(-180, 180)))))
        elif kind == 2:
            points.append((rng.choice((0.0, -0.0)), rng.choice((0.0, -0.0, rng.uniform(-180, 180)))))
        else:
            points.append((rng.uniform(-90, 90), rng.uniform(-180, 180)))
    return points


def random_legs(rng: random.Random, count: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Pairs at every scale: the same point, metres, kilometres, continents, near-antipodes."""
    legs = []
    for a in random_points(rng, count):
        kind = rng.randrange(5)
        if kind == 0:
            b = a
        elif kind == 1:
            b = (-a[0], a[1] + 180 if a[1] <= 0 else a[1] - 180)  # the antipode
            b = (b[0] + rng.uniform(-0.5, 0.5) * rng.random() ** 4, b[1])
        elif kind == 2:
            b = random_points(rng, 1)[0]
        else:
            scale = 10 ** rng.uniform(-7, 1)  # degrees: a centimetre to a thousand kilometres
            b = (a[0] + rng.uniform(-scale, scale), a[1] + rng.uniform(-scale, scale))
        b = (max(-90.0, min(90.0, b[0])), max(-180.0, min(180.0, b[1])))
        legs.append((a, b))
    return legs


def test_the_geodesic_is_geopys_to_the_bit():
    for a, b in random_legs(random.Random(1), 3000):
        assert km_between(a, b) == geodesic(a, b).km, (a, b)


def test_the_bounds_are_never_shorter_than_the_geodesic():
    for a, b in random_legs(random.Random(2), 5000) + [((90.0, 0.0), (-90.0, 0.0)), ((0.0, 0.0), (0.0, 180.0))]:
        km = km_between(a, b)
        assert km <= distance.km_at_most(a, b) <= distance.km_at_most_roughly(a, b) + 1e-9, (a, b)


def travel_by_geodesic(visits: list[VisitFacts], *, max_kmh: float) -> list[Finding]:
    """impossible_travel as it was before the bound: geopy's geodesic on every leg (the oracle)."""
    located = [(v, v.point) for v in visits if v.point is not None]
    fastest: dict[int, Finding] = {}
    for (a, a_point), (b, b_point) in itertools.pairwise(located):
        km = 0.0 if a_point == b_point else geodesic(a_point, b_point).km
        minutes = (b.visited_at - a.visited_at).total_seconds() / 60
        kmh = km / (minutes / 60) if minutes > 0 else (math.inf if km >= 1 else 0.0)
        if kmh <= max_kmh:
            continue
        for visit, other, side in ((b, a, "previous"), (a, b, "next")):
            numbers = {"km": round(km, 1), "minutes": round(minutes, 1), "kmh": None if kmh == math.inf else round(kmh),
                       "other_visit": other.id}  # fmt: skip
            finding = Finding(visit.id, "impossible_travel", numbers, rules.travel_sentence(km, minutes, kmh, side))
            known = fastest.get(visit.id)
            if known is None or rules.speed_of(finding) > rules.speed_of(known):
                fastest[visit.id] = finding
    return list(fastest.values())


def random_timelines(seed: int, count: int) -> list[list[VisitFacts]]:
    """Timelines of a few visits on random legs, many of them within 0.3% of 150 km/h (where the
    bound must not decide wrongly), some at the same minute or without a position."""
    rng = random.Random(seed)
    timelines = []
    for n, (a, b) in enumerate(random_legs(rng, count)):
        km = km_between(a, b)
        kind = rng.randrange(4)
        if kind == 0 or km == 0:
            minutes = rng.choice((0.0, rng.uniform(0, 600)))
        else:  # at the threshold, give or take 0.3%, a microsecond at least
            minutes = max(km / 150 * 60 * (1 + rng.uniform(-0.003, 0.003)), 1e-6 / 60)
        start = T0 + timedelta(minutes=rng.uniform(0, 1000))
        second = start + timedelta(minutes=minutes)
        visits = [facts(3 * n, at=a)._replace(visited_at=start), facts(3 * n + 1, at=b)._replace(visited_at=second)]
        if rng.random() < 0.3:  # a third visit: somewhere, or nowhere
            c = rng.choice((random_points(rng, 1)[0], (None, None), (0.0, 0.0), b))
            third = second + timedelta(minutes=rng.uniform(0, 30))
            visits.append(facts(3 * n + 2, at=c)._replace(visited_at=third))
        timelines.append(visits)
    return timelines


def boundary_timelines(seed: int, count: int) -> list[list[VisitFacts]]:
    """Two visits a geodesic apart that lands within a millimetre of where a shown figure rounds
    the other way: km at x.x5 or x.5, km/h at y.5 or at the threshold (where Vincenty's formula,
    a hundredth of a millimetre off, cannot say which way: the geodesic must)."""
    rng = random.Random(seed)
    wgs84 = Geodesic(6378.137, 1 / 298.257223563)  # geopy's, in km
    timelines = []
    for n in range(count):
        a = (rng.uniform(-80, 80), rng.uniform(-180, 180))
        km = rng.randrange(1, 3000) / 10 + rng.choice((0.05, 0.5, 0.0)) + rng.uniform(-1e-6, 1e-6)
        end = wgs84.Direct(a[0], a[1], rng.uniform(0, 360), km)
        b = (end["lat2"], end["lon2"])
        km = km_between(a, b)
        kmh = rng.choice((150 + rng.uniform(-1e-6, 1e-6), rng.randrange(151, 2000) + 0.5 + rng.uniform(-1e-6, 1e-6)))
        start = T0 + timedelta(minutes=rng.uniform(0, 1000))
        second = start + timedelta(hours=km / kmh)
        timelines.append(
            [facts(2 * n, at=a)._replace(visited_at=start), facts(2 * n + 1, at=b)._replace(visited_at=second)]
        )
    return timelines


def test_vincentys_formula_is_well_within_the_error_the_rules_allow_it():
    for a, b in random_legs(random.Random(4), 20_000):
        near = distance.km_near(a, b)
        assert near is None or abs(near - km_between(a, b)) <= distance.NEAR_ERROR_KM / 20, (a, b)


def findings_by_visit(findings: list[Finding]) -> dict:
    return {f.visit_id: (f.rule, f.numbers, f.sentence) for f in findings}


def test_impossible_travel_finds_exactly_what_the_plain_geodesic_finds(monkeypatch):
    timelines = random_timelines(3, 6000) + boundary_timelines(5, 3000)
    want = [findings_by_visit(travel_by_geodesic(t, max_kmh=150)) for t in timelines]

    def got():
        return [findings_by_visit(rules.impossible_travel(t, max_kmh=150)) for t in timelines]

    assert sum(map(len, want)) > 4000, "the data must hold many impossible legs"
    assert got() == want
    # The data is close enough to the threshold that a bound 0.3% too short would be caught,
    # and to the roundings that trusting Vincenty's formula without its error would be.
    with monkeypatch.context() as patch:
        patch.setattr(distance, "BOUND_FACTOR", 0.997)
        assert got() != want
    monkeypatch.setattr(distance, "NEAR_ERROR_KM", 0.0)
    assert got() != want


def test_impossible_travel_flags_both_visits_with_the_numbers(settings):
    visits = [facts(1, at=CHICAGO), facts(2, minutes=40, at=MILWAUKEE), facts(3, minutes=400, at=INDIANAPOLIS)]
    travel = by_rule(rules.impossible_travel(visits, max_kmh=150), "impossible_travel")
    assert set(travel) == {1, 2}  # Milwaukee to Indianapolis in 6 hours is fine
    km = km_between(CHICAGO, MILWAUKEE)
    assert travel[2].sentence == f"{km:,.0f} km from the previous visit 40 minutes earlier: {km * 1.5:,.0f} km/h."
    assert travel[1].sentence == f"{km:,.0f} km from the next visit 40 minutes later: {km * 1.5:,.0f} km/h."
    assert travel[2].numbers == {"km": round(km, 1), "minutes": 40.0, "kmh": round(km * 1.5), "other_visit": 1}
    assert not rules.impossible_travel(visits, max_kmh=200)  # the threshold decides


def test_impossible_travel_reads_its_threshold_from_settings(settings):
    visits = [facts(1, at=PARIS), facts(2, minutes=60, at=LONDON)]
    assert {f.visit_id for f in rules.rep_findings(visits) if f.rule == "impossible_travel"} == {1, 2}
    settings.FLAG_MAX_SPEED_KMH = 400
    assert not [f for f in rules.rep_findings(visits) if f.rule == "impossible_travel"]


def test_the_same_minute_in_two_cities_and_the_fastest_leg_wins():
    visits = [facts(1, at=CHICAGO), facts(2, at=MILWAUKEE), facts(3, minutes=120, at=CHICAGO)]
    travel = by_rule(rules.impossible_travel(visits, max_kmh=150), "impossible_travel")
    assert travel[2].numbers["kmh"] is None and "logged at the same time" in travel[2].sentence
    assert travel[1].numbers["other_visit"] == 2
    assert set(travel) == {1, 2}  # Milwaukee to Chicago in two hours: 65 km/h


def test_visits_without_a_position_or_at_0_0_are_skipped_by_travel():
    visits = [facts(1, at=CHICAGO), facts(2, minutes=5, at=(0.0, 0.0)), facts(3, minutes=10),
              facts(4, minutes=600, at=CHICAGO)]  # fmt: skip
    assert not rules.impossible_travel(visits, max_kmh=150)
    zero = by_rule(rules.impossible_coordinates(visits), "impossible_coordinates")
    assert set(zero) == {2} and "0,0" in zero[2].sentence


def test_coordinate_reuse_counts_different_customers(settings):
    spot = (41.878104, -87.629801)
    same_spot = [facts(i, minutes=i * 60, at=spot, customer=100 + i) for i in range(3)]
    reuse = by_rule(rules.coordinate_reuse(same_spot, min_customers=3), "coordinate_reuse")
    assert set(reuse) == {0, 1, 2}
    assert reuse[0].sentence == "The same coordinates (41.87810, -87.62980) were logged at 3 different customers."
    assert not rules.coordinate_reuse(same_spot[:2], min_customers=3)
    one_customer = [facts(i, minutes=i * 60, at=spot, customer=7) for i in range(5)]
    assert not rules.coordinate_reuse(one_customer, min_customers=3)
    settings.FLAG_REUSE_CUSTOMERS = 2
    assert {f.visit_id for f in rules.rep_findings(same_spot[:2]) if f.rule == "coordinate_reuse"} == {0, 1}


def test_late_logging(settings):
    visits = [facts(1, at=CHICAGO, created_after_hours=25), facts(2, minutes=600, at=CHICAGO, created_after_hours=23)]
    late = by_rule(rules.late_logging(visits, hours=24), "late_logging")
    assert (
        set(late) == {1}
        and late[1].sentence == "Logged 1 day 1 hour after the visit."
        and late[1].numbers == {"hours": 25.0}
    )
    settings.FLAG_LATE_HOURS = 12
    assert {f.visit_id for f in rules.rep_findings(visits) if f.rule == "late_logging"} == {1, 2}


def test_bursts(settings):
    five = [facts(i, minutes=i * 2.4, at=CHICAGO) for i in range(5)]  # 9.6 minutes from first to last
    burst = by_rule(rules.bursts(five, count=5, minutes=10), "burst")
    assert set(burst) == {0, 1, 2, 3, 4} and burst[0].sentence == "One of 5 visits the rep logged within 10 minutes."
    assert not rules.bursts(five[:4], count=5, minutes=10)
    spread = [facts(i, minutes=i * 3, at=CHICAGO) for i in range(5)]  # 12 minutes
    assert not rules.bursts(spread, count=5, minutes=10)
    settings.FLAG_BURST_MINUTES = 15
    assert len([f for f in rules.rep_findings(spread) if f.rule == "burst"]) == 5
    # What counts is when they were logged: a week of visits entered in one sitting.
    sitting = [
        facts(i, minutes=i * 1440, at=CHICAGO, created_after_hours=(6 * 1440 - i * 1440 + i) / 60) for i in range(5)
    ]
    assert len(rules.bursts(sitting, count=5, minutes=10)) == 5


def test_sell_statuses_become_flags():
    visits = [
        facts(1, status="resource_location_too_far", at=CHICAGO),
        facts(2, minutes=300, status="location_unknown"),
        facts(3, minutes=600, status="location_services_disabled"),
        facts(4, minutes=900, at=CHICAGO),
    ]
    found = {(f.visit_id, f.rule) for f in rules.sell_statuses(visits)}
    assert found == {(1, "resource_location_too_far"), (2, "location_unknown"), (3, "location_services_disabled")}


def assert_flags_current() -> None:
    flags.flags_refresh()
    assert_flags_match()


@pytest.mark.slow
@pytest.mark.django_db
def test_flags_follow_the_stream_in_steps(serve, full_team):
    """Partial syncs with a refresh between them end equal to a computation from scratch, and
    the demo's suspicious reps show up with their reasons."""
    serve(full_team)
    while not all(r.at_top for r in streams_sync(max_seconds=0.2)):
        flags.flags_refresh()
    assert_flags_current()
    rules = set(Flag.objects.values_list("rule", flat=True))
    assert {"impossible_travel", "coordinate_reuse", "late_logging", "burst", "resource_location_too_far"} <= rules


def visit_event(vid, seq, *, rep, at, lat, lng, deleted=False):
    data = {
        "id": vid, "creator_id": rep, "resource_type": "lead", "resource_id": vid, "summary": "",
        "visited_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "created_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "outcome": None,
        "sales_rep_location": {"latitude": lat, "longitude": lng, "verification_status": "verified"},
    }  # fmt: skip
    meta = {"type": "visit", "event_type": "deleted" if deleted else ("created" if seq == 1 else "updated"),
            "sequence": seq, "event_time": at.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
    return {"data": {"id": vid} if deleted else data, "meta": meta}


@pytest.mark.django_db
def test_updates_moves_and_deletes_recompute_the_neighbours():
    SyncState.objects.create(stream="visits", lock_owner="me")
    Rep.objects.bulk_create([Rep(id=1, name="A"), Rep(id=2, name="B")])

    def apply(*events):
        with transaction.atomic():
            page_apply(stream="visits", events=items_parse(stream="visits", items=list(events)), position="p",
                       at_top=True, owner="me", lease=timedelta(seconds=60))  # fmt: skip
        assert_flags_current()

    apply(visit_event(1, 1, rep=1, at=T0, lat=CHICAGO[0], lng=CHICAGO[1]),
          visit_event(2, 1, rep=1, at=T0 + timedelta(hours=5), lat=MILWAUKEE[0], lng=MILWAUKEE[1]))  # fmt: skip
    assert not Flag.objects.exists()
    # Visit 2 was in fact 30 minutes after visit 1: both become impossible travel.
    apply(visit_event(2, 2, rep=1, at=T0 + timedelta(minutes=30), lat=MILWAUKEE[0], lng=MILWAUKEE[1]))
    assert set(Flag.objects.values_list("visit_id", flat=True)) == {1, 2}
    # Visit 2 moves to rep B: rep A's visit 1 is clear again.
    apply(visit_event(2, 3, rep=2, at=T0 + timedelta(minutes=30), lat=MILWAUKEE[0], lng=MILWAUKEE[1]))
    assert not Flag.objects.exists()
    apply(visit_event(2, 4, rep=1, at=T0 + timedelta(minutes=30), lat=MILWAUKEE[0], lng=MILWAUKEE[1]))
    assert Flag.objects.count() == 2
    apply(visit_event(2, 5, rep=1, at=T0, lat=0, lng=0, deleted=True))  # deleted in Sell
    assert not Flag.objects.exists()


@pytest.mark.django_db
def test_rebuild_command_recomputes_after_a_threshold_changes(serve, small_team, settings, capsys):
    from django.core.management import call_command

    serve(small_team)
    streams_sync()
    assert_flags_current()
    hours = sorted(f.numbers["hours"] for f in Flag.objects.filter(rule="late_logging"))
    before = len(hours)
    assert before >= 2 and hours[0] < hours[-1], "the demo's late reps log visits days late"
    settings.FLAG_LATE_HOURS = (hours[0] + hours[-1]) / 2  # the least late no longer count
    call_command("flags_rebuild")
    assert "flags of" in capsys.readouterr().out
    assert_flags_match()
    assert 0 < Flag.objects.filter(rule="late_logging").count() < before

"""Customers (geo/customers.py): their rows and addresses from the visits, the learned point, the
point chosen and why, every visit's distance kept current, customers_locate and /visits.csv."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django_q.models import Schedule

from visits.demo.generator import team_generate
from visits.geo import customers
from visits.geo.customers import customer_choose, customers_refresh
from visits.geo.distance import metres_between
from visits.geo.geocode import address_key
from visits.ingest.sync import streams_sync
from visits.ingest.tallies import local_day
from visits.models import Customer, DistanceState, Flag, GeocodeStatus, Rep, Visit
from visits.tasks import CUSTOMERS_SCHEDULE_NAME, schedules_setup

from .conftest import DEMO_NOW, assert_flags_match

AT = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
SHOP = (41.8781, -87.6298)  # Chicago
NEXT_DOOR = (41.8790, -87.6298)  # 100 m north


def visit_add(visit_id, *, position, status="verified", resource_id=1, address="", at=None, rep_id=1):
    Rep.objects.get_or_create(id=rep_id, defaults={"name": f"Rep {rep_id}"})
    at = at or AT + timedelta(minutes=visit_id)
    lat, lng = position or (None, None)
    return Visit.objects.create(
        id=visit_id, rep_id=rep_id, resource_type="contact", resource_id=resource_id, visited_at=at, created_at=at,
        summary="", latitude=lat, longitude=lng, verification_status=status, sequence=1, event_time=at,
        resource_address=address,
        local_day=local_day(visited_at=at, zone_name=django_settings.DISPLAY_TIME_ZONE),
    )  # fmt: skip


def offset(point, *, north_m=0.0, east_m=0.0):
    from math import cos, radians

    return (point[0] + north_m / 111_195, point[1] + east_m / (111_195 * cos(radians(point[0]))))


def hand_made(**fields) -> Customer:
    base = {"resource_type": "contact", "resource_id": 1, "address": "1 Main St", "address_key": "k"}
    return Customer(**{**base, **fields})


def test_the_choice_rule_on_hand_made_customers(settings):
    settings.CUSTOMER_LEARNED_MAX_SPREAD_M = 1000
    learned = {"learned_latitude": 1.0, "learned_longitude": 2.0, "learned_visits": 4, "learned_spread_m": 30.0}
    geocoded = {"geocoded_latitude": 5.0, "geocoded_longitude": 6.0, "geocode_status": GeocodeStatus.FOUND}
    location, lat, lng, why = customer_choose(hand_made(**learned, **geocoded))
    assert (location, lat, lng) == ("learned", 1.0, 2.0)
    assert why == "Learned from 4 verified visits, a median of 30 m from it."
    location, lat, lng, why = customer_choose(hand_made(**{**learned, "learned_spread_m": 2500.0}, **geocoded))
    assert (location, lat, lng) == ("geocoded", 5.0, 6.0)
    assert "2,500 m, more than 1,000 m, too noisy" in why
    location, lat, lng, why = customer_choose(hand_made(**{**learned, "learned_spread_m": 2500.0}))
    assert (location, lat, lng) == ("learned", 1.0, 2.0) and "no geocode" in why
    location, lat, lng, why = customer_choose(hand_made(**geocoded))
    assert (location, lat, lng) == ("geocoded", 5.0, 6.0) and "fewer than 2 verified visits" in why
    assert customer_choose(hand_made(geocode_status=GeocodeStatus.PENDING))[:3] == ("", None, None)
    assert "not geocoded yet" in customer_choose(hand_made(geocode_status=GeocodeStatus.PENDING))[3]
    assert "found no place" in customer_choose(hand_made(geocode_status=GeocodeStatus.NOT_FOUND))[3]
    assert "geocoding is off" in customer_choose(hand_made(geocode_status=GeocodeStatus.OFF))[3]
    assert "tried again later" in customer_choose(hand_made(geocode_status=GeocodeStatus.ERROR))[3]
    assert "no address" in customer_choose(hand_made(address="", address_key=""))[3]
    # One verified visit is not enough to learn from: its geocode wins, or nothing.
    assert customer_choose(hand_made(**{**learned, "learned_visits": 1}))[0] == ""


@pytest.mark.django_db
def test_customers_learn_a_robust_centre_and_measure_every_visit():
    points = [offset(SHOP, north_m=n, east_m=e) for n, e in [(10, 0), (-10, 0), (0, 10), (0, -10), (3, 3)]]
    for n, point in enumerate(points):
        visit_add(n + 1, position=point, address="1 Main St, Chicago")
    visit_add(10, position=offset(SHOP, north_m=50_000), address="")  # verified, yet 50 km off
    visit_add(11, position=NEXT_DOOR, status="resource_location_too_far")  # measured, not learned from
    visit_add(12, position=None, status="location_unknown")  # no position: no distance
    visit_add(13, position=SHOP, resource_id=2)  # one verified visit: customer 2 is not located
    result = customers_refresh()
    assert (result.customers, result.created) == (2, 2)
    customer = Customer.objects.get(resource_id=1)
    assert customer.address == "1 Main St, Chicago" and customer.address_key == address_key("1 main st,  CHICAGO ")
    assert customer.learned_visits == 6 and customer.learned_at is not None
    centre = (customer.learned_latitude, customer.learned_longitude)
    assert metres_between(centre, SHOP) < 10
    assert 5 < customer.learned_spread_m < 20
    assert (customer.location, customer.latitude, customer.longitude) == ("learned", *centre)
    assert customer.location_reason.startswith("Learned from 6 verified visits")
    visits = {v.id: v for v in Visit.objects.all()}
    assert visits[11].customer_distance_m == pytest.approx(metres_between(NEXT_DOOR, centre), abs=1e-6)
    assert visits[11].customer_location == "learned"
    assert visits[10].customer_distance_m == pytest.approx(50_000, rel=0.01)
    assert (visits[12].customer_distance_m, visits[12].customer_location) == (None, "")
    assert (visits[13].customer_distance_m, visits[13].customer_location) == (None, "")
    assert Customer.objects.get(resource_id=2).location == ""
    # Idempotent: a second refresh writes nothing.
    again = customers_refresh(everything=True)
    assert (again.created, again.points_moved, again.distances_written) == (0, 0, 0)


@pytest.mark.django_db
def test_distances_follow_when_the_customer_point_changes(settings):
    for n in range(3):
        visit_add(n + 1, position=offset(SHOP, east_m=5 * n), address="1 Main St")
    far = visit_add(9, position=offset(SHOP, north_m=3000), status="resource_location_too_far")
    customers_refresh()
    assert Visit.objects.get(id=9).customer_distance_m == pytest.approx(3000, rel=0.01)
    # The learned point is noisy now (a spread above the limit) and a geocode came: it moves there.
    settings.CUSTOMER_LEARNED_MAX_SPREAD_M = 1
    geocoded = offset(SHOP, north_m=1000)
    Customer.objects.filter(resource_id=1).update(
        geocoded_latitude=geocoded[0], geocoded_longitude=geocoded[1], geocode_status=GeocodeStatus.FOUND
    )
    result = customers_refresh()
    assert result.points_moved == 1
    far.refresh_from_db()
    assert far.customer_location == "geocoded"
    assert far.customer_distance_m == pytest.approx(metres_between(far.point, geocoded), abs=1e-6)
    assert {v.customer_location for v in Visit.objects.all()} == {"geocoded"}


@pytest.mark.django_db
@pytest.mark.parametrize("listed_max", [0, 2000])
def test_the_periodic_refresh_takes_new_visits_whether_it_lists_their_customers_or_reads_all(listed_max, monkeypatch):
    monkeypatch.setattr(customers, "KEYS_LISTED_MAX", listed_max)
    visit_add(1, position=SHOP, address="1 Main St")
    visit_add(2, position=NEXT_DOOR, address="1 Main St")
    visit_add(3, position=SHOP, resource_id=2)
    customers_refresh()
    assert Customer.objects.get(resource_id=1).location == "learned"
    # New visits: a second verified one for customer 2, a first for customer 3 (with an address).
    visit_add(4, position=offset(SHOP, east_m=40), resource_id=2)
    visit_add(5, position=offset(SHOP, east_m=900), status="resource_location_too_far", resource_id=3, address="3 Oak")
    result = customers_refresh()
    assert result.created == 1
    second = Customer.objects.get(resource_id=2)
    assert (second.location, second.learned_visits) == ("learned", 2)
    assert Customer.objects.get(resource_id=3).address == "3 Oak"
    distances = dict(Visit.objects.values_list("id", "customer_distance_m"))
    assert distances[3] == pytest.approx(20, abs=1) and distances[4] == pytest.approx(20, abs=1)
    assert distances[5] is None  # customer 3 has no point


@pytest.mark.django_db
def test_an_address_change_resets_the_geocode_and_keeps_the_learned_point():
    visit_add(1, position=SHOP, address="1 Main St")
    visit_add(2, position=NEXT_DOOR, address="1 Main St")
    visit_add(3, position=offset(SHOP, north_m=800), status="resource_location_too_far", address="1 Main St")
    customers_refresh()
    geocoded = offset(SHOP, east_m=300)
    Customer.objects.update(
        geocoded_latitude=geocoded[0], geocoded_longitude=geocoded[1], geocode_status=GeocodeStatus.FOUND,
        geocode_attempts=2, geocode_precision="house", geocoded_at=AT, learned_spread_m=5000, learned_visits=2,
    )  # fmt: skip
    customers_refresh(everything=True)  # the learned point is relearned: its true spread is small
    assert Customer.objects.get().location == "learned"
    Customer.objects.update(learned_latitude=None, learned_longitude=None, learned_visits=0)
    Visit.objects.filter(id__in=[1, 2]).update(verification_status="resource_location_too_far")  # nothing to learn from
    customers_refresh(everything=True)
    assert Customer.objects.get().location == "geocoded"
    assert Visit.objects.get(id=3).customer_location == "geocoded"
    # The Core API gives a newer visit another address.
    visit_add(
        4,
        position=offset(SHOP, north_m=20),
        status="resource_location_too_far",
        address="99 Elm St",
        at=AT + timedelta(days=1),
    )
    result = customers_refresh()
    customer = Customer.objects.get()
    assert result.addresses_changed == 1
    assert (customer.address, customer.address_key) == ("99 Elm St", address_key("99 Elm St"))
    assert customer.geocode_status == GeocodeStatus.PENDING
    assert (customer.geocoded_latitude, customer.geocoded_longitude, customer.geocoded_at) == (None, None, None)
    assert (customer.geocode_attempts, customer.geocode_precision) == (0, "")
    assert (customer.location, customer.latitude) == ("", None)
    assert "not geocoded yet" in customer.location_reason
    assert set(Visit.objects.values_list("customer_distance_m", "customer_location")) == {(None, "")}
    # An older visit with the old address does not bring it back.
    visit_add(5, position=SHOP, status="resource_location_too_far", address="1 Main St", at=AT - timedelta(days=3))
    customers_refresh()
    assert Customer.objects.get().address == "99 Elm St"


@pytest.mark.django_db
def test_distances_follow_ingestion_and_learned_points_land_near_the_truth(serve, settings):
    team = team_generate(seed=3, reps=4, weeks=3, now=DEMO_NOW)
    server = serve(team)
    streams_sync()
    customers_refresh()
    learned = Customer.objects.filter(learned_visits__gte=3)
    assert learned.count() >= 10
    misses = []
    for c in learned:
        misses.append(
            metres_between((c.learned_latitude, c.learned_longitude), team.customers[(c.resource_type, c.resource_id)])
        )
    assert max(misses) < 250, sorted(misses)
    measured = Visit.objects.live().filter(customer_distance_m__isnull=False)
    assert measured.count() > 50
    for visit in measured.select_related()[:200]:
        customer = Customer.objects.get(resource_type=visit.resource_type, resource_id=visit.resource_id)
        want = metres_between(visit.point, (customer.latitude, customer.longitude))
        assert visit.customer_distance_m == pytest.approx(want, abs=1e-6)
    # Sell moves one measured visit's position 5 km east: the next refresh measures it again.
    visit = measured.order_by("id").first()
    customer = Customer.objects.get(resource_type=visit.resource_type, resource_id=visit.resource_id)
    event = next(e for e in reversed(team.visits_events) if isinstance(e.get("data"), dict)
                 and e["data"].get("id") == visit.id)  # fmt: skip
    moved = offset((customer.latitude, customer.longitude), east_m=5000)
    data = {**event["data"], "sales_rep_location": {**event["data"]["sales_rep_location"],
            "latitude": moved[0], "longitude": moved[1]}}  # fmt: skip
    last = max(e["meta"]["sequence"] for e in team.visits_events if isinstance(e.get("meta"), dict))
    meta = {**event["meta"], "event_type": "updated", "sequence": last + 1, "event_id": "moved-east"}
    server.append("visits", [{"data": data, "meta": meta}])
    streams_sync()
    visit.refresh_from_db()
    assert visit.point == moved
    customers_refresh()
    visit.refresh_from_db()
    point = Customer.objects.get(pk=customer.pk)
    assert visit.customer_distance_m == pytest.approx(
        metres_between(moved, (point.latitude, point.longitude)), abs=1e-6
    )
    assert 4_000 < visit.customer_distance_m < 6_000


@pytest.mark.django_db
def test_customers_locate_says_what_it_did_and_the_csv_carries_the_distance(client, cast):
    visit_add(1, position=SHOP, address="=cmd|' /C calc'!A0")
    visit_add(2, position=offset(SHOP, north_m=2), address="")
    visit_add(3, position=offset(SHOP, north_m=1234.4), status="resource_location_too_far")
    visit_add(4, position=None, status="location_unknown")
    out = io.StringIO()
    call_command("customers_locate", stdout=out)
    lines = out.getvalue().splitlines()
    assert any("learning points" in line for line in lines)
    assert any("] customers: geocoding: " in line for line in lines)  # the geocoding's own summary follows
    assert lines[-1].endswith("1 customers, 1 with a learned point, 0 geocoded, 1 located; 3 visits with a distance")
    assert DistanceState.objects.get().visits_measured_to is not None
    client.force_login(cast.manager)
    response = client.get("/visits.csv")
    body = b"".join(response.streaming_content).decode("utf-8")
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(body[1:]))}
    header = next(csv.reader(io.StringIO(body[1:])))
    assert header[-5:] == ["source", "resource_address", "customer_distance_m", "customer_location", "position_removed"]
    want = round(Visit.objects.get(id=3).customer_distance_m)
    assert 1230 <= want <= 1235
    assert (rows["3"]["customer_distance_m"], rows["3"]["customer_location"]) == (str(want), "learned")
    assert (rows["4"]["customer_distance_m"], rows["4"]["customer_location"]) == ("", "")
    assert rows["1"]["resource_address"].startswith("'=")  # still checked for formulas


@pytest.mark.django_db
def test_the_refresh_schedule_is_set_up_once_by_name(settings):
    settings.CUSTOMERS_REFRESH_MINUTES = 5
    schedules_setup()
    named = {name: (created, every) for name, created, every in schedules_setup()}
    schedule = Schedule.objects.get(name=CUSTOMERS_SCHEDULE_NAME)
    assert (schedule.func, schedule.minutes) == ("visits.tasks.customers_refresh_task", 5)
    assert Schedule.objects.filter(name=CUSTOMERS_SCHEDULE_NAME).count() == 1
    assert named[CUSTOMERS_SCHEDULE_NAME] == (False, "every 5 minutes")


@pytest.mark.django_db
def test_the_scheduled_task_refreshes_and_an_archive_without_a_token_is_left_alone(settings):
    from visits.ingest.sync import READ_ONLY_MESSAGE
    from visits.tasks import customers_refresh_task

    visit_add(1, position=SHOP)
    visit_add(2, position=NEXT_DOOR)
    visit_add(3, position=offset(SHOP, north_m=20_000), status="resource_location_too_far", at=AT + timedelta(days=1))
    settings.SELL_ACCESS_TOKEN = ""
    assert customers_refresh_task() == READ_ONLY_MESSAGE
    assert not Customer.objects.exists()
    settings.SELL_ACCESS_TOKEN = "token"
    line = customers_refresh_task()
    assert line == (
        "1 customers (1 new, 0 addresses changed), 1 points moved, 3 visits measured, 3 distances written; "
        "flags of 1 reps recomputed"
    )
    assert Visit.objects.filter(customer_location="learned").count() == 3
    # The task ran the flags too: visit 3 is flagged 20 km away, no rep is left to recompute.
    assert set(Flag.objects.filter(visit_id=3).values_list("rule", flat=True)) == {
        "resource_location_too_far",
        "far_from_customer",
    }
    assert_flags_match()


@pytest.mark.django_db
def test_a_visit_given_another_customer_is_measured_from_that_one():
    from django.utils import timezone

    other = offset(SHOP, east_m=2000)
    for n, (rid, point) in enumerate([(1, SHOP), (1, SHOP), (2, other), (2, other)]):
        visit_add(n + 1, position=point, resource_id=rid)
    visit_add(9, position=offset(SHOP, north_m=100), status="resource_location_too_far", resource_id=1)
    customers_refresh()
    assert Visit.objects.get(id=9).customer_distance_m == pytest.approx(100, abs=1)
    # Sell moves the visit to customer 2, as ingestion writes it (its ingested_at with it).
    Visit.objects.filter(id=9).update(resource_id=2, ingested_at=timezone.now())
    customers_refresh()
    want = metres_between(offset(SHOP, north_m=100), other)
    assert Visit.objects.get(id=9).customer_distance_m == pytest.approx(want, abs=1e-6)
    # And to no customer at all: no distance.
    Visit.objects.filter(id=9).update(resource_id=None, ingested_at=timezone.now())
    customers_refresh()
    assert Visit.objects.filter(id=9).values_list("customer_distance_m", "customer_location").get() == (None, "")


@pytest.mark.django_db
def test_a_learned_point_follows_when_a_verified_visit_is_deleted_or_moved_away():
    from django.utils import timezone

    for n, point in enumerate([SHOP, offset(SHOP, east_m=10), offset(SHOP, east_m=3000)]):
        visit_add(n + 1, position=point)
    visit_add(9, position=SHOP, status="resource_location_too_far")
    customers_refresh()
    assert Customer.objects.get().learned_visits == 3
    # Deleted in Sell by an id-only event: ingestion sets deleted_at alone.
    Visit.objects.filter(id=3).update(deleted_at=timezone.now())
    customers_refresh()
    customer = Customer.objects.get()
    assert customer.learned_visits == 2 and customer.learned_spread_m == pytest.approx(5, abs=0.5)
    # One more moved to another customer: one verified visit is too few to learn from.
    Visit.objects.filter(id=2).update(resource_id=7, ingested_at=timezone.now())
    customers_refresh()
    customer = Customer.objects.get(resource_id=1)
    assert (customer.learned_visits, customer.learned_latitude, customer.location) == (0, None, "")
    assert Visit.objects.get(id=9).customer_distance_m is None

"""Geocoding customers' addresses (visits/geo/geocode.py) against the demo's Nominatim stand-in
(visits/demo/geocoder.py) over HTTP: found, no result, errors and their backoff, the pace, the
cache per normalised address, an address change, geocoding off, hostile addresses."""

import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
from django_q.models import Schedule

from visits.demo.generator import HOSTILE_ADDRESSES, DemoData, team_generate
from visits.demo.geocoder import DemoGeocoder
from visits.geo.distance import km_between
from visits.geo.geocode import (
    ERROR_RETRY_FIRST,
    MAX_QUERY_CHARS,
    NOT_FOUND_RETRY,
    address_key,
    address_normalise,
    customer_address_set,
    geocode_pending,
)
from visits.models import Customer, GeocodeCache, GeocodeStatus
from visits.tasks import GEOCODE_SCHEDULE_NAME, geocode_task, schedules_setup

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
PACE = 0.02  # seconds: the stand-in is local


@pytest.fixture
def geocoder(small_team: DemoData, settings):
    """The stand-in for the small team, with GEOCODER_* pointing at it."""
    with DemoGeocoder(small_team, min_delay=PACE, seed=3) as server:
        settings.GEOCODER_URL = server.url
        settings.GEOCODER_MIN_DELAY = PACE
        settings.GEOCODER_TIMEOUT = 2.0
        yield server


def customer_make(key: tuple[str, int], address: str) -> Customer:
    """A customer as customers_sync would make it: the address and its key set together."""
    customer = Customer(resource_type=key[0], resource_id=key[1])
    customer_address_set(customer, address)
    customer.save()
    return customer


def ordinary(data: DemoData, server: DemoGeocoder, *, count: int = 1) -> list[tuple[tuple[str, int], str]]:
    """`count` customers whose address the stand-in answers with their true position."""
    hostile = set(HOSTILE_ADDRESSES)
    addresses = data.core_addresses()
    shared = Counter(address_normalise(address) for address in addresses.values())
    keys = [
        (key, address)
        for key, address in sorted(addresses.items())
        if key in data.customers and key not in server.wrong and key not in server.unknown
        and address not in hostile and shared[address_normalise(address)] == 1
    ]  # fmt: skip
    return keys[:count]


def searches(server: DemoGeocoder) -> list:
    return [r for r in server.requests if "q" in r.query]


# --- the address's normal form and key ------------------------------------------------------


def test_normalise_collapses_space_case_and_edge_punctuation_and_keeps_the_rest():
    assert address_normalise("  12  Main St ,Chicago,,  USA. ") == "12 main st, chicago, usa"
    assert address_normalise("12\tMAIN\nSt\x00, Chicago") == "12 main st, chicago"
    assert address_normalise("Straße 5, Zürich") == "strasse 5, zürich"
    assert address_normalise('<b onclick="x">1 A St</b>, =1+1') == '<b onclick="x">1 a st</b>, =1+1'
    assert address_normalise(" ,.; ") == ""


def test_key_is_the_same_for_the_same_normal_form_and_empty_for_nothing():
    assert address_key("12 Main St, Chicago") == address_key(" 12 main st ,  CHICAGO.")
    assert len(address_key("12 Main St")) == 64
    assert address_key("12 Main St") != address_key("13 Main St")
    assert address_key("  ,, ") == ""


# --- found, no result, errors ---------------------------------------------------------------------


def test_found_address_gets_the_customers_position_and_the_precision(db, small_team, geocoder):
    [(key, address)] = ordinary(small_team, geocoder)
    customer = customer_make(key, address)
    run = geocode_pending(now=NOW)
    customer.refresh_from_db()
    assert (run.asked, run.found, run.not_found, run.errors, run.customers) == (1, 1, 0, 0, 1)
    assert customer.geocode_status == GeocodeStatus.FOUND
    true = small_team.customers[key]
    assert km_between((customer.geocoded_latitude, customer.geocoded_longitude), true) < 0.001
    assert customer.geocode_precision.startswith("building/yes (importance 0.")
    assert customer.geocoded_at == NOW and customer.geocode_next_at is None and customer.geocode_error == ""
    assert [r.query["q"] for r in searches(geocoder)] == [address_normalise(address)]
    # Done is done: nothing is asked again.
    assert geocode_pending(now=NOW + timedelta(days=400)).asked == 0


def test_wrong_addresses_geocode_10_to_40_km_from_the_customer(db, small_team, geocoder):
    assert len(geocoder.wrong) == 3
    addresses = small_team.core_addresses()
    for key in geocoder.wrong:
        customer_make(key, addresses[key])
    geocode_pending(now=NOW)
    for key, (true, _) in geocoder.wrong.items():
        customer = Customer.objects.get(resource_type=key[0], resource_id=key[1])
        assert customer.geocode_status == GeocodeStatus.FOUND
        assert 10 <= km_between((customer.geocoded_latitude, customer.geocoded_longitude), true) <= 40


def test_no_result_is_recorded_and_asked_again_after_30_days(db, small_team, geocoder):
    key = sorted(geocoder.unknown)[0]
    customer = customer_make(key, small_team.core_addresses()[key])
    run = geocode_pending(now=NOW)
    customer.refresh_from_db()
    assert (run.asked, run.not_found) == (1, 1)
    assert customer.geocode_status == GeocodeStatus.NOT_FOUND
    assert customer.geocoded_latitude is None and customer.geocode_next_at == NOW + NOT_FOUND_RETRY
    assert geocode_pending(now=NOW + timedelta(days=29)).asked == 0
    assert geocode_pending(now=NOW + NOT_FOUND_RETRY).asked == 1
    assert len(searches(geocoder)) == 2


def test_an_error_is_recorded_and_retried_with_a_growing_backoff(db, small_team, geocoder):
    [(key, address)] = ordinary(small_team, geocoder)
    customer = customer_make(key, address)
    geocoder.error_rate = 1.0
    run = geocode_pending(now=NOW)
    customer.refresh_from_db()
    assert (run.asked, run.errors) == (1, 1)
    assert customer.geocode_status == GeocodeStatus.ERROR
    assert "503" in customer.geocode_error or "unavailable" in customer.geocode_error.lower()
    assert customer.geocode_attempts == 1 and customer.geocode_next_at == NOW + ERROR_RETRY_FIRST
    # Not before its time.
    assert geocode_pending(now=NOW + ERROR_RETRY_FIRST / 2).asked == 0
    # Then again, failing again: twice the wait.
    second = NOW + ERROR_RETRY_FIRST
    assert geocode_pending(now=second).errors == 1
    customer.refresh_from_db()
    assert customer.geocode_attempts == 2 and customer.geocode_next_at == second + 2 * ERROR_RETRY_FIRST
    # The service is back: found, the error gone.
    geocoder.error_rate = 0.0
    third = second + 2 * ERROR_RETRY_FIRST
    assert geocode_pending(now=third).found == 1
    customer.refresh_from_db()
    assert customer.geocode_status == GeocodeStatus.FOUND and customer.geocode_error == ""
    assert customer.geocode_next_at is None and customer.geocoded_latitude is not None
    assert len(searches(geocoder)) == 3


def test_garbage_a_429_a_timeout_and_a_closed_port_are_recorded_errors(db, small_team, geocoder, settings):
    pairs = ordinary(small_team, geocoder, count=4)
    customers = [customer_make(key, address) for key, address in pairs]
    geocoder.garbage_rate = 1.0
    assert geocode_pending(now=NOW, limit=1).errors == 1
    geocoder.garbage_rate = 0.0
    geocoder.min_delay = 60.0  # every request now comes too soon for it
    assert geocode_pending(now=NOW, limit=1).errors == 1
    geocoder.min_delay, geocoder.delay, settings.GEOCODER_TIMEOUT = PACE, 1.0, 0.3
    assert geocode_pending(now=NOW, limit=1).errors == 1
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        settings.GEOCODER_URL = f"http://127.0.0.1:{closed.getsockname()[1]}"
        assert geocode_pending(now=NOW, limit=1).errors == 1
    errors = []
    for customer in customers:
        customer.refresh_from_db()
        assert customer.geocode_status == GeocodeStatus.ERROR
        errors.append(customer.geocode_error)
    assert "not understood" in errors[0] or "deserialize" in errors[0].lower()
    assert "429" in errors[1]
    assert "within 0.3 s" in errors[2]
    assert errors[3].startswith("The geocoder failed:")
    assert all(len(error) <= 500 for error in errors)


# --- pace, cache, changes --------------------------------------------------------------------------


def test_requests_are_at_least_min_delay_apart(db, small_team, geocoder, settings):
    settings.GEOCODER_MIN_DELAY = geocoder.min_delay = 0.25
    for key, address in ordinary(small_team, geocoder, count=5):
        customer_make(key, address)
    run = geocode_pending(now=NOW)
    assert run.found == 5
    times = [r.at for r in searches(geocoder)]
    assert len(times) == 5 and all(r.status == 200 for r in geocoder.requests)
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.25


def test_two_customers_at_one_normalised_address_share_one_request(db, small_team, geocoder):
    [(key, address)] = ordinary(small_team, geocoder)
    first = customer_make(key, address)
    second = customer_make(("lead", 999_999_001), "  " + address.upper().replace(", ", " ,  ") + ".")
    assert first.address_key == second.address_key
    run = geocode_pending(now=NOW)
    assert (run.asked, run.customers) == (1, 2)
    # A third one later comes from the cache, without a request.
    third = customer_make(("contact", 999_999_002), address.lower())
    later = geocode_pending(now=NOW + timedelta(hours=1))
    assert (later.asked, later.from_cache, later.customers) == (0, 1, 1)
    points = {
        (c.geocode_status, c.geocoded_latitude, c.geocoded_longitude)
        for c in Customer.objects.filter(pk__in=[first.pk, second.pk, third.pk])
    }
    assert len(points) == 1 and next(iter(points))[0] == GeocodeStatus.FOUND
    assert len(searches(geocoder)) == 1 and GeocodeCache.objects.count() == 1


def test_a_changed_address_discards_the_old_geocode_and_is_geocoded_again(db, small_team, geocoder):
    (key, address), (other_key, other_address) = ordinary(small_team, geocoder, count=2)
    customer = customer_make(key, address)
    geocode_pending(now=NOW)
    customer.refresh_from_db()
    # The same address written differently is no change.
    assert customer_address_set(customer, address.upper() + " ") is False
    assert customer.geocode_status == GeocodeStatus.FOUND
    assert customer_address_set(customer, other_address) is True
    assert customer.address_key == address_key(other_address)
    assert customer.geocode_status == GeocodeStatus.PENDING and customer.geocoded_latitude is None
    assert customer.geocode_attempts == 0 and customer.geocoded_at is None and customer.geocode_precision == ""
    customer.save()
    assert geocode_pending(now=NOW).asked == 1
    customer.refresh_from_db()
    new_point = (customer.geocoded_latitude, customer.geocoded_longitude)
    assert km_between(new_point, small_team.customers[other_key]) < 0.001
    assert [r.query["q"] for r in searches(geocoder)] == [address_normalise(address), address_normalise(other_address)]


def test_limit_bounds_the_requests_and_the_rest_waits_for_the_next_run(db, small_team, geocoder):
    for key, address in ordinary(small_team, geocoder, count=3):
        customer_make(key, address)
    run = geocode_pending(now=NOW, limit=2)
    assert (run.asked, run.stopped_early) == (2, True)
    assert Customer.objects.filter(geocode_status=GeocodeStatus.PENDING).count() == 1
    rest = geocode_pending(now=NOW, limit=2)
    assert (rest.asked, rest.stopped_early) == (1, False)


def test_off_asks_nothing_and_marks_customers_off_until_it_is_set(db, small_team, geocoder, settings):
    [(key, address)] = ordinary(small_team, geocoder)
    customer = customer_make(key, address)
    empty = Customer.objects.create(resource_type="lead", resource_id=999_999_003)
    settings.GEOCODER_URL = ""
    run = geocode_pending(now=NOW)
    assert run.off and run.skipped == 1 and run.asked == 0
    assert "off" in run.summary()
    customer.refresh_from_db()
    assert customer.geocode_status == GeocodeStatus.OFF and searches(geocoder) == []
    settings.GEOCODER_URL = geocoder.url
    assert geocode_pending(now=NOW).found == 1
    empty.refresh_from_db()
    assert empty.geocode_status == GeocodeStatus.PENDING  # no address: nothing to geocode


def test_hostile_addresses_stay_text_and_reach_the_service_intact(db, small_team, geocoder):
    addresses = small_team.core_addresses()
    known = {address: key for key, address in addresses.items() if address in HOSTILE_ADDRESSES}
    assert known  # the generator gives some of the small team's customers hostile addresses
    for address, key in known.items():
        customer_make(key, address)
    others = [
        "&q=1 Main St&format=xml#frag, Chicago",
        "%00%0d%0a12 Main St\r\nX-Injected: yes",
        "'; DROP TABLE visits_customer; --",
        "1 Main St, " + "x" * (MAX_QUERY_CHARS + 10),
    ]
    for n, address in enumerate(others):
        customer_make(("lead", 999_999_100 + n), address)
    run = geocode_pending(now=NOW)
    assert run.found == len(known) and run.errors == 0
    assert run.not_found == len(others)
    # What arrived is the normal form, whole: query parameters, never markup or syntax.
    sent = [r.query["q"] for r in searches(geocoder)]
    expected = [address_normalise(a) for a in list(known) + others if len(address_normalise(a)) <= MAX_QUERY_CHARS]
    assert sorted(sent) == sorted(expected)
    assert all(set(r.query) >= {"q", "format"} and r.query["format"] == "json" for r in searches(geocoder))
    too_long = Customer.objects.get(resource_id=999_999_103)
    assert too_long.geocode_status == GeocodeStatus.NOT_FOUND and "longer than" in too_long.geocode_error
    for address, key in known.items():
        customer = Customer.objects.get(resource_type=key[0], resource_id=key[1])
        assert customer.address == address
        assert km_between((customer.geocoded_latitude, customer.geocoded_longitude), small_team.customers[key]) < 0.001


# --- the background task -------------------------------------------------------------------


def test_the_task_runs_a_bounded_batch_and_its_schedule_is_set_once(db, small_team, geocoder, settings):
    settings.SELL_ACCESS_TOKEN = "a-token"  # not a read-only archive, which geocodes nothing
    for key, address in ordinary(small_team, geocoder, count=3):
        customer_make(key, address)
    summary = geocode_task(limit=2)
    assert summary.startswith("2 addresses asked") and "more are due next run" in summary
    schedules_setup()
    schedules_setup()
    schedule = Schedule.objects.get(name=GEOCODE_SCHEDULE_NAME)
    assert schedule.func == "visits.tasks.geocode_task" and schedule.schedule_type == Schedule.MINUTES


def test_the_stand_in_knows_the_same_customers_whatever_the_window(small_team):
    """demo_geocoder generates one week; the demo Firehose's window and history must not matter."""
    servers = [DemoGeocoder(team_generate(seed=11, reps=6, weeks=1), seed=3), DemoGeocoder(small_team, seed=3)]
    for server in servers:
        server.stop()
    assert servers[0].places == servers[1].places and servers[0].wrong == servers[1].wrong
    addresses = {address_normalise(a) for k, a in small_team.core_addresses().items() if k not in servers[1].unknown}
    assert set(servers[1].places) == addresses


@pytest.mark.parametrize(
    "body",
    [
        b'[{"lat": "north", "lon": "1"}]',
        b'[{"lat": "91.5", "lon": "0"}]',
        b'[{"lat": "NaN", "lon": "0"}]',
        b'{"error": "Unknown format"}',
        b'"just a string"',
        b"[1, 2, 3]",
    ],
)
def test_json_that_is_not_places_with_coordinates_is_a_recorded_error(db, small_team, geocoder, body):
    [(key, address)] = ordinary(small_team, geocoder)
    customer = customer_make(key, address)
    geocoder.body = body
    run = geocode_pending(now=NOW)
    customer.refresh_from_db()
    assert (run.asked, run.errors) == (1, 1), customer.geocode_error
    assert customer.geocode_status == GeocodeStatus.ERROR and customer.geocoded_latitude is None
    assert customer.geocode_error.startswith("The geocoder")


def test_an_empty_list_null_or_a_place_without_coordinates_is_no_result(db, small_team, geocoder):
    bodies = [b"[]", b"null", b'[{"display_name": "no coordinates"}]']
    pairs = ordinary(small_team, geocoder, count=len(bodies))
    for (key, address), body in zip(pairs, bodies, strict=True):
        customer_make(key, address)
        geocoder.body = body
        assert geocode_pending(now=NOW).not_found == 1


@pytest.mark.slow
def test_demo_geocoder_command_serves_the_demo_customers_with_its_knobs():
    """`manage.py demo_geocoder` as bin/demo starts it: the demo team's addresses, 429 when too fast."""
    process = subprocess.Popen(
        [sys.executable, "manage.py", "demo_geocoder", "--port", "0", "--min-delay", "0.5", "--wrong", "4"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = re.search(r"GEOCODER_URL=(\S+)", line).group(1)
        assert "4 wrong, 2 unknown" in line
        demo = team_generate(seed=7, reps=25, weeks=1)
        server = DemoGeocoder(demo, wrong_addresses=4)  # the same knobs: the same wrong and unknown ones
        server.stop()
        assert len(server.wrong) == 4
        key = next(k for k in sorted(demo.customers) if k not in server.wrong and k not in server.unknown)
        query = urlencode({"q": demo.core_addresses()[key], "format": "json", "limit": 1, "addressdetails": 1})
        with urlopen(f"{url}/search?{query}", timeout=5) as answer:
            [place] = json.loads(answer.read())
        assert km_between((float(place["lat"]), float(place["lon"])), demo.customers[key]) < 0.001
        with pytest.raises(HTTPError) as refused:
            urlopen(f"{url}/search?{query}", timeout=5)
        assert refused.value.code == 429
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_address_changed_during_a_run_is_not_given_the_old_addresses_point(db, small_team, geocoder):
    (key, address), (other_key, other_address), (_, new_address) = ordinary(small_team, geocoder, count=3)
    customer_make(key, address)
    moving = customer_make(other_key, other_address)

    def sync_meanwhile(run):  # customers_sync, between the read of the due customers and their write
        if run.asked == 1:
            fresh = Customer.objects.get(pk=moving.pk)
            customer_address_set(fresh, new_address)
            fresh.save()

    run = geocode_pending(now=NOW, progress=sync_meanwhile)
    assert run.asked == 2 and run.customers == 1
    moving.refresh_from_db()
    assert moving.address_key == address_key(new_address)
    assert moving.geocode_status == GeocodeStatus.PENDING and moving.geocoded_latitude is None
    assert geocode_pending(now=NOW).asked == 1
    moving.refresh_from_db()
    assert moving.geocode_status == GeocodeStatus.FOUND


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, value",
    [("GEOCODER_URL", "nominatim.example.com"), ("GEOCODER_URL", "ftp://x.example"), ("GEOCODER_MIN_DELAY", "-1"),
     ("GEOCODER_MIN_DELAY", "soon"), ("GEOCODER_TIMEOUT", "0")],
)  # fmt: skip
def test_nonsense_geocoder_settings_stop_start_up_naming_the_variable(name, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCODER_", "DATABASE_URL", "REDIS_URL"))}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**env, name: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and name in done.stderr and "ImproperlyConfigured" in done.stderr

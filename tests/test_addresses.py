"""Suspect addresses (geo/suspects.py, review/addresses.py, /review/addresses/): who is suspect on
hand-made customers, the ranking, marks (with permission, append-only, shown as history), the mark
copied onto the visits and their reps' flags, hostile addresses, bad query strings, and the demo's
three customers whose address in Sell is wrong."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import DatabaseError
from django.utils import timezone

from tests.conftest import assert_flags_match
from tests.test_customers import SHOP, offset, visit_add
from visits.geo.customers import customers_refresh
from visits.geo.distance import metres_between
from visits.geo.suspects import customer_visits_mark
from visits.models import AddressMark, Customer, DirtyRep, Flag, FlagRule, FlagWindow, GeocodeStatus, Visit
from visits.review.addresses import address_mark
from visits.review.flags import flags_rebuild

pytestmark = pytest.mark.django_db

TOO_FAR = "resource_location_too_far"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quoted"'


def customer(resource_id: int) -> Customer:
    return Customer.objects.get(resource_type="contact", resource_id=resource_id)


def learned_at(resource_id: int, point, *, rep_id: int = 1, first_id: int) -> None:
    """Two verified visits at `point`: a learned point there."""
    visit_add(first_id, position=point, resource_id=resource_id, rep_id=rep_id)
    visit_add(first_id + 1, position=offset(point, east_m=5), resource_id=resource_id, rep_id=rep_id)


def several_cases() -> None:
    """Customer 1: too far for reps 1, 2 and 3 (two by Sell's status, one by the distance only);
    customer 2: too far for rep 1 alone, three times; customer 3: its geocode 5 km from its learned
    point, nobody too far; customer 4: too far for reps 1 and 2, once each."""
    learned_at(1, SHOP, first_id=100)
    visit_add(110, position=offset(SHOP, north_m=3000), status=TOO_FAR, resource_id=1, rep_id=1)
    visit_add(111, position=offset(SHOP, north_m=200), status=TOO_FAR, resource_id=1, rep_id=2)  # Sell: too far
    visit_add(112, position=offset(SHOP, north_m=1500), resource_id=1, rep_id=3)  # verified, yet 1.5 km off
    visit_add(113, position=offset(SHOP, north_m=500), resource_id=1, rep_id=4)  # verified, 500 m: not far
    learned_at(2, SHOP, first_id=200)
    for n in range(3):
        visit_add(210 + n, position=offset(SHOP, east_m=4000), status=TOO_FAR, resource_id=2, rep_id=1)
    learned_at(3, SHOP, first_id=300)
    learned_at(4, SHOP, first_id=400)
    visit_add(410, position=offset(SHOP, east_m=4000), status=TOO_FAR, resource_id=4, rep_id=1)
    visit_add(411, position=offset(SHOP, east_m=4000), status=TOO_FAR, resource_id=4, rep_id=2)
    customers_refresh()
    geocoded = offset(SHOP, north_m=5000)
    Customer.objects.filter(resource_id=3).update(
        geocoded_latitude=geocoded[0], geocoded_longitude=geocoded[1], geocode_status=GeocodeStatus.FOUND
    )
    customers_refresh(everything=True)


def test_suspects_are_too_far_for_several_reps_or_have_disagreeing_points(settings):
    settings.DISTANCE_FAR_KM = 1.0
    settings.SUSPECT_ADDRESS_REPS = 2
    several_cases()
    figures = {
        c.resource_id: (c.far_visits, c.far_reps, c.suspect)
        for c in Customer.objects.filter(resource_id__in=[1, 2, 3, 4])
    }
    assert figures == {1: (3, 3, True), 2: (3, 1, False), 3: (0, 0, True), 4: (2, 2, True)}
    third = customer(3)
    learned = (third.learned_latitude, third.learned_longitude)
    want = metres_between((third.geocoded_latitude, third.geocoded_longitude), learned)
    assert third.points_apart_m == pytest.approx(want) and 4900 < third.points_apart_m < 5100
    assert customer(1).points_apart_m is None  # no geocode: nothing to compare
    # The thresholds are settings: three reps needed, customer 4 is no longer suspect; 6 km apart allowed, 3 neither.
    settings.SUSPECT_ADDRESS_REPS = 3
    settings.DISTANCE_FAR_KM = 6.0
    customers_refresh()
    assert set(Customer.objects.filter(suspect=True).values_list("resource_id", flat=True)) == set()
    settings.DISTANCE_FAR_KM = 1.0
    customers_refresh()
    assert set(Customer.objects.filter(suspect=True).values_list("resource_id", flat=True)) == {1, 3}


def test_the_figures_follow_new_and_deleted_visits():
    learned_at(1, SHOP, first_id=100)
    visit_add(110, position=offset(SHOP, north_m=3000), status=TOO_FAR, resource_id=1, rep_id=1)
    customers_refresh()
    assert (customer(1).far_reps, customer(1).suspect) == (1, False)
    visit_add(111, position=offset(SHOP, north_m=3000), status=TOO_FAR, resource_id=1, rep_id=2)
    customers_refresh()
    assert (customer(1).far_visits, customer(1).far_reps, customer(1).suspect) == (2, 2, True)
    Visit.objects.filter(id=111).update(deleted_at=timezone.now())  # an id-only delete: no ingested_at
    customers_refresh()
    assert (customer(1).far_visits, customer(1).far_reps, customer(1).suspect) == (1, 1, False)


def test_the_page_ranks_by_visits_affected_then_reps_and_says_how_many(client, cast):
    several_cases()
    # Customer 5: as many visits affected as customer 1 (3), from fewer reps (2): after it.
    learned_at(5, SHOP, first_id=500)
    for n, rep in enumerate([1, 1, 2]):
        visit_add(510 + n, position=offset(SHOP, east_m=2500), status=TOO_FAR, resource_id=5, rep_id=rep)
    customers_refresh()
    client.force_login(cast.manager)
    page = client.get("/review/addresses/").content.decode()
    ids = [customer(r).id for r in (1, 5, 4, 3)]
    positions = [page.index(f'id="customer-{i}"') for i in ids]
    assert positions == sorted(positions)
    assert f'id="customer-{customer(2).id}"' not in page  # one rep only: not suspect
    assert "4 customers" in page
    assert "Address wrong in Sell</button>" not in page  # a manager reads, does not mark
    assert "5.0 km" in page  # customer 3's points apart
    assert "Learned from 2 verified visits" in page  # the point used, and why


def test_paging_is_capped_with_a_count_and_bad_parameters_are_a_400_with_a_message(client, cast, monkeypatch):
    from visits.review import addresses

    monkeypatch.setattr(addresses, "PAGE_SIZE", 2)
    several_cases()
    client.force_login(cast.manager)
    first = client.get("/review/addresses/").content.decode()
    assert "3 customers · page 1 of 2, 1–2" in first and "?page=2" in first
    second = client.get("/review/addresses/?page=2").content.decode()
    assert f'id="customer-{customer(3).id}"' in second and f'id="customer-{customer(1).id}"' not in second
    monkeypatch.setattr(addresses, "PAGES_MAX", 1)  # only the first page is paged, the count says all
    capped = client.get("/review/addresses/").content.decode()
    assert "3 customers · page 1 of 1, 1–2 · only the 2 most affected are paged" in capped and "?page=2" not in capped
    monkeypatch.setattr(addresses, "PAGES_MAX", 100)
    for query, message in [
        ("page=abc", "page: must be a whole number"),
        ("page=0", "page: Ensure this value is greater than or equal to 1."),
        ("page=3", "page: there are 2 pages"),
        ("page=101", "page: Ensure this value is less than or equal to 100."),
        ("mark=bogus", "mark: bogus is not one of unmarked, wrong"),
    ]:
        response = client.get(f"/review/addresses/?{query}")
        assert response.status_code == 400, query
        assert message in response.content.decode(), (query, response.content.decode()[-800:])


def test_the_empty_state_says_so(client, cast):
    learned_at(2, SHOP, first_id=200)
    visit_add(210, position=offset(SHOP, east_m=4000), status=TOO_FAR, resource_id=2, rep_id=1)
    customers_refresh()
    client.force_login(cast.reviewer)
    page = client.get("/review/addresses/").content.decode()
    assert "No suspect address: no customer has too-far visits from 2 reps" in page
    assert "No address marked yet." in page
    marked = client.get("/review/addresses/?mark=wrong").content.decode()
    assert "No suspect address in this state." in marked


def test_marking_needs_the_review_permission_and_is_recorded_with_its_history(client, cast):
    several_cases()
    target = customer(1)
    url = f"/review/addresses/{target.id}/mark/"
    client.force_login(cast.manager)
    refused = client.post(url, {"wrong": "1", "note": "no"})
    assert refused.status_code == 403 and b"Only Reviewers can decide" in refused.content
    assert not AddressMark.objects.exists() and not customer(1).address_wrong
    client.force_login(cast.reviewer)
    response = client.post(url, {"wrong": "1", "note": "The shop moved in 2024 <b>really</b>"})
    assert response.status_code == 302 and response["Location"] == f"/review/addresses/{target.id}/"
    assert customer(1).address_wrong
    page = client.get(response["Location"]).content.decode()
    assert "address marked wrong in Sell; 6 visits changed." in page
    assert "The shop moved in 2024 &lt;b&gt;really&lt;/b&gt;" in page
    assert "Undo the mark</button>" in page
    # The same mark again changes nothing and says so.
    again = client.post(url, {"wrong": "1"}, follow=True).content.decode()
    assert "is already marked wrong in Sell: nothing recorded." in again
    assert AddressMark.objects.count() == 1
    client.post(url, {"wrong": "0", "note": "Sell was right"})
    assert not customer(1).address_wrong
    marks = list(AddressMark.objects.order_by("decided_at", "id").values_list("wrong", "note", "decided_by__username"))
    assert marks == [(True, "The shop moved in 2024 <b>really</b>", "reviewer"), (False, "Sell was right", "reviewer")]
    listed = client.get("/review/addresses/").content.decode()
    history = listed[listed.index("History of the marks") :]
    assert history.index("Mark undone") < history.index("Address wrong in Sell")  # newest first
    assert "Sell was right" in history
    for bad, message in [({"wrong": "2"}, "wrong: 2 is not 1 or 0"), ({}, "wrong: say whether")]:
        response = client.post(url, bad)
        assert response.status_code == 400 and message in response.content.decode()
    assert client.post("/review/addresses/999999/mark/", {"wrong": "1"}).status_code == 404


def test_marks_are_never_edited_or_deleted_not_even_by_sql(cast):
    several_cases()
    mark, _ = address_mark(customer=customer(1), wrong=True, note="n", user=cast.reviewer)
    with pytest.raises(PermissionError):
        AddressMark.objects.filter(id=mark.id).update(note="changed")
    with pytest.raises(PermissionError):
        AddressMark.objects.filter(id=mark.id).delete()
    with pytest.raises(PermissionError):
        mark.save()
    for sql in ("UPDATE visits_addressmark SET note = 'x'", "DELETE FROM visits_addressmark"):
        with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert AddressMark.objects.get().note == "n"


def test_a_mark_reaches_every_visit_and_its_reps_flags_then_a_refresh_keeps_it(cast):
    several_cases()
    target = customer(1)
    ids = set(Visit.objects.filter(resource_id=1).values_list("id", flat=True))
    reps = set(Visit.objects.filter(resource_id=1).values_list("rep_id", flat=True))
    # The copy alone records every visit changed for the flags' refresh (a window each, its rep dirty).
    target.address_wrong = True
    Customer.objects.filter(pk=target.pk).update(address_wrong=True)
    assert customer_visits_mark(customer=target) == len(ids)
    assert set(DirtyRep.objects.values_list("rep_id", flat=True)) == reps
    assert set(FlagWindow.objects.values_list("visit_id", flat=True)) == ids
    assert set(Visit.objects.filter(customer_address_wrong=True).values_list("id", flat=True)) == ids
    assert customer_visits_mark(customer=target) == 0  # done is done
    Customer.objects.filter(pk=target.pk).update(address_wrong=False)
    target.address_wrong = False
    customer_visits_mark(customer=target)
    DirtyRep.objects.all().delete()
    # Through address_mark: marked, and the flags refreshed at once (no rep left waiting).
    _, changed = address_mark(customer=customer(1), wrong=True, note="", user=cast.reviewer)
    assert changed == len(ids) and not DirtyRep.objects.exists()
    assert set(Visit.objects.filter(customer_address_wrong=True).values_list("id", flat=True)) == ids
    # A new visit of the marked customer, and one moved from it to customer 2: the refresh keeps the mark.
    visit_add(120, position=offset(SHOP, north_m=9000), status=TOO_FAR, resource_id=1, rep_id=7)
    Visit.objects.filter(id=110).update(resource_id=2, ingested_at=timezone.now())
    result = customers_refresh()
    assert result.address_wrong_changed == 2
    assert Visit.objects.get(id=120).customer_address_wrong and not Visit.objects.get(id=110).customer_address_wrong
    assert set(DirtyRep.objects.values_list("rep_id", flat=True)) == {7, 1}
    assert {120, 110} <= set(FlagWindow.objects.values_list("visit_id", flat=True))
    assert customers_refresh().address_wrong_changed == 0
    # Undone: every visit loses it.
    address_mark(customer=customer(1), wrong=False, note="", user=cast.reviewer)
    assert not Visit.objects.filter(customer_address_wrong=True).exists()


def test_hostile_addresses_are_escaped_on_both_pages(client, cast):
    learned_at(1, SHOP, first_id=100)
    for n, rep in enumerate([1, 2]):
        visit_add(110 + n, position=offset(SHOP, north_m=3000), status=TOO_FAR, address=HOSTILE, rep_id=rep)
    customers_refresh()
    assert customer(1).address == HOSTILE and customer(1).suspect
    client.force_login(cast.reviewer)
    for url in ("/review/addresses/", f"/review/addresses/{customer(1).id}/"):
        page = client.get(url).content.decode()
        assert "<script>alert" not in page and "<img src=x" not in page, url
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp;" in page


def test_a_customers_page_lists_its_visits_newest_first_and_links_them(client, cast):
    several_cases()
    client.force_login(cast.manager)
    page = client.get(f"/review/addresses/{customer(1).id}/").content.decode()
    assert "6 visits." in page
    links = [page.index(f'href="/visits/{v}/"') for v in (113, 112, 111, 110, 101, 100)]
    assert links == sorted(links)  # newest first (visit_add spaces them a minute apart by id)
    assert 'href="/visits/200/"' not in page
    far = Visit.objects.get(id=110).customer_distance_m
    assert 2500 < far < 3500 and f"{far / 1000:.1f} km" in page  # visit 110's distance
    assert client.get("/review/addresses/999999/").status_code == 404


@pytest.mark.slow
def test_the_demos_wrong_addresses_come_out_as_suspects_ranked(serve, settings, full_team, client, cast):
    """The demo's own team (bin/demo's seed and reps) and its geocoder: the three customers whose
    address geocodes 10-40 km off are suspects, their geocode that far from the point their verified
    visits teach (or their one verified visit), in the page's order."""
    from visits.demo.geocoder import DemoGeocoder
    from visits.geo.geocode import geocode_pending
    from visits.ingest.backfill import history_backfill
    from visits.ingest.pull import visits_pull
    from visits.review.addresses import suspects_ranked

    serve(full_team)
    pull = visits_pull()
    assert not pull.errors, pull.errors
    history_backfill()  # the addresses, from the Core API, as bin/demo runs it
    with DemoGeocoder(full_team, min_delay=0.005) as geocoder:  # bin/demo's: seed 0, 3 wrong
        settings.GEOCODER_URL = geocoder.url
        settings.GEOCODER_MIN_DELAY = 0.005
        settings.GEOCODER_TIMEOUT = 2.0
        customers_refresh()
        geocode_pending(now=timezone.now() + timedelta(days=1), limit=10_000)
        customers_refresh()
    wrong = set(geocoder.wrong)
    assert len(wrong) == 3
    suspects = list(suspects_ranked(customers=Customer.objects.all()))
    keys = [(c.resource_type, c.resource_id) for c in suspects]
    assert wrong <= set(keys), (wrong, keys)
    for c in suspects:
        if (c.resource_type, c.resource_id) in wrong:
            assert 9_500 <= c.points_apart_m <= 40_500, c
    ranks = [(-c.far_visits, -c.far_reps, c.id) for c in suspects]
    assert ranks == sorted(ranks)
    print(
        f"{len(suspects)} suspects: "
        + ", ".join(f"{c} {c.far_visits}/{c.far_reps}/{c.points_apart_m}" for c in suspects)
    )
    client.force_login(cast.reviewer)
    page = client.get("/review/addresses/").content.decode()
    positions = [page.index(f'id="customer-{c.id}"') for c in suspects[:50]]
    assert positions == sorted(positions)


def test_a_mark_through_the_page_takes_the_customers_distance_flags_out_of_the_queue(client, cast, settings):
    """The reviewer's mark, the flag rules and the queue together: the customer's too-far visits
    (Sell's status, and far_from_customer) leave the awaiting queue, other customers' stay, and
    undoing the mark brings them back."""
    settings.FLAG_CUSTOMER_KM = 2.0
    several_cases()
    flags_rebuild()  # the visits were made by hand, not ingested: every rep's flags
    ones = set(Visit.objects.filter(resource_id=1).values_list("id", flat=True))
    distance_rules = {FlagRule.TOO_FAR, FlagRule.FAR_FROM_CUSTOMER}

    def distance_flagged() -> set[int]:
        return set(Flag.objects.filter(rule__in=distance_rules).values_list("visit_id", flat=True))

    def queued() -> set[int]:
        page = client.get("/review/?review=awaiting&sort=newest").content.decode()
        return {vid for vid in range(100, 500) if f'id="visit-{vid}"' in page}

    assert {110, 111} <= distance_flagged() & ones  # 110: 3 km and Sell's too far; 111: Sell's too far
    assert Flag.objects.filter(visit_id=110, rule=FlagRule.FAR_FROM_CUSTOMER).exists()
    client.force_login(cast.reviewer)
    before = queued()
    assert {110, 111, 410} <= before
    response = client.post(f"/review/addresses/{customer(1).id}/mark/", {"wrong": "1", "note": "moved"})
    assert response.status_code == 302
    assert not distance_flagged() & ones  # both rules, on every visit of the customer
    assert {410, 411} <= distance_flagged()  # another customer's stay
    after = queued()
    assert not after & {110, 111} and {410, 411} <= after
    assert not Visit.objects.filter(id__in=[110, 111], flagged=True).exists()
    assert_flags_match()
    client.post(f"/review/addresses/{customer(1).id}/mark/", {"wrong": "0"})
    assert {110, 111} <= distance_flagged() and {110, 111} <= queued()
    assert_flags_match()

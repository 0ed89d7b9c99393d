"""Whose address in Sell looks wrong, kept with each customers' refresh (suspects_refresh): per
customer, its "too far" visits (Sell's resource_location_too_far, or further than DISTANCE_FAR_KM
from the point used), how many different reps logged them, and how far apart its geocoded and
learned points are (without a learned point, its geocode and its one verified visit, if it has one:
Sell judged that visit near the address, a geocode far from it is as telling). A customer is
suspect when several reps (SUSPECT_ADDRESS_REPS) were too far there, or when its two points
disagree by more than DISTANCE_FAR_KM.

A reviewer's mark (review/addresses.py) is copied onto the customer's visits as
Visit.customer_address_wrong (customer_visits_mark); addresses_wrong_keep keeps it so for the
visits that arrive or change customer later. Either way the visits changed are recorded for the
flags (flags.visits_mark, as every write of a visit's customer fields), so their distance flags
come or go at the next flags_refresh.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q

from visits.geo.distance import metres_between
from visits.models import Customer, VerificationStatus, Visit
from visits.review.flags import visits_mark

WRITE_CHUNK = 1000  # visit ids per UPDATE


def too_far() -> Q:
    """The visits counted against a customer: Sell says too far, or the distance does."""
    far_m = settings.DISTANCE_FAR_KM * 1000
    return Q(verification_status=VerificationStatus.TOO_FAR) | Q(customer_distance_m__gt=far_m)


def suspects_refresh() -> int:
    """Every customer's far visits, far reps, points apart and suspect flag (the rule the README
    states: too-far visits from SUSPECT_ADDRESS_REPS reps, or points more than DISTANCE_FAR_KM
    apart), from one GROUP BY over the live too-far visits and one read of the customers' points;
    writes only what differs. Returns how many customers are suspect."""
    from visits.geo.customers import rows_update  # customers.py calls this module: imported here

    counts = {
        (rtype, rid): (n, reps)
        for rtype, rid, n, reps in Visit.objects.live()
        .filter(too_far(), resource_id__isnull=False)
        .order_by()
        .values_list("resource_type", "resource_id")
        .annotate(n=Count("id"), reps=Count("rep_id", distinct=True))
        .values_list("resource_type", "resource_id", "n", "reps")
    }
    single, kept = single_verified()
    rows = Customer.objects.values_list(
        "id", "resource_type", "resource_id", "geocoded_latitude", "geocoded_longitude", "learned_latitude",
        "learned_longitude", "far_visits", "far_reps", "points_apart_m", "suspect",
    )  # fmt: skip
    changed, suspects = [], 0
    far_m, reps_min = (
        settings.DISTANCE_FAR_KM * 1000,
        settings.SUSPECT_ADDRESS_REPS,
    )  # read once: 60,000 customers a refresh
    for pk, rtype, rid, glat, glng, llat, llng, held_visits, held_reps, held_apart, held_suspect in rows.iterator(
        chunk_size=20_000
    ):
        far_visits, far_reps = counts.get((rtype, rid), (0, 0))
        apart = None
        if glat is not None and glng is not None:
            taught = (llat, llng) if llat is not None and llng is not None else single.get((rtype, rid))
            apart = None if taught is None else metres_between((glat, glng), taught)
            if llat is None and (rtype, rid) in kept:
                apart = held_apart  # its verified visits' positions were removed: as it stood
        suspect = far_reps >= reps_min or (apart is not None and apart > far_m)
        suspects += suspect
        same_apart = apart == held_apart or (
            apart is not None and held_apart is not None and abs(apart - held_apart) < 1e-6
        )
        if (far_visits, far_reps, suspect) != (held_visits, held_reps, held_suspect) or not same_apart:
            changed.append(
                Customer(id=pk, far_visits=far_visits, far_reps=far_reps, points_apart_m=apart, suspect=suspect)
            )
    rows_update(Customer, ["far_visits", "far_reps", "points_apart_m", "suspect"], changed)
    return suspects


def single_verified() -> tuple[dict[tuple[str, int], tuple[float, float]], set[tuple[str, int]]]:
    """The position of the one verified visit of each geocoded customer without a learned point
    (one is too few to learn from, yet Sell judged it near the address: a geocode far from it is as
    suspect), and those of these customers with a verified visit whose position the retention rule
    removed (their figure is kept as it stood). Read for those customers only, by their ids (the
    index visit_resource)."""
    wanted = set(
        Customer.objects.filter(geocoded_latitude__isnull=False, learned_latitude__isnull=True).values_list(
            "resource_type", "resource_id"
        )
    )
    ids = sorted({rid for _, rid in wanted})
    found: dict[tuple[str, int], list[tuple[float, float]]] = {}
    kept: set[tuple[str, int]] = set()
    for start in range(0, len(ids), 2000):
        rows = (
            Visit.objects.live()
            .filter(resource_id__in=ids[start : start + 2000], verification_status=VerificationStatus.VERIFIED)
            .filter(Q(latitude__isnull=False) | Q(coordinates_removed_at__isnull=False))
            .values_list("resource_type", "resource_id", "latitude", "longitude")
        )
        for rtype, rid, lat, lng in rows:
            if (rtype, rid) not in wanted:
                continue
            if lat is None:
                kept.add((rtype, rid))
            elif not (lat == 0 and lng == 0):
                found.setdefault((rtype, rid), []).append((lat, lng))
    return {key: points[0] for key, points in found.items() if len(points) == 1}, kept


def _visits_set(visit_ids: list[int], *, wrong: bool) -> None:
    for start in range(0, len(visit_ids), WRITE_CHUNK):
        Visit.objects.filter(id__in=visit_ids[start : start + WRITE_CHUNK]).update(customer_address_wrong=wrong)


def _flags_told(rows: list[tuple[int, int]]) -> None:
    """Record these (visit, rep) for the flags before their mark is written, as every write of a
    visit's customer fields does (flags.visits_mark: a window at each, a rep with many whole)."""
    by_rep: dict[int, list[int]] = {}
    for visit_id, rep_id in rows:
        by_rep.setdefault(rep_id, []).append(visit_id)
    visits_mark(visits=by_rep)


def customer_visits_mark(*, customer: Customer) -> int:
    """Every visit of this customer (deleted ones too) gets its Customer.address_wrong as
    Visit.customer_address_wrong, recorded for the flags. Returns the visits changed."""
    rows = Visit.objects.filter(
        resource_id=customer.resource_id,
        resource_type=customer.resource_type,
        customer_address_wrong=not customer.address_wrong,
    ).values_list("id", "rep_id")
    changed = list(rows)
    with transaction.atomic():
        _flags_told(changed)
        _visits_set([visit_id for visit_id, _ in changed], wrong=customer.address_wrong)
    return len(changed)


def addresses_wrong_keep() -> int:
    """Visit.customer_address_wrong equal to its customer's mark for every visit: the visits of the
    marked customers that lack it (new, or given that customer), and those holding it whose customer
    is not marked (given another customer). Both read an index (visit_resource, visit_address_wrong):
    few customers are marked. Returns the visits changed."""
    marked = set(Customer.objects.filter(address_wrong=True).values_list("resource_type", "resource_id"))
    set_on: list[tuple[int, int]] = []
    if marked:
        rows = Visit.objects.filter(
            resource_id__in=sorted({rid for _, rid in marked}), customer_address_wrong=False
        ).values_list("id", "rep_id", "resource_type", "resource_id")
        set_on = [(vid, rep) for vid, rep, rtype, rid in rows if (rtype, rid) in marked]
    rows = Visit.objects.filter(customer_address_wrong=True).values_list("id", "rep_id", "resource_type", "resource_id")
    set_off = [(vid, rep) for vid, rep, rtype, rid in rows if (rtype, rid) not in marked]
    if not set_on and not set_off:
        return 0
    with transaction.atomic():
        _flags_told(set_on + set_off)
        _visits_set([vid for vid, _ in set_on], wrong=True)
        _visits_set([vid for vid, _ in set_off], wrong=False)
    return len(set_on) + len(set_off)

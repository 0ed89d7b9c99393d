"""Where each customer is and how far every visit was from it: a Customer row per Sell resource the
live visits name, its newest address, the point learned from its verified visits, the point its
visits are measured from (and why), and each visit's geodesic distance to it (customers_refresh).

An address change discards what was derived from the old address: the geocoded point and its
status (geocoding starts again for the new one), and the chosen point when it was the geocoded one.
The learned point stays: it comes from the visits, not from the address. The choice is then made
again, and the visits of every customer whose point moved are measured again.

The periodic refresh reads the customers of the visits ingested since its last run (ingestion
sets ingested_at: nothing else is asked of it), and those whose count of verified visits no longer
matches their learned point's (a verified visit deleted, or moved to another customer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from visits.geo import suspects
from visits.geo.centre import centre_median, centre_spread_m
from visits.geo.distance import is_null_island, metres_between
from visits.geo.geocode import GEOCODE_RESET, customer_address_set
from visits.models import Customer, CustomerLocation, DistanceState, GeocodeStatus, VerificationStatus, Visit

Key = tuple[str, int]  # (resource_type, resource_id)
Progress = Callable[[str], None]

LEARN_MIN_VISITS = 2  # verified visits with a position needed for a learned point
# A refresh measures again the visits ingested since the previous one started, less this: a
# transaction of ingestion that began before it but committed after is still seen.
REFRESH_OVERLAP = timedelta(minutes=5)
KEYS_LISTED_MAX = 2000  # more customers than this to measure: one pass over all the live visits
WRITE_CHUNK = 1000  # visits per UPDATE statement


def customer_address_change(customer: Customer, address: str) -> bool:
    """Set a customer's address (geocode.customer_address_set forgets the old address's geocode);
    when its key changes, the chosen point goes too if it was the geocode (customers_choose picks
    again). Returns whether the key changed."""
    if not customer_address_set(customer, address):
        return False
    if customer.location == CustomerLocation.GEOCODED:
        customer.location, customer.latitude, customer.longitude = "", None, None
        customer.location_reason = "Its address changed; the new one is not geocoded yet."
    return True


@dataclass
class RefreshResult:
    customers: int = 0
    created: int = 0
    addresses_changed: int = 0
    learned: int = 0
    points_moved: int = 0
    visits_measured: int = 0
    distances_written: int = 0
    suspects: int = 0
    address_wrong_changed: int = 0
    geocode: str = ""
    moved: set[Key] = field(default_factory=set, repr=False)

    def summary(self) -> str:
        located = Customer.objects.exclude(location="").count()
        geocoded = Customer.objects.filter(geocoded_latitude__isnull=False).count()
        with_learned = Customer.objects.filter(learned_latitude__isnull=False).count()
        measured = Visit.objects.live().filter(customer_distance_m__isnull=False).count()
        return (
            f"{Customer.objects.count():,} customers, {with_learned:,} with a learned point, {geocoded:,} geocoded, "
            f"{located:,} located; {measured:,} visits with a distance"
        )


def _live(keys: set[Key] | None):
    """The live visits with a customer, of these customers (None: all)."""
    visits = Visit.objects.live().filter(resource_id__isnull=False).order_by()
    if keys is not None and len(keys) <= KEYS_LISTED_MAX:  # more: every visit read, the callers filter
        visits = visits.filter(resource_id__in=sorted({rid for _, rid in keys}))
    return visits


def customers_sync(*, keys: set[Key] | None = None) -> tuple[int, int]:
    """A Customer row for each (resource_type, resource_id) of the live visits (of `keys`, or all),
    with the newest non-empty resource_address of its visits (an address never seen keeps the old
    one). Returns (customers created, addresses changed)."""
    newest: dict[Key, tuple[datetime, int, str]] = {}
    seen: set[Key] = set()
    rows = _live(keys).values_list("resource_type", "resource_id", "visited_at", "id", "resource_address")
    for rtype, rid, visited_at, visit_id, address in rows.iterator(chunk_size=5000):
        key = (rtype, rid)
        if keys is not None and key not in keys:
            continue
        seen.add(key)
        if address and (key not in newest or (visited_at, visit_id) > newest[key][:2]):
            newest[key] = (visited_at, visit_id, address)
    held = {(c.resource_type, c.resource_id): c for c in _customers(seen if keys is not None else None)}
    # Every value given: bulk_create resolves each db_default left out as an expression, row by
    # row (two thirds of a first refresh's time at 60,000 customers).
    blank = {"address": "", "address_key": "", "geocode_precision": "", "geocode_error": "", "location": ""}
    created = [
        Customer(resource_type=t, resource_id=i, **blank, location_reason="", learned_visits=0)
        for t, i in sorted(seen - held.keys())
    ]
    for customer in created:
        held[(customer.resource_type, customer.resource_id)] = customer
    changed: list[Customer] = []
    rekeyed = 0
    for key, (_, _, address) in newest.items():
        customer = held[key]
        if customer.address == address:
            continue
        if customer_address_change(customer, address) and customer.pk:
            rekeyed += 1
        if customer.pk:
            changed.append(customer)
    with transaction.atomic():
        Customer.objects.bulk_create(created, batch_size=500)
        fields = ["address", "address_key", *GEOCODE_RESET, "location", "latitude", "longitude", "location_reason"]
        rows_update(Customer, fields, changed)
    return len(created), rekeyed


def _customers(keys: set[Key] | None) -> list[Customer]:
    customers = Customer.objects.all()
    if keys is not None:
        if not keys:
            return []
        if len(keys) <= KEYS_LISTED_MAX:
            customers = customers.filter(resource_id__in=sorted({rid for _, rid in keys}))
        return [c for c in customers if (c.resource_type, c.resource_id) in keys]
    return list(customers)


def customers_learn(*, keys: set[Key] | None = None, now: datetime | None = None) -> int:
    """The learned point of each customer (of `keys`, or all): the geometric median of the rep
    positions of its verified live visits, from at least LEARN_MIN_VISITS of them, with how many
    and their median distance to it; cleared with fewer. Returns how many customers have one."""
    now = now or timezone.now()
    positions: dict[Key, list[tuple[float, float]]] = {}
    rows = (
        _live(keys)
        .filter(verification_status=VerificationStatus.VERIFIED, latitude__isnull=False)
        .values_list("resource_type", "resource_id", "latitude", "longitude")
    )
    for rtype, rid, lat, lng in rows.iterator(chunk_size=5000):
        if not is_null_island(lat, lng) and (keys is None or (rtype, rid) in keys):
            positions.setdefault((rtype, rid), []).append((lat, lng))
    changed = []
    learned = 0
    kept = learned_kept(keys=keys)
    for customer in _customers(keys):
        if (customer.resource_type, customer.resource_id) in kept and customer.learned_latitude is not None:
            learned += 1  # learned from positions the retention rule removed since: kept as it stood
            continue
        # Sorted: the median's iterations round differently in another order, and the rows come in
        # whatever order a plan gives (after an ANALYZE, 4,446 of 100,000 distances were rewritten,
        # and their flags recomputed, with nothing changed).
        points = sorted(positions.get((customer.resource_type, customer.resource_id), []))
        fields: tuple[float | None, float | None, int, float | None]
        if len(points) >= LEARN_MIN_VISITS:
            centre = centre_median(points)
            fields = (centre[0], centre[1], len(points), centre_spread_m(points, centre))
            learned += 1
        else:
            fields = (None, None, 0, None)
        held = (
            customer.learned_latitude,
            customer.learned_longitude,
            customer.learned_visits,
            customer.learned_spread_m,
        )
        if held != fields:
            customer.learned_latitude, customer.learned_longitude, customer.learned_visits = fields[:3]
            customer.learned_spread_m = fields[3]
            customer.learned_at = now if fields[0] is not None else None
            changed.append(customer)
    names = ["learned_latitude", "learned_longitude", "learned_visits", "learned_spread_m", "learned_at"]
    rows_update(Customer, names, changed)
    return learned


def learned_kept(*, keys: set[Key] | None) -> set[Key]:
    """The customers (of `keys`, or all) with a verified live visit whose position the retention
    rule removed: a learned point they hold stays as it stood (a median of the positions left would
    move it, though the customer did not move). Without one they learn from the positions left."""
    rows = (
        _live(keys)
        .filter(verification_status=VerificationStatus.VERIFIED, coordinates_removed_at__isnull=False)
        .values_list("resource_type", "resource_id")
        .distinct()
    )
    return {key for key in rows if keys is None or key in keys}


def learned_stale() -> set[Key]:
    """The customers whose learned point counts other verified visits than they now have: one of
    them was deleted in Sell or given another customer (which ingestion writes without a mark
    the refresh reads). One GROUP BY over the verified visits, which also finds those that lost a
    position to the retention rule: their learned point is kept (learned_kept)."""
    located = Q(latitude__isnull=False) & ~Q(latitude=0, longitude=0)
    rows = (
        _live(None)
        .filter(located | Q(coordinates_removed_at__isnull=False), verification_status=VerificationStatus.VERIFIED)
        .values_list("resource_type", "resource_id")
        .annotate(n=Count("id", filter=located), removed=Count("id", filter=Q(coordinates_removed_at__isnull=False)))
        .values_list("resource_type", "resource_id", "n", "removed")
    )
    counts = {(rtype, rid): (n, removed) for rtype, rid, n, removed in rows}
    stale = set()
    for rtype, rid, learned_visits in Customer.objects.values_list("resource_type", "resource_id", "learned_visits"):
        n, removed = counts.get((rtype, rid), (0, 0))
        if learned_visits and removed:
            continue  # its learned point stays as it stood (learned_kept)
        if (n if n >= LEARN_MIN_VISITS else 0) != learned_visits:
            stale.add((rtype, rid))
    return stale


def customer_choose(customer: Customer) -> tuple[str, float | None, float | None, str]:
    """The point a customer's visits are measured from, and why (the rule the README states): a
    point learned from at least LEARN_MIN_VISITS verified visits, unless they spread more than
    CUSTOMER_LEARNED_MAX_SPREAD_M around it and a geocode was found; else whichever exists."""
    noisy_m = settings.CUSTOMER_LEARNED_MAX_SPREAD_M
    learned = customer.learned_latitude is not None and customer.learned_visits >= LEARN_MIN_VISITS
    geocoded = customer.geocoded_latitude is not None and customer.geocoded_longitude is not None
    spread = customer.learned_spread_m or 0.0
    if learned and (spread <= noisy_m or not geocoded):
        why = f"Learned from {customer.learned_visits} verified visits, a median of {spread:,.0f} m from it"
        why += "." if spread <= noisy_m else f", more than {noisy_m:,} m, but the address has no geocode."
        return CustomerLocation.LEARNED, customer.learned_latitude, customer.learned_longitude, why
    if geocoded:
        if learned:
            why = (
                f"Geocoded from its address: its {customer.learned_visits} verified visits spread a median of "
                f"{spread:,.0f} m, more than {noisy_m:,} m, too noisy to learn from."
            )
        else:
            why = f"Geocoded from its address: fewer than {LEARN_MIN_VISITS} verified visits with a position."
        return CustomerLocation.GEOCODED, customer.geocoded_latitude, customer.geocoded_longitude, why
    states: dict[str, str] = {
        GeocodeStatus.PENDING: "its address is not geocoded yet",
        GeocodeStatus.OFF: "geocoding is off (GEOCODER_URL is empty)",
        GeocodeStatus.ERROR: "geocoding its address failed (it is tried again later)",
    }
    address_state = states.get(customer.geocode_status, "the geocoder found no place at its address")
    if not customer.address_key:
        address_state = "no address from the Core API"
    return "", None, None, f"Not located: fewer than {LEARN_MIN_VISITS} verified visits, and {address_state}."


def customers_choose() -> set[Key]:
    """Apply customer_choose to every customer; returns those whose point changed."""
    changed, moved = [], set()
    for customer in Customer.objects.all():
        location, lat, lng, why = customer_choose(customer)
        point = (location, lat, lng)
        if point != (customer.location, customer.latitude, customer.longitude) or why != customer.location_reason:
            if point != (customer.location, customer.latitude, customer.longitude):
                moved.add((customer.resource_type, customer.resource_id))
            customer.location, customer.latitude, customer.longitude, customer.location_reason = *point, why
            changed.append(customer)
    rows_update(Customer, ["location", "latitude", "longitude", "location_reason"], changed)
    return moved


def distances_measure(*, since: datetime | None, keys: set[Key]) -> tuple[int, int]:
    """Each live visit's geodesic metres to its customer's point, and which point, for the visits
    ingested since `since` (None: every visit) and every visit of `keys`; NULL and "" without a
    position or a customer point. Writes only what differs, in bulk. Returns (measured, written)."""
    points: dict[Key, tuple[str, tuple[float, float]]] = {
        (rtype, rid): (location, (lat, lng))  # type: ignore[misc]  # latitude is not null: filtered
        for rtype, rid, location, lat, lng in Customer.objects.exclude(location="")
        .filter(latitude__isnull=False)
        .values_list("resource_type", "resource_id", "location", "latitude", "longitude")
    }
    # A visit whose position the retention rule removed keeps the distance it had (geo/retention.py).
    visits = Visit.objects.live().filter(coordinates_removed_at__isnull=True).order_by()
    if since is not None:
        if len(keys) > KEYS_LISTED_MAX:
            pass  # every live visit: one pass beats a list this long
        elif keys:
            visits = visits.filter(Q(ingested_at__gte=since) | Q(resource_id__in=sorted({rid for _, rid in keys})))
        else:
            visits = visits.filter(ingested_at__gte=since)
    rows = visits.values_list(
        "id", "rep_id", "resource_type", "resource_id", "latitude", "longitude", "customer_distance_m",
        "customer_location",
    )  # fmt: skip
    measured = 0
    changed: list[Visit] = []
    far_m = settings.FLAG_CUSTOMER_KM * 1000
    flagging: list[Visit] = []  # those further than the flag's distance, before or after
    for visit_id, rep_id, rtype, rid, lat, lng, held_m, held_location in rows.iterator(chunk_size=5000):
        measured += 1
        point = points.get((rtype, rid)) if rid is not None else None
        if point is None or lat is None or lng is None or is_null_island(lat, lng):
            if held_m is not None or held_location:
                changed.append(Visit(id=visit_id, rep_id=rep_id, customer_distance_m=None, customer_location=""))
                if held_m is not None and held_m > far_m:
                    flagging.append(changed[-1])
            continue
        metres = metres_between((lat, lng), point[1])
        if held_m is None or abs(held_m - metres) > 1e-6 or held_location != point[0]:
            changed.append(Visit(id=visit_id, rep_id=rep_id, customer_distance_m=metres, customer_location=point[0]))
            if metres > far_m or (held_m is not None and held_m > far_m):
                flagging.append(changed[-1])
    visits_customer_write(names=["customer_distance_m", "customer_location"], visits=changed, flagging=flagging)
    return measured, len(changed)


def visits_customer_write(*, names: list[str], visits: list[Visit], flagging: list[Visit] | None = None) -> None:
    """Write these of the visits' customer fields (customer_distance_m, customer_location,
    customer_address_wrong; each Visit with its id and rep_id), and record for the flags, in the
    same transaction, where each visit is (flags.visits_mark): the next flags_refresh follows.
    `flagging`: those of `visits` whose change can move a flag (all if None); a distance that
    stays within FLAG_CUSTOMER_KM moves none."""
    from visits.review.flags import visits_mark  # the review package reads geo's distances

    by_rep: dict[int, list[int]] = {}
    for visit in visits if flagging is None else flagging:
        by_rep.setdefault(visit.rep_id, []).append(visit.id)
    with transaction.atomic():
        # before the writes, as ingestion's changes_record; every written visit's rep locked
        visits_mark(visits=by_rep, writing={visit.rep_id for visit in visits})
        rows_update(Visit, names, visits)


def rows_update(model, names: list[str], objects: list) -> None:
    """Write these fields of these saved objects: UPDATE ... FROM (VALUES ...), WRITE_CHUNK rows
    to a statement (Django's bulk_update builds a CASE per field and row: minutes for 60,000
    customers). PostgreSQL types each value column by a cast; SQLite needs none."""
    if not objects:
        return
    fields = [model._meta.get_field(name) for name in names]
    table, pk = model._meta.db_table, model._meta.pk.column
    postgres = connection.vendor == "postgresql"
    sets = ", ".join(
        f"{f.column} = " + (f"CAST(v.column{n + 2} AS {f.db_type(connection)})" if postgres else f"v.column{n + 2}")
        for n, f in enumerate(fields)
    )
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(objects), WRITE_CHUNK):
            chunk = objects[start : start + WRITE_CHUNK]
            row = "(" + ", ".join(["%s"] * (len(fields) + 1)) + ")"
            params = []
            for obj in chunk:
                params.append(obj.pk)
                params.extend(f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields)
            cursor.execute(
                f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([row] * len(chunk))}) AS v "
                f"WHERE {table}.{pk} = v.column1",
                params,
            )


def customers_refresh(
    *, progress: Progress | None = None, everything: bool = False, geocode: Callable[[], str] | None = None
) -> RefreshResult:
    """The periodic pass, idempotent:
    1. the customers of the visits ingested since the last refresh (all of them the first time, or
       with `everything`) get their row and newest address (customers_sync);
    2. their learned points (customers_learn);
    3. `geocode`, when given (customers_locate geocodes what is due here);
    4. every customer's point chosen again (customers_choose);
    5. the visits ingested since, and all visits of the customers whose point moved, measured;
    6. every customer's suspect figures (geo/suspects.py), and the marks of wrong addresses kept
       on their visits (their reps marked for the flags).
    Ingestion is never slowed: it records nothing; its visits' ingested_at is the mark."""
    say = progress or (lambda message: None)
    started = timezone.now()
    state, _ = DistanceState.objects.get_or_create(pk=1)
    since = None if everything else state.visits_measured_to
    result = RefreshResult()
    keys: set[Key] | None = None
    if since is not None:
        keys = set(_live(None).filter(ingested_at__gte=since).values_list("resource_type", "resource_id").distinct())
        keys |= learned_stale()
    say("customers: syncing " + ("all customers" if keys is None else f"{len(keys):,} customers with new visits"))
    result.created, result.addresses_changed = customers_sync(keys=keys)
    say(f"customers: {result.created:,} new, {result.addresses_changed:,} addresses changed; learning points")
    result.learned = customers_learn(keys=keys, now=started)
    if geocode is not None:
        say("customers: geocoding what is due")
        result.geocode = geocode()
        say(f"customers: geocoding: {result.geocode}")
    say("customers: choosing each customer's point")
    result.moved = customers_choose()
    result.points_moved = len(result.moved)
    say(f"customers: {result.points_moved:,} points moved; measuring the visits' distances")
    result.visits_measured, result.distances_written = distances_measure(since=since, keys=result.moved)
    say(f"customers: {result.visits_measured:,} visits measured, {result.distances_written:,} distances written")
    result.suspects = suspects.suspects_refresh()
    result.address_wrong_changed = suspects.addresses_wrong_keep()
    say(f"customers: {result.suspects:,} suspect addresses, {result.address_wrong_changed:,} visits' marks changed")
    result.customers = Customer.objects.count()
    state.visits_measured_to = started - REFRESH_OVERLAP
    state.save(update_fields=["visits_measured_to"])
    return result

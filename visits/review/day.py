"""A reviewed visit's evidence without a map per card: the rep's day (their live visits on the
visit's local_day, in order) and the customer's point, for a whole page of the queue in two
queries (the days, the customers), drawn by reports.charts.day_picture."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Q

from visits.geo import distance
from visits.models import Customer, Visit
from visits.reports.charts import day_picture


@dataclass
class Stop:
    """One visit of the rep's day: its number in the day (1 first), and whether it is the one reviewed."""

    visit: Visit
    number: int
    reviewed: bool
    km_from_reviewed: float | None  # between the two positions, when both have one


@dataclass
class RepDay:
    day: date
    stops: list[Stop]
    customer: Customer | None  # the reviewed visit's customer, when it has a point
    picture: dict = field(default_factory=dict)  # charts.day_picture's drawing

    @property
    def reviewed(self) -> Stop:
        return next(stop for stop in self.stops if stop.reviewed)

    @property
    def unplaced(self) -> int:
        """The day's visits without a position (not in the picture)."""
        return sum(stop.visit.point is None for stop in self.stops)


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The instants a local day spans (a range on visited_at, which the rep's time index serves)."""
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def days_of(*, visits: list[Visit]) -> dict[int, RepDay]:
    """For each of `visits`, its rep's day: one query for all the days of the page, one for the
    customers of the reviewed visits."""
    if not visits:
        return {}
    zone = ZoneInfo(settings.DISPLAY_TIME_ZONE)
    keys = {(v.rep_id, v.local_day) for v in visits}
    around = Q()
    for rep_id, day in keys:
        start, end = day_bounds(day, zone)
        around |= Q(rep_id=rep_id, visited_at__gte=start, visited_at__lt=end, local_day=day)
    by_day: dict[tuple[int, date], list[Visit]] = {}
    for other in Visit.objects.live().filter(around).select_related("outcome").order_by("visited_at", "id"):
        by_day.setdefault((other.rep_id, other.local_day), []).append(other)
    customers = customers_of(visits=visits)
    found = {}
    for visit in visits:
        day_visits = by_day.get((visit.rep_id, visit.local_day), [])
        if not any(other.id == visit.id for other in day_visits):  # deleted meanwhile: show it alone
            day_visits = sorted([*day_visits, visit], key=lambda v: (v.visited_at, v.id))
        here = visit.point
        stops = [
            Stop(
                visit=other, number=n, reviewed=other.id == visit.id,
                km_from_reviewed=(distance.km_between(here, other.point)
                                  if other.id != visit.id and here is not None and other.point is not None else None),
            )
            for n, other in enumerate(day_visits, start=1)
        ]  # fmt: skip
        customer = customers.get((visit.resource_type, visit.resource_id))
        found[visit.id] = RepDay(
            day=visit.local_day,
            stops=stops,
            customer=customer,
            picture=day_picture(
                points=[stop.visit.point for stop in stops],
                reviewed=next(i for i, stop in enumerate(stops) if stop.reviewed),
                customer=(customer.latitude, customer.longitude) if customer is not None else None,
            ),
        )
    return found


def customers_of(*, visits: list[Visit]) -> dict[tuple[str, int], Customer]:
    """The located customers of `visits`, by (resource_type, resource_id): one query."""
    wanted = Q()
    for kind, rid in {(v.resource_type, v.resource_id) for v in visits if v.resource_id is not None}:
        wanted |= Q(resource_type=kind, resource_id=rid)
    if not wanted:
        return {}
    located = Customer.objects.filter(wanted, latitude__isnull=False).only(
        "resource_type", "resource_id", "latitude", "longitude", "location"
    )
    return {(c.resource_type, c.resource_id): c for c in located}

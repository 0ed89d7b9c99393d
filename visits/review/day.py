"""A reviewed visit's evidence without a map per card: the rep's day (their live visits on the
visit's local_day, in order) and the customer's point, for a whole page of the queue in two
queries (the days, the customers), drawn by reports.charts.day_picture."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from html import escape
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from visits.geo import distance
from visits.models import Customer, VerificationStatus, Visit
from visits.reports.charts import day_picture
from visits.templatetags.visits_extras import metres


@dataclass
class Stop:
    """One visit of the rep's day: its number in the day (1 first), whether it is the one reviewed,
    and its table row's texts, made here once (a page shows a few hundred rows: each template
    lookup and filter less is time the reviewer does not wait)."""

    visit: Visit
    number: int
    reviewed: bool
    km_from_reviewed: float | None  # between the two positions, when both have one
    url: str = ""
    label: str = ""  # the number, as text
    time: str = ""  # HH:MM in the current time zone
    outcome: str = ""
    status: str = ""
    to_customer: str = ""
    from_reviewed: str = ""
    row: SafeString | str = ""  # the table's row (stop_row)


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
    """The instants a local day spans, in UTC (a range on visited_at, which the rep's time index
    serves), held within what a datetime can be at the ends of the calendar (stored data is not
    trusted to be far from them)."""

    def utc(moment_of) -> datetime | None:
        try:
            return moment_of().astimezone(UTC)
        except OverflowError:
            return None

    start = utc(lambda: datetime.combine(day, time.min, tzinfo=zone))
    end = utc(lambda: datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone))
    return start or datetime.min.replace(tzinfo=UTC), end or datetime.max.replace(tzinfo=UTC)


def url_pattern(name: str) -> str:
    """The URL of `name` (a route taking one id) with "{}" where the id goes: one reverse() for a
    page's every row."""
    return reverse(name, args=[0]).replace("/0/", "/{}/")


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
    url_of = url_pattern("visits:visit")
    shown_in = timezone.get_current_timezone()  # once: each localtime() asks for it again
    found = {}
    for visit in visits:
        day_visits = by_day.get((visit.rep_id, visit.local_day), [])
        if not any(other.id == visit.id for other in day_visits):  # deleted meanwhile: show it alone
            day_visits = sorted([*day_visits, visit], key=lambda v: (v.visited_at, v.id))
        here = visit.point
        stops = [stop_make(other, n, visit, here, url_of, shown_in) for n, other in enumerate(day_visits, start=1)]
        customer = customers.get((visit.resource_type, visit.resource_id))
        found[visit.id] = RepDay(
            day=visit.local_day,
            stops=stops,
            customer=customer,
            picture=day_picture(
                points=[stop.visit.point for stop in stops],
                reviewed=next(i for i, stop in enumerate(stops) if stop.reviewed),
                customer=customer_point(customer),
            ),
        )
    return found


STATUS_LABELS = dict(VerificationStatus.choices)


def stop_make(other: Visit, number: int, visit: Visit, here, url_of: str, shown_in: tzinfo) -> Stop:
    reviewed = other.id == visit.id
    km = None
    if not reviewed and here is not None and other.point is not None:  # Vincenty's: a tenth of geopy's time
        km = distance.metres_between(here, other.point) / 1000
    stop = Stop(
        visit=other, number=number, reviewed=reviewed, km_from_reviewed=km, url=url_of.format(other.id),
        label=str(number),
        time=other.visited_at.astimezone(shown_in).strftime("%H:%M"), outcome=str(other.outcome or "–"),
        status=STATUS_LABELS.get(other.verification_status, other.verification_status),
        to_customer=metres(other.customer_distance_m),
        from_reviewed="this visit" if reviewed else "–" if km is None else f"{km:.1f} km",
    )  # fmt: skip
    stop.row = stop_row(stop)
    return stop


def stop_row(stop: Stop) -> SafeString:
    """The stop's row of the day's table, written at once, every value escaped (the outcome's name
    is Sell's): seven template variables a row, a few hundred rows a page, were a third of the
    queue page's time, and format_html's lazy-aware escaping, per value, most of what was left
    (html.escape is what Django's escape calls)."""
    time_text = escape(stop.time)
    when = f"<strong>{time_text}</strong>" if stop.reviewed else f'<a href="{escape(stop.url)}">{time_text}</a>'
    cells = (
        f'<td class="num">{escape(stop.label)}</td><td>{when}</td><td>{escape(stop.outcome)}</td>'
        f'<td><span class="status status-{escape(stop.visit.verification_status)}">{escape(stop.status)}</span>'
        f"{NO_POSITION if stop.visit.latitude is None else ''}</td>"
        f'<td class="num">{escape(stop.to_customer)}</td><td class="num">{escape(stop.from_reviewed)}</td>'
    )
    return mark_safe(f"<tr{REVIEWED_CLASS if stop.reviewed else ''}>{cells}</tr>")  # noqa: S308 (every value escaped above)


REVIEWED_CLASS = ' class="reviewed"'  # constant markup
NO_POSITION = ' <span class="muted">(no position)</span>'  # constant markup


def customer_point(customer: Customer | None) -> tuple[float, float] | None:
    if customer is None or customer.latitude is None or customer.longitude is None:
        return None
    return customer.latitude, customer.longitude


def customers_of(*, visits: list[Visit]) -> dict[tuple[str, int | None], Customer]:
    """The located customers of `visits`, by (resource_type, resource_id): one query."""
    wanted = Q()
    for kind, rid in {(v.resource_type, v.resource_id) for v in visits if v.resource_id is not None}:
        wanted |= Q(resource_type=kind, resource_id=rid)
    if not wanted:
        return {}
    located = Customer.objects.filter(wanted, latitude__isnull=False, longitude__isnull=False).only(
        "resource_type", "resource_id", "latitude", "longitude", "location"
    )
    return {(c.resource_type, c.resource_id): c for c in located}

"""Rules that flag a visit for review: pure functions over one rep's visits as plain data.

Each rule looks at one rep's live visits, in order of visited_at, and returns findings: the
visit, the rule, the numbers behind it and one plain sentence. Thresholds come from settings;
nothing here touches the database (`flags.py` stores the findings).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import NamedTuple

from django.conf import settings

from visits.geo import distance
from visits.models import FlagRule, RiskTier, VerificationStatus

SELL_SENTENCES: dict[str, str] = {
    VerificationStatus.TOO_FAR: "Sell: the phone was too far from the customer's address when the visit was logged.",
    VerificationStatus.LOCATION_UNKNOWN: "Sell: the phone's location was unknown when the visit was logged.",
    VerificationStatus.SERVICES_DISABLED: "Sell: location services were off on the phone when the visit was logged.",
}


class VisitFacts(NamedTuple):
    """What the rules read of a visit (a named tuple: a rebuild makes a million of them, three
    times faster than a frozen dataclass)."""

    id: int
    visited_at: datetime
    created_at: datetime
    latitude: float | None
    longitude: float | None
    status: str
    customer: tuple
    # Metres to the customer's point and which point (CustomerLocation), kept by geo/customers.py;
    # and whether the customer's address is marked wrong in Sell (then no distance flag is raised).
    customer_distance_m: float | None = None
    customer_location: str = ""
    customer_address_wrong: bool = False

    @property
    def point(self) -> tuple[float, float] | None:
        """(latitude, longitude), or None without a position or at 0,0 (distance.is_null_island,
        written out here: two rules ask, a million times each in a rebuild)."""
        lat, lng = self.latitude, self.longitude
        if lat is None or lng is None or (lat == 0 and lng == 0):
            return None
        return lat, lng


@dataclass(frozen=True)
class Finding:
    visit_id: int
    rule: str
    numbers: dict
    sentence: str


def duration_text(minutes: float) -> str:
    """40 minutes; 3 hours 5 minutes; 2 days 4 hours."""
    minutes = round(minutes)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [(days, "day"), (hours, "hour"), (mins, "minute")] if days == 0 else [(days, "day"), (hours, "hour")]
    text = " ".join(f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n)
    return text or "0 minutes"


# --- The rules, over one rep's visits sorted by (visited_at, id) ---------------------------


def sell_statuses(visits: list[VisitFacts]) -> list[Finding]:
    """Sell's own statuses; "too far" not when the customer's address is marked wrong in Sell (Sell
    measured from the wrong place: the address is at fault, not the rep)."""
    return [
        Finding(v.id, v.status, {"status": v.status}, SELL_SENTENCES[v.status])
        for v in visits
        if v.status in SELL_SENTENCES and not (v.customer_address_wrong and v.status == VerificationStatus.TOO_FAR)
    ]


def far_from_customer(visits: list[VisitFacts], *, km: float) -> list[Finding]:
    """Visits more than `km` from their customer's point (the distance geo/customers.py keeps), but
    not those of a customer whose address is marked wrong in Sell."""
    findings = []
    for v in visits:
        metres = v.customer_distance_m
        if metres is not None and metres > km * 1000 and not v.customer_address_wrong:
            far_km = metres / 1000
            findings.append(Finding(v.id, FlagRule.FAR_FROM_CUSTOMER,
                                    {"km": round(far_km, 1), "location": v.customer_location},
                                    f"{far_km:,.1f} km from the customer's {v.customer_location} point."))  # fmt: skip
    return findings


def impossible_coordinates(visits: list[VisitFacts]) -> list[Finding]:
    return [
        Finding(v.id, FlagRule.IMPOSSIBLE_COORDINATES, {"latitude": 0, "longitude": 0},
                "Logged at 0,0, in the Gulf of Guinea: the phone sent no real position.")
        for v in visits
        if v.latitude is not None and v.longitude is not None and distance.is_null_island(v.latitude, v.longitude)
    ]  # fmt: skip


def impossible_travel(visits: list[VisitFacts], *, max_kmh: float) -> list[Finding]:
    """Consecutive located visits whose distance over time is faster than max_kmh: both are
    flagged, each with its fastest such leg."""
    located = [(v, point) for v in visits if (point := v.point) is not None]
    fastest: dict[int, Finding] = {}
    for (a, a_point), (b, b_point) in itertools.pairwise(located):
        minutes = (b.visited_at - a.visited_at).total_seconds() / 60
        km = fast_leg_km(a_point, b_point, minutes=minutes, max_kmh=max_kmh)
        if km is None:
            continue
        kmh = kmh_of(km, minutes)
        for visit, other, side in ((b, a, "previous"), (a, b, "next")):
            numbers = {"km": round(km, 1), "minutes": round(minutes, 1), "kmh": None if kmh == math.inf else round(kmh),
                       "other_visit": other.id}  # fmt: skip
            finding = Finding(visit.id, FlagRule.IMPOSSIBLE_TRAVEL, numbers, travel_sentence(km, minutes, kmh, side))
            known = fastest.get(visit.id)
            if known is None or speed_of(finding) > speed_of(known):
                fastest[visit.id] = finding
    return list(fastest.values())


def fast_leg_km(a: tuple[float, float], b: tuple[float, float], *, minutes: float, max_kmh: float) -> float | None:
    """A leg's length if it is faster than max_kmh (else None): the geodesic's, or a figure
    every number and word of its finding shows the same as the geodesic's.

    Most legs are slow even at an upper bound of their length (a rough one, then a closer one).
    Most others are settled by Vincenty's formula: when the figures a finding shows (km to a
    tenth and whole, km/h whole, faster than max_kmh or not) are the same at both ends of its
    error, they are the same for the geodesic, which is measured, ten times dearer, only for
    the rest. All of those figures grow with the distance, so the ends bound the geodesic's.
    """
    if (
        kmh_of(distance.km_at_most_roughly(a, b), minutes) <= max_kmh
        or kmh_of(distance.km_at_most(a, b), minutes) <= max_kmh
    ):
        return None
    near = distance.km_near(a, b)
    if near is not None:
        low, high = max(near - distance.NEAR_ERROR_KM, 0.0), near + distance.NEAR_ERROR_KM
        if kmh_of(high, minutes) <= max_kmh:
            return None
        if kmh_of(low, minutes) > max_kmh and leg_figures(low, minutes) == leg_figures(high, minutes):
            return near
    km = distance.km_between(a, b)
    return km if kmh_of(km, minutes) > max_kmh else None


def leg_figures(km: float, minutes: float) -> tuple:
    """What a finding shows of a leg's length: its km to a tenth and whole, its km/h whole."""
    kmh = kmh_of(km, minutes)
    return round(km, 1), f"{km:,.0f}", None if kmh == math.inf else round(kmh), f"{kmh:,.0f}"


def kmh_of(km: float, minutes: float) -> float:
    """A leg's speed; two places at the same minute are infinitely far apart from a kilometre on."""
    if minutes > 0:
        return km / (minutes / 60)
    return math.inf if km >= 1 else 0.0


def speed_of(finding: Finding) -> float:
    return math.inf if finding.numbers["kmh"] is None else finding.numbers["kmh"]


def travel_sentence(km: float, minutes: float, kmh: float, side: str) -> str:
    """312 km from the previous visit 40 minutes earlier: 468 km/h."""
    if minutes <= 0:
        return f"{km:,.0f} km from the {side} visit, logged at the same time."
    when = "earlier" if side == "previous" else "later"
    return f"{km:,.0f} km from the {side} visit {duration_text(minutes)} {when}: {kmh:,.0f} km/h."


def coordinate_reuse(visits: list[VisitFacts], *, min_customers: int) -> list[Finding]:
    """The same spot (5 decimals) logged at min_customers or more different customers."""
    spots: dict[tuple, list[VisitFacts]] = {}
    for v in visits:
        if (point := v.point) is not None:
            spots.setdefault(distance.spot(*point), []).append(v)
    findings = []
    for (lat, lng), group in spots.items():
        customers = {v.customer for v in group}
        if len(customers) >= min_customers:
            sentence = (
                f"The same coordinates ({lat:.5f}, {lng:.5f}) were logged at {len(customers)} different customers."
            )
            numbers = {"latitude": lat, "longitude": lng, "customers": len(customers), "visits": len(group)}
            findings += [Finding(v.id, FlagRule.COORDINATE_REUSE, numbers, sentence) for v in group]
    return findings


def late_logging(visits: list[VisitFacts], *, hours: float) -> list[Finding]:
    findings = []
    for v in visits:
        late = (v.created_at - v.visited_at).total_seconds() / 3600
        if late > hours:
            findings.append(Finding(v.id, FlagRule.LATE_LOGGING, {"hours": round(late, 1)},
                                    f"Logged {duration_text(late * 60)} after the visit."))  # fmt: skip
    return findings


def bursts(visits: list[VisitFacts], *, count: int, minutes: float) -> list[Finding]:
    """`count` or more visits logged (created_at) within `minutes`: a rep entering a day's or
    a week's visits in one sitting. Every visit in such a window is flagged, with the largest
    window it belongs to."""
    logged = sorted(visits, key=attrgetter("created_at", "id"))
    largest: dict[int, int] = {}
    end = 0
    for start, first in enumerate(logged):
        end = max(end, start)
        while end + 1 < len(logged) and (logged[end + 1].created_at - first.created_at).total_seconds() <= minutes * 60:
            end += 1
        size = end - start + 1
        if size >= count:
            for v in logged[start : end + 1]:
                largest[v.id] = max(largest.get(v.id, 0), size)
    return [
        Finding(vid, FlagRule.BURST, {"visits": n, "minutes": minutes},
                f"One of {n} visits the rep logged within {minutes:g} minutes.")
        for vid, n in largest.items()
    ]  # fmt: skip


def rule_thresholds() -> list[tuple[str, str]]:
    """Each configurable rule and its threshold as the pages say it (from settings)."""
    return [
        ("Impossible travel", f"faster than {settings.FLAG_MAX_SPEED_KMH:g} km/h between consecutive visits"),
        ("Coordinates reused", f"the same spot (5 decimals) at {settings.FLAG_REUSE_CUSTOMERS} or more customers"),
        ("Logged late", f"logged more than {settings.FLAG_LATE_HOURS:g} hours after the visit"),
        ("Burst of visits",
         f"{settings.FLAG_BURST_VISITS} or more visits logged within {settings.FLAG_BURST_MINUTES:g} minutes"),
        ("Impossible coordinates", "logged at 0,0"),
        ("Far from the customer",
         f"more than {settings.FLAG_CUSTOMER_KM:g} km from the customer's point, unless its address is marked wrong"),
    ]  # fmt: skip


# --- The rules by what they read of a rep's timeline -----------------------------------------
# flags.py recomputes around a change only what can depend on it: each group below says what
# its findings on a visit read, so it knows which visits to read and which flags to replace.

VISIT_RULES = frozenset(
    {*SELL_SENTENCES, FlagRule.IMPOSSIBLE_COORDINATES, FlagRule.LATE_LOGGING, FlagRule.FAR_FROM_CUSTOMER}
)  # each visit alone


def visit_findings(visits: list[VisitFacts]) -> list[Finding]:
    """The rules of VISIT_RULES: a visit's findings read that visit only."""
    return [
        *sell_statuses(visits),
        *impossible_coordinates(visits),
        *late_logging(visits, hours=settings.FLAG_LATE_HOURS),
        *far_from_customer(visits, km=settings.FLAG_CUSTOMER_KM),
    ]


def travel_findings(visits: list[VisitFacts]) -> list[Finding]:
    """A located visit's finding reads it and the located visits just before and after it."""
    return impossible_travel(visits, max_kmh=settings.FLAG_MAX_SPEED_KMH)


def reuse_findings(visits: list[VisitFacts]) -> list[Finding]:
    """A visit's finding reads every visit of the rep at its spot (distance.spot)."""
    return coordinate_reuse(visits, min_customers=settings.FLAG_REUSE_CUSTOMERS)


def burst_findings(visits: list[VisitFacts]) -> list[Finding]:
    """A visit's finding reads the visits logged (created_at) within FLAG_BURST_MINUTES of it."""
    return bursts(visits, count=settings.FLAG_BURST_VISITS, minutes=settings.FLAG_BURST_MINUTES)


def rep_findings(visits: list[VisitFacts]) -> list[Finding]:
    """Every rule over one rep's live visits, sorted by (visited_at, id)."""
    return [*visit_findings(visits), *travel_findings(visits), *reuse_findings(visits), *burst_findings(visits)]


# --- Risk: how urgent a flagged visit is ------------------------------------------------------


class Risk(NamedTuple):
    """A visit's risk, 0-100, its tier (RiskTier; "" when not flagged) and what made the score:
    (what, points) pairs, largest first."""

    score: int
    tier: str
    parts: tuple[tuple[str, float], ...] = ()

    @property
    def why(self) -> str:
        """The contributions in one line: "Impossible travel 80 + 1 more flag 10 = 90"."""
        if not self.parts:
            return ""
        total = sum(points for _, points in self.parts)
        capped = " (at most 100)" if total > 100 else ""
        return " + ".join(f"{what} {points:.0f}" for what, points in self.parts) + f" = {self.score}{capped}"


NO_RISK = Risk(0, "")
RULE_LABELS: dict[str, str] = dict(FlagRule.choices)  # looked up a million times in a rebuild: not the enum
FAR = FlagRule.FAR_FROM_CUSTOMER.value
HIGH, MEDIUM, LOW = RiskTier.HIGH.value, RiskTier.MEDIUM.value, RiskTier.LOW.value


class RiskSettings(NamedTuple):
    """The RISK_* settings (and FLAG_CUSTOMER_KM), read once for many visits: each read of
    django.conf.settings costs microseconds, and a rebuild scores 300,000 visits."""

    weights: dict[str, int]
    far_km: float
    far_full_km: float
    far_min: float
    far_max: float
    extra_flag: int
    per_rejected: int
    rejected_max: int
    high_from: int
    medium_from: int


def risk_settings() -> RiskSettings:
    return RiskSettings(
        settings.RISK_WEIGHTS, settings.FLAG_CUSTOMER_KM, settings.RISK_FAR_FULL_KM, settings.RISK_FAR_MIN,
        settings.RISK_FAR_MAX, settings.RISK_EXTRA_FLAG, settings.RISK_PER_REJECTED, settings.RISK_REJECTED_MAX,
        settings.RISK_HIGH_FROM, settings.RISK_MEDIUM_FROM,
    )  # fmt: skip


def rule_weight(rule: str, numbers: dict, given: RiskSettings) -> float:
    """A flag's own weight (RISK_WEIGHTS); far_from_customer's grows with the log of its km:
    RISK_FAR_MIN at FLAG_CUSTOMER_KM, RISK_FAR_MAX from RISK_FAR_FULL_KM on."""
    if rule == FAR:
        low, high = given.far_km, given.far_full_km
        km = numbers.get("km") or 0.0
        share = math.log(km / low) / math.log(high / low) if km > low else 0.0
        return given.far_min + (given.far_max - given.far_min) * min(share, 1.0)
    return float(given.weights.get(rule, 0))


def risk_parts(
    flags: Iterable[tuple[str, dict]], rejected: int, given: RiskSettings
) -> tuple[float, str, dict, int, float] | None:
    """What a visit's risk adds up (see visit_risk): its weightiest flag's weight, rule and numbers,
    how many other flags, and the points of the rep's rejected visits; None without flags."""
    top: tuple[float, str, dict] | None = None
    count = 0
    for rule, numbers in flags:
        count += 1
        weight = rule_weight(rule, numbers, given)
        if top is None or (weight, rule) > top[:2]:
            top = (weight, rule, numbers)
    if top is None:
        return None
    rejected_points = float(min(rejected * given.per_rejected, given.rejected_max)) if rejected > 0 else 0.0
    return top[0], top[1], top[2], count - 1, rejected_points


def risk_of_parts(weight: float, others: int, rejected_points: float, given: RiskSettings) -> tuple[int, str]:
    score = max(0, min(100, round(weight + given.extra_flag * others + rejected_points)))
    return score, tier_of(score, given)


def tier_of(score: int, given: RiskSettings) -> str:
    """A flagged visit's tier: high from RISK_HIGH_FROM, medium from RISK_MEDIUM_FROM, else low."""
    return HIGH if score >= given.high_from else MEDIUM if score >= given.medium_from else LOW


def tier_scores(tiers: Iterable[str]) -> list[int]:
    """The scores (0-100, ascending) whose tier is one of `tiers` under the settings: the queue
    reads a tier as this range of its risk index (visit_flagged_risk leads with the risk)."""
    given = risk_settings()
    chosen = set(tiers)
    return [score for score in range(101) if tier_of(score, given) in chosen]


def risk_score(
    *, flags: Iterable[tuple[str, dict]], rejected: int, given: RiskSettings | None = None
) -> tuple[int, str]:
    """visit_risk's score and tier alone, without its words: what storing needs, by the hundred
    thousand (`given`: risk_settings(), read once by the caller). Written out: the score needs the
    weightiest flag's weight only, not which flag it is."""
    given = given or risk_settings()
    weights = given.weights
    weight = -1.0
    count = 0
    for rule, numbers in flags:
        count += 1
        w = rule_weight(rule, numbers, given) if rule == FAR else weights.get(rule, 0)
        if w > weight:
            weight = w
    if not count:
        return 0, ""
    rejected_points = min(rejected * given.per_rejected, given.rejected_max) if rejected > 0 else 0
    return risk_of_parts(weight, count - 1, rejected_points, given)


def visit_risk(*, flags: Iterable[tuple[str, dict]], rejected: int) -> Risk:
    """The risk of a visit with these flags ((rule, numbers) pairs) whose rep has `rejected` other
    live visits rejected: its weightiest flag's weight, RISK_EXTRA_FLAG for each other flag,
    RISK_PER_REJECTED for each rejected visit (at most RISK_REJECTED_MAX); at most 100. The tier:
    high from RISK_HIGH_FROM, medium from RISK_MEDIUM_FROM, else low. No flags: 0 and ""."""
    given = risk_settings()
    found = risk_parts(flags, rejected, given)
    if found is None:
        return NO_RISK
    weight, rule, numbers, others, rejected_points = found
    label = RULE_LABELS.get(rule, rule)
    if rule == FAR:
        label += f" ({numbers.get('km', 0):,.1f} km)"
    parts: list[tuple[str, float]] = [(label, weight)]
    if others:
        parts.append((f"{others} more flag{'s' if others != 1 else ''}", float(given.extra_flag * others)))
    if rejected > 0:
        parts.append((f"{rejected} of the rep's visits rejected before", rejected_points))
    return Risk(*risk_of_parts(weight, others, rejected_points, given), tuple(parts))

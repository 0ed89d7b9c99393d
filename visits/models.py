"""What visitsdash keeps: reps, outcomes and visits as the Firehose last described them,
plus the ingestion bookkeeping (stream positions, gaps, items we could not apply).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone


class VerificationStatus(models.TextChoices):
    VERIFIED = "verified", "Verified"
    TOO_FAR = "resource_location_too_far", "Too far from the customer"
    LOCATION_UNKNOWN = "location_unknown", "Location unknown"
    SERVICES_DISABLED = "location_services_disabled", "Location services disabled"


class Stream(models.TextChoices):
    USERS = "users", "Users"
    VISITS = "visits", "Visits"


class VisitSource(models.TextChoices):
    """Where a visit came from. The Firehose is authoritative for what it delivered
    (coordinates, sequences, deletes); the Core API fills the history it no longer has."""

    FIREHOSE = "firehose", "Firehose"
    CORE_API = "core_api", "Core API (statuses, no position)"


class Rep(models.Model):
    """A Sell user. Created on first sight, from the users stream or a visit's creator_id, or
    from the Core API's users (which alone carry the team fields below)."""

    id = models.BigIntegerField(primary_key=True, help_text="Sell user id")
    name = models.CharField(max_length=255, blank=True)
    email = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=40, blank=True)
    role = models.CharField(max_length=40, blank=True)
    sequence = models.BigIntegerField(default=0, help_text="meta.sequence of the users event last applied")
    # From the Core API's GET /v2/users only: the Firehose users stream carries none of them.
    team_name = models.CharField(max_length=255, blank=True, db_default="")
    group_id = models.BigIntegerField(null=True, blank=True, help_text="Sell group id")
    group_name = models.CharField(max_length=255, blank=True, db_default="")
    reports_to = models.BigIntegerField(null=True, blank=True, help_text="Sell user id of the manager")
    timezone = models.CharField(max_length=64, blank=True, db_default="", help_text='as Sell says it, e.g. "UTC+01:00"')
    core_synced_at = models.DateTimeField(null=True, blank=True, help_text="when the Core API last described it")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.label_for(self.id, self.name)

    @staticmethod
    def label_for(rep_id: int, name: str | None) -> str:
        """How a rep is shown: its name, or "Rep <id>" until the users stream names it. For
        code holding an id and a name rather than a Rep (report rows, map lookups)."""
        return name or f"Rep {rep_id}"


class Outcome(models.Model):
    """A visit outcome; its name arrives embedded in visit events, the newest one wins."""

    id = models.BigIntegerField(primary_key=True, help_text="Sell outcome id")
    name = models.CharField(max_length=255, blank=True)
    name_seen_at = models.DateTimeField(null=True, help_text="event_time of the event that gave the name")

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.label_for(self.id, self.name)

    @staticmethod
    def label_for(outcome_id: int, name: str | None) -> str:
        """As Rep.label_for: its name, or "Outcome <id>"."""
        return name or f"Outcome {outcome_id}"


def column(model: type[models.Model], name: str) -> str:
    """A field's database column, for the SQL written by hand (the upsert, the tally triggers,
    the export): every table and column name there comes from the models."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column, f"{model.__name__}.{name} has no column"
    return field.column


def sqlite_time(value: datetime | None) -> str | None:
    """An aware UTC datetime as Django keeps it in SQLite: naive UTC text, for the SQL written
    by hand (the upsert, the flags' reads and writes).

    Django's adapt_datetimefield_value gives the same text but costs several times more,
    which showed in the ingestion benchmark; every time given here is already UTC (parsing's
    clean_time, and the times read back from the database).
    """
    if value is None:
        return None
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def datetime_adapter() -> Callable[[datetime | None], str | datetime | None]:
    """What the database driver takes for a datetime: SQLite text, or the aware value."""
    if connection.vendor == "sqlite":
        return sqlite_time
    return as_is


def as_is(value):
    """The value itself: what PostgreSQL's driver takes for a datetime or a date."""
    return value


# A visit deleted in Sell is kept for audit, but only the live ones are counted, mapped, flagged
# and reviewed; the covering index `visit_time_cover` holds exactly these.
VISIT_LIVE = Q(deleted_at__isnull=True)


class VisitQuerySet(models.QuerySet):
    def live(self) -> VisitQuerySet:
        """The visits not deleted in Sell."""
        return self.filter(VISIT_LIVE)


class Visit(models.Model):
    """A visit as of the newest Firehose event applied to it (highest meta.sequence)."""

    id = models.BigIntegerField(primary_key=True, help_text="Sell visit id")
    # No single-column indexes on the two foreign keys: the reports count from the tallies and
    # the covering index below, and each index slows ingestion.
    rep = models.ForeignKey(Rep, on_delete=models.PROTECT, related_name="visits", db_index=False)
    resource_type = models.CharField(max_length=40)
    resource_id = models.BigIntegerField(null=True)
    visited_at = models.DateTimeField()
    created_at = models.DateTimeField()
    summary = models.TextField(blank=True)
    outcome = models.ForeignKey(
        Outcome, on_delete=models.PROTECT, null=True, blank=True, related_name="visits", db_index=False
    )
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    # Set when the retention rule (COORDINATES_RETENTION_DAYS) removed the rep's position: the
    # visit keeps its status, distance to the customer and flags, frozen as they stood.
    coordinates_removed_at = models.DateTimeField(null=True, blank=True)
    verification_status = models.CharField(max_length=40, choices=VerificationStatus.choices)
    sequence = models.BigIntegerField(help_text="meta.sequence of the event last applied")
    event_time = models.DateTimeField(help_text="meta.event_time of the event last applied")
    deleted_at = models.DateTimeField(null=True, blank=True)
    ingested_at = models.DateTimeField(auto_now=True)
    # The calendar day of visited_at in DISPLAY_TIME_ZONE, set by ingestion: the reports' day
    # filters and the tallies below work on it (tallies.py re-derives it if the zone changes).
    local_day = models.DateField(editable=False)
    # Whether any flag rule flags it: set by flags.py with the flags, and tallied (tallies.py),
    # so the reports count flagged visits as cheaply as the rest.
    flagged = models.BooleanField(default=False, db_default=False, editable=False)
    # Which rules flag it (RULE_BITS), kept with `flagged`: the queue's rule filter reads the
    # visit (and the index of flagged visits) instead of probing the flags of every row.
    flag_rules = models.IntegerField(default=0, db_default=0, editable=False)
    # The kind of the latest decision on it (NULL while none: an index of the decided visits
    # alone then serves every "accepted", "rejected" list and count), kept by every decision
    # recorded (review_status_refresh), so the review queue filters and counts on the visit alone.
    review_status = models.CharField(max_length=20, null=True, blank=True, editable=False)  # noqa: DJ001
    source = models.CharField(
        max_length=10, choices=VisitSource.choices, default=VisitSource.FIREHOSE, db_default=VisitSource.FIREHOSE
    )
    # The customer's address as the Core API gives it (one plain string); "" until it has.
    resource_address = models.TextField(blank=True, default="", db_default="")
    # Geodesic metres from the rep's position to its customer's point (Customer.location says
    # which), kept current by geo/ when either moves; NULL without a position or a customer point.
    customer_distance_m = models.FloatField(null=True, blank=True, editable=False)
    customer_location = models.CharField(max_length=10, blank=True, db_default="", editable=False)
    # The customer's address is marked wrong in Sell (a reviewer's mark on the Customer, copied
    # here by geo/): the distance flags of its visits are then not raised.
    customer_address_wrong = models.BooleanField(default=False, db_default=False, editable=False)
    # How urgent a flagged visit is, 0-100, and its tier (RiskTier; "" when not flagged): from its
    # flags' rules and numbers and the rep's rejected visits (review/rules.py), kept with the flags.
    risk = models.SmallIntegerField(default=0, db_default=0, editable=False)
    risk_tier = models.CharField(max_length=6, blank=True, db_default="", editable=False)

    objects = VisitQuerySet.as_manager()

    class Meta:
        ordering = ["-visited_at", "-id"]
        permissions = [
            ("view_reports", "Can view reports, maps and exports"),
            ("review_visits", "Can decide on flagged visits"),
            ("accept_low_risk", "Can accept all low-tier visits of a filter at once"),
            ("view_all_reps", "Can see every rep, not only their own reporting line"),
        ]
        indexes = [
            # Live visits in time order, with the columns the report counts need: the visits
            # list and the export read it in order, and the reports count the days at a
            # range's edges from it alone (their far visits too). One index for both: each one
            # slows ingestion.
            models.Index(
                fields=[
                    "visited_at",
                    "rep",
                    "outcome",
                    "verification_status",
                    "resource_type",
                    "local_day",
                    "flagged",
                    "customer_distance_m",
                ],  # fmt: skip
                name="visit_time_cover",
                condition=VISIT_LIVE,
            ),
            # One rep's visits in time order: the flag rules, the review queue's nearby visits
            # and the rep page read them (without it, every rep's recompute scanned all visits).
            models.Index(fields=["rep", "visited_at"], name="visit_rep_time"),
            # The review queue: flagged live visits in time order, with what its filters read and
            # the id, so a page's ids, its count and its filters read this index alone (a quarter
            # of the visits; PostgreSQL filters an index-only scan without visiting the table).
            models.Index(
                fields=[
                    "visited_at",
                    "review_status",
                    "flag_rules",
                    "rep",
                    "verification_status",
                    "outcome",
                    "resource_type",
                    "id",
                ],
                name="visit_flagged_time",
                condition=Q(flagged=True) & VISIT_LIVE,
            ),
            # The review queue by risk: flagged live visits, riskiest first, then newest, with what
            # its filters read (the tier, the rules, the review state), like visit_flagged_time.
            models.Index(
                fields=["risk", "visited_at", "id", "risk_tier", "review_status", "flag_rules", "rep"],
                name="visit_flagged_risk",
                condition=Q(flagged=True) & VISIT_LIVE,
            ),
            # The decided visits by their latest decision's kind: the queue's decided states and
            # the reports' rejected visits read this, not the decisions.
            models.Index(
                fields=["review_status", "visited_at", "rep"],
                name="visit_decided",
                condition=Q(review_status__isnull=False),
            ),
            # One customer's visits: its page on the suspect addresses, and a mark copied to them.
            models.Index(fields=["resource_id", "resource_type"], name="visit_resource"),
            # The few visits of customers whose address is marked wrong (geo/suspects.py keeps them).
            models.Index(fields=["resource_id"], name="visit_address_wrong", condition=Q(customer_address_wrong=True)),
            # Live located visits by position: the map's single visits in a box (/map/points.json)
            # read a box's few visits, not every visit in time order (3.4 s for a street at 1M visits),
            # and pick the newest ids from this index alone before reading those rows (0.45 s to
            # 0.06 s for a district of 38,000 visits on PostgreSQL).
            models.Index(
                fields=["latitude", "longitude", "visited_at", "id"],
                name="visit_position",
                condition=VISIT_LIVE & Q(latitude__isnull=False),
            ),
            # The map legend's notes (reports/map_counts.py): the live visits from the Core API's
            # history and those the retention rule took the position of, with what a report's
            # filters read, so their counts read these rows only, not every visit.
            models.Index(
                fields=["visited_at", "rep", "outcome", "verification_status", "resource_type"],
                name="visit_history",
                condition=VISIT_LIVE & Q(source="core_api"),
            ),
            models.Index(
                fields=["visited_at", "rep", "outcome", "verification_status", "resource_type"],
                name="visit_position_removed",
                condition=VISIT_LIVE & Q(coordinates_removed_at__isnull=False),
            ),
            # The few visits deleted in Sell: the status page counts them, the admin lists them.
            models.Index(fields=["deleted_at"], name="visit_deleted", condition=Q(deleted_at__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(latitude__isnull=True) | Q(latitude__gte=-90, latitude__lte=90), name="visit_latitude_range"
            ),
            models.CheckConstraint(
                condition=Q(longitude__isnull=True) | Q(longitude__gte=-180, longitude__lte=180),
                name="visit_longitude_range",
            ),
            models.CheckConstraint(
                condition=Q(latitude__isnull=True, longitude__isnull=True)
                | Q(latitude__isnull=False, longitude__isnull=False),
                name="visit_coordinates_paired",
            ),
            models.CheckConstraint(
                condition=Q(verification_status__in=VerificationStatus.values), name="visit_status_valid"
            ),
            models.CheckConstraint(condition=Q(source__in=VisitSource.values), name="visit_source_valid"),
        ]

    def __str__(self) -> str:
        return f"Visit {self.id}"

    @property
    def point(self) -> tuple[float, float] | None:
        """(latitude, longitude), or None without a position (the database holds both or neither)."""
        return None if self.latitude is None or self.longitude is None else (self.latitude, self.longitude)


class StatusTally(models.Model):
    """Live (not deleted) visits per period of local_day, rep, outcome, resource type and status.

    Kept by database triggers on the visits table (tallies.py), so every write, in ingestion's
    own transaction or anywhere else, keeps it equal to a count of the visits.
    """

    rep_id = models.BigIntegerField()
    outcome_id = models.BigIntegerField(help_text="0 for visits without an outcome")
    resource_type = models.CharField(max_length=40)
    verification_status = models.CharField(max_length=40)
    visits = models.IntegerField()
    flagged = models.IntegerField(default=0, help_text="of those visits, the flagged ones")
    far = models.IntegerField(default=0, help_text="of those visits, those more than DISTANCE_FAR_KM from the customer")

    class Meta:
        abstract = True


# Each tally's primary key is its whole key, so that on SQLite it is a WITHOUT ROWID table
# (migration 0005): one B-tree per tally instead of a table and a unique index, which the
# triggers update for every visit written.


class MonthTally(StatusTally):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    pk = models.CompositePrimaryKey("month", "rep_id", "outcome_id", "resource_type", "verification_status")
    month = models.DateField()


class YearTally(StatusTally):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """As MonthTally, per year: a range of whole years (or no range at all) reads a few rows."""

    pk = models.CompositePrimaryKey("year", "rep_id", "outcome_id", "resource_type", "verification_status")
    year = models.DateField()


class AllTimeTally(StatusTally):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """As YearTally, of all time: a range open at both ends (the reports' default) reads a row
    per rep, outcome, resource type and status instead of one per year too."""

    pk = models.CompositePrimaryKey("rep_id", "outcome_id", "resource_type", "verification_status")


class WeekTally(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """Live visits per week (starting Monday) of local_day, rep and status: the weekly trends."""

    pk = models.CompositePrimaryKey("week", "rep_id", "verification_status")
    week = models.DateField()
    rep_id = models.BigIntegerField()
    verification_status = models.CharField(max_length=40)
    visits = models.IntegerField()
    flagged = models.IntegerField(default=0, help_text="of those visits, the flagged ones")


class DistanceTally(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """Too-far visits with a distance per month of local_day, rep, outcome, resource type and
    distance bin (ingest/distance_tally.py: log-spaced, DISTANCE_BINS_PER_DECADE to a power of ten):
    the reports' median and 90th percentile of too-far distances. Kept by triggers, like the tallies."""

    pk = models.CompositePrimaryKey("month", "rep_id", "outcome_id", "resource_type", "bin")
    month = models.DateField()
    rep_id = models.BigIntegerField()
    outcome_id = models.BigIntegerField(help_text="0 for visits without an outcome")
    resource_type = models.CharField(max_length=40)
    bin = models.SmallIntegerField(help_text="distances in (10^((bin-1)/N), 10^(bin/N)] metres")
    visits = models.IntegerField()


class RepDistanceTally(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """As DistanceTally, of all time and by rep only: the whole-range reports by rep read a row
    per rep and bin instead of one per month, outcome, resource type and bin."""

    pk = models.CompositePrimaryKey("rep_id", "bin")
    rep_id = models.BigIntegerField()
    bin = models.SmallIntegerField(help_text="distances in (10^((bin-1)/N), 10^(bin/N)] metres")
    visits = models.IntegerField()


class ReviewTally(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """Live flagged visits per rep, rule bits (Visit.flag_rules), risk tier and review status
    ("" for none: a key column is never NULL), kept by the triggers of ingest/review_tally.py: the
    queue counted per rep and the rules' precision read its few thousand rows, not every flagged visit."""

    pk = models.CompositePrimaryKey("rep_id", "flag_rules", "risk_tier", "review_status")
    rep_id = models.BigIntegerField()
    flag_rules = models.IntegerField()
    risk_tier = models.CharField(max_length=6)
    review_status = models.CharField(max_length=20, help_text='the latest decision\'s kind; "" for none')
    visits = models.IntegerField()


class OutcomeDistanceTally(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """As RepDistanceTally, by outcome: the whole-range reports by outcome read a row per outcome
    and bin instead of one per month, rep, resource type and bin."""

    pk = models.CompositePrimaryKey("outcome_id", "bin")
    outcome_id = models.BigIntegerField(help_text="0 for visits without an outcome")
    bin = models.SmallIntegerField(help_text="distances in (10^((bin-1)/N), 10^(bin/N)] metres")
    visits = models.IntegerField()


class MapCellTally(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """Live located visits per grid cell of a band (ingest/map_tally.py: cells of 2^band degrees,
    counted from 90 degrees south and 180 west), month of local_day and rep (on the fine bands
    1970-01-01 and 0: map_tally.DETAILED says which are not), and status, with the sums
    of their latitudes, longitudes and ids (a cell of one visit names it): the map's clusters
    (reports/clusters.py) sum a box's cells instead of reading its visits. Kept by triggers."""

    pk = models.CompositePrimaryKey("band", "cell_y", "cell_x", "month", "rep_id", "verification_status")
    band = models.SmallIntegerField(help_text="the cells' size: 2^band degrees")
    cell_y = models.IntegerField(help_text="floor((latitude + 90) / 2^band)")
    cell_x = models.IntegerField(help_text="floor((longitude + 180) / 2^band)")
    month = models.DateField()
    rep_id = models.BigIntegerField()
    verification_status = models.CharField(max_length=40)
    visits = models.IntegerField()
    latitude_sum = models.FloatField()
    longitude_sum = models.FloatField()
    id_sum = models.BigIntegerField(help_text="the visits' ids summed: a cell's one visit's id")


class TallyState(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """The one row saying which DISPLAY_TIME_ZONE the local days and tallies were built in, and
    the DISTANCE_FAR_KM their `far` counts."""

    time_zone = models.CharField(max_length=64)
    rebuilt_at = models.DateTimeField()
    far_km = models.FloatField(null=True, blank=True, help_text="DISTANCE_FAR_KM of the far counts")


class CustomerLocation(models.TextChoices):
    """Which of a customer's points its visits' distances are measured from."""

    LEARNED = "learned", "Learned from verified visits"
    GEOCODED = "geocoded", "Geocoded address"


class GeocodeStatus(models.TextChoices):
    PENDING = "pending", "Not geocoded yet"
    FOUND = "found", "Found"
    NOT_FOUND = "not_found", "No result"
    ERROR = "error", "Failed (retried later)"
    OFF = "off", "Geocoding is off"


class Customer(models.Model):
    """A Sell resource that reps visit (resource_type, resource_id): its address from the Core API,
    the point geocoded from that address, the point learned from its verified visits, and which one
    its visits' distances are measured from (geo/)."""

    resource_type = models.CharField(max_length=40)
    resource_id = models.BigIntegerField()
    address = models.TextField(blank=True, db_default="", help_text="resource_address, as the Core API gives it")
    address_key = models.CharField(
        max_length=64, blank=True, db_default="", help_text="sha256 of the normalised address"
    )
    geocode_status = models.CharField(
        max_length=20, choices=GeocodeStatus.choices, default=GeocodeStatus.PENDING, db_default=GeocodeStatus.PENDING
    )
    geocoded_latitude = models.FloatField(null=True, blank=True)
    geocoded_longitude = models.FloatField(null=True, blank=True)
    geocode_precision = models.CharField(max_length=100, blank=True, db_default="", help_text="what the service says")
    geocode_error = models.TextField(blank=True, db_default="")
    geocode_attempts = models.IntegerField(default=0, db_default=0)
    geocode_next_at = models.DateTimeField(null=True, blank=True, help_text="when to try again after an error")
    geocoded_at = models.DateTimeField(null=True, blank=True)
    learned_latitude = models.FloatField(null=True, blank=True)
    learned_longitude = models.FloatField(null=True, blank=True)
    learned_visits = models.IntegerField(default=0, db_default=0, help_text="verified visits the point is learned from")
    learned_spread_m = models.FloatField(null=True, blank=True, help_text="median distance of those visits to it")
    learned_at = models.DateTimeField(null=True, blank=True)
    location = models.CharField(max_length=10, choices=CustomerLocation.choices, blank=True, db_default="")
    latitude = models.FloatField(null=True, blank=True, help_text="the point used: learned or geocoded")
    longitude = models.FloatField(null=True, blank=True)
    location_reason = models.TextField(blank=True, db_default="", help_text="why that point, as a sentence")
    # Whether its address in Sell looks wrong (geo/suspects.py, with each refresh): its "too far"
    # visits (Sell's status, or further than DISTANCE_FAR_KM from the point used), how many reps
    # logged them, and how far apart its geocoded and learned points are.
    far_visits = models.IntegerField(default=0, db_default=0, help_text="visits too far from it")
    far_reps = models.IntegerField(default=0, db_default=0, help_text="different reps among those visits")
    points_apart_m = models.FloatField(null=True, blank=True, help_text="metres between geocoded and learned points")
    suspect = models.BooleanField(default=False, db_default=False, help_text="its address in Sell is likely wrong")
    # A reviewer's latest AddressMark (review/addresses.py): the address is wrong in Sell. Copied to
    # its visits' Visit.customer_address_wrong.
    address_wrong = models.BooleanField(default=False, db_default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["resource_type", "resource_id"]
        constraints = [
            models.UniqueConstraint(fields=["resource_type", "resource_id"], name="customer_unique_resource"),
            models.CheckConstraint(
                condition=Q(latitude__isnull=True, longitude__isnull=True)
                | Q(latitude__isnull=False, longitude__isnull=False),
                name="customer_coordinates_paired",
            ),
        ]
        indexes = [
            models.Index(fields=["geocode_status", "geocode_next_at"], name="customer_geocode_due"),
            # The suspect addresses' page, in its order: a few rows of the customers.
            models.Index(
                fields=["-far_visits", "-far_reps", "id"],
                name="customer_suspect_rank",
                condition=Q(suspect=True) | Q(address_wrong=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type} {self.resource_id}"


class AddressMarkQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("address marks are never edited; record a new mark instead")

    def delete(self):
        raise PermissionError("address marks are never deleted")


class AddressMark(models.Model):
    """A reviewer's mark on a customer: its address in Sell is wrong (`wrong`), or the mark is
    undone (not `wrong`). Append-only, as decisions are (review/addresses.py's triggers): the
    latest one is the customer's Customer.address_wrong."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="address_marks")
    wrong = models.BooleanField(help_text="marked wrong in Sell; false: the mark undone")
    note = models.TextField(blank=True)
    decided_by = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="address_marks")
    decided_at = models.DateTimeField(default=timezone.now)

    objects = AddressMarkQuerySet.as_manager()

    class Meta:
        ordering = ["-decided_at", "-id"]
        indexes = [models.Index(fields=["customer", "-decided_at"], name="address_mark_customer_time")]

    def __str__(self) -> str:
        what = "address wrong in Sell" if self.wrong else "mark undone"
        return f"{self.customer}: {what} by {self.decided_by} on {self.decided_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("address marks are never edited; record a new mark instead")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("address marks are never deleted")


class GeocodeCache(models.Model):
    """One geocoder answer per normalised address, shared by every customer at that address."""

    address_key = models.CharField(max_length=64, unique=True)
    query = models.TextField(help_text="the normalised address sent")
    status = models.CharField(max_length=20, choices=GeocodeStatus.choices)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    precision = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    fetched_at = models.DateTimeField()

    class Meta:
        ordering = ["address_key"]

    def __str__(self) -> str:
        return f"geocode {self.address_key[:12]}"


class DeletedVisit(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """A `deleted` event for a visit we never held, kept so that an older replay of its
    `created` event (after a restart from tail) cannot bring it back."""

    id = models.BigIntegerField(primary_key=True)
    sequence = models.BigIntegerField()
    deleted_at = models.DateTimeField()


class SyncState(models.Model):
    """One row per stream: where to resume, and the health figures the status page shows."""

    stream = models.CharField(max_length=20, choices=Stream.choices, unique=True)
    position = models.TextField(blank=True, help_text="meta.position to resume from; empty = start position")
    at_top = models.BooleanField(default=False)
    last_poll_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    caught_up_at = models.DateTimeField(null=True, blank=True)
    newest_event_time = models.DateTimeField(null=True, blank=True)
    pages = models.BigIntegerField(default=0)
    events_applied = models.BigIntegerField(default=0)
    events_skipped = models.BigIntegerField(default=0, help_text="re-deliveries and stale events")
    items_rejected = models.BigIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error_kind = models.CharField(max_length=20, blank=True, db_default="", help_text="sync.SyncErrorKind")
    lock_owner = models.CharField(max_length=100, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["stream"]

    def __str__(self) -> str:
        return f"{self.stream} stream"


class Gap(models.Model):
    """A stretch of time whose events may be missing: the position expired (410)."""

    stream = models.CharField(max_length=20, choices=Stream.choices)
    start = models.DateTimeField(null=True, blank=True, help_text="newest event held before the gap")
    end = models.DateTimeField()
    reason = models.TextField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    # The gap's time range backfilled from the Core API (statuses, no positions).
    filled_at = models.DateTimeField(null=True, blank=True)
    filled_visits = models.IntegerField(default=0, db_default=0)
    fill_error = models.TextField(blank=True, db_default="")

    class Meta:
        ordering = ["-recorded_at"]

    def __str__(self) -> str:
        return f"{self.stream} gap until {self.end:%Y-%m-%d %H:%M}"


class IncidentKind(models.TextChoices):
    STALE = "stale", "No successful sync"
    TOKEN = "token", "Access token refused"
    GAP = "gap", "Gap in the stream"


class Incident(models.Model):
    """Something an admin must hear about, opened and closed by ingestion_check (ingest/health.py),
    mailed once when it opens and once when it ends. At most one open incident of each kind,
    except gaps: one per Gap row, open until the gap is filled from the Core API."""

    kind = models.CharField(max_length=10, choices=IncidentKind.choices)
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    message = models.TextField(help_text="what happened, as a sentence")
    gap = models.ForeignKey(Gap, null=True, blank=True, on_delete=models.CASCADE, related_name="incidents")
    mailed_at = models.DateTimeField(null=True, blank=True, help_text="when the alert was sent (or claimed)")
    recovered_mailed_at = models.DateTimeField(null=True, blank=True)
    mail_error = models.TextField(blank=True, help_text="why the last mail about it could not be sent")

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            # Two checks at once: the second one's insert fails here, so it never mails twice.
            models.UniqueConstraint(
                fields=["kind"], condition=Q(closed_at__isnull=True) & ~Q(kind="gap"), name="incident_one_open_per_kind"
            ),
            models.UniqueConstraint(fields=["gap"], name="incident_one_per_gap"),
            models.CheckConstraint(condition=Q(kind__in=["stale", "token", "gap"]), name="incident_kind_valid"),
            models.CheckConstraint(
                condition=Q(kind="gap", gap__isnull=False) | (~Q(kind="gap") & Q(gap__isnull=True)),
                name="incident_gap_iff_kind_gap",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} since {self.opened_at:%Y-%m-%d %H:%M}"


class CoreFeature(models.TextChoices):
    USERS = "users", "Users (teams)"
    OUTCOMES = "outcomes", "Visit outcomes"
    VISITS = "visits", "Visits (history)"


class CoreApiState(models.Model):
    """One row per Core API feature: whether this account's plan has it (a 403 switches it
    off until an admin switches it back on), and when it last worked or failed."""

    feature = models.CharField(max_length=20, choices=CoreFeature.choices, unique=True)
    available = models.BooleanField(default=True)
    refused_at = models.DateTimeField(null=True, blank=True)
    refused_message = models.TextField(blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["feature"]

    def __str__(self) -> str:
        return f"Core API {self.feature}"


class BackfillKind(models.TextChoices):
    HISTORY = "history", "History backfill"
    GAP = "gap", "Gap fill"
    RECONCILE = "reconcile", "Daily reconciliation"


class BackfillState(models.TextChoices):
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class BackfillRun(models.Model):
    """One backfill from the Core API's visits (ingest/backfill.py): its plan is its parts, so a
    run killed half-way is continued by the next one, part by part and page by page."""

    kind = models.CharField(max_length=20, choices=BackfillKind.choices)
    gap = models.ForeignKey(Gap, on_delete=models.SET_NULL, null=True, blank=True, related_name="fills")
    state = models.CharField(max_length=20, choices=BackfillState.choices, default=BackfillState.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    warning = models.TextField(blank=True, help_text="what the plan could not be sure of (no Core API users)")
    # The process walking it (sync.lock_owner_name), renewed with every page: a second backfill
    # waits for none and walks nothing twice; one whose holder died takes over at once.
    lock_owner = models.CharField(max_length=100, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)
    # Sell's: 100 visits a page, 100 pages a query. Smaller ones try the splitting on a small account.
    per_page = models.IntegerField(default=100)
    page_cap = models.IntegerField(default=100)
    # Running totals over the parts, kept with each page (the status page and the progress read them).
    requests = models.IntegerField(default=0)
    listed = models.IntegerField(default=0, help_text="visits the Core API listed (a visit in two parts twice)")
    stored = models.IntegerField(default=0, help_text="visits stored that visitsdash did not hold")
    updated = models.IntegerField(default=0, help_text="history visits changed in Sell since they were stored")
    addresses = models.IntegerField(default=0, help_text="held visits whose resource_address was filled")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.started_at:%Y-%m-%d %H:%M}"


class BackfillPartState(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    SPLIT = "split", "Split into smaller parts"
    UNREACHABLE = "unreachable", "Past the cap in both sort orders"


class BackfillPart(models.Model):
    """One Core API list query of a run (filters and a sort order) and how far it was walked."""

    run = models.ForeignKey(BackfillRun, on_delete=models.CASCADE, related_name="parts")
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children")
    filters = models.JSONField(default=dict, help_text="the /v2/visits filters, by name")
    sort = models.CharField(max_length=20, default="id")
    # A walk of recent visits (a gap, the reconciliation) stops at the first page reaching past this.
    stop_before = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=BackfillPartState.choices, default=BackfillPartState.PENDING)
    next_page = models.IntegerField(default=1)
    listed = models.IntegerField(default=0)
    stored = models.IntegerField(default=0)
    # A descending walk stops at this id: an ascending walk of a wider query has read every visit up to it.
    floor = models.BigIntegerField(null=True, blank=True)
    first_id = models.BigIntegerField(null=True, blank=True, help_text="the first visit id the walk met")
    last_id = models.BigIntegerField(null=True, blank=True, help_text="the last visit id the walk met")
    unreachable = models.IntegerField(default=0, help_text="about how many visits neither sort order reached")
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return f"part {self.id} of {self.run_id}: {self.filters} by {self.sort}"


class ReconcileDay(models.Model):
    """One day of the daily reconciliation: visits the Core API lists on it against those held."""

    day = models.DateField(unique=True, help_text="a day of DISPLAY_TIME_ZONE")
    core_visits = models.IntegerField(default=0)
    held_visits = models.IntegerField(default=0, help_text="live visits held before the fill")
    filled = models.IntegerField(default=0, help_text="visits stored from the Core API")
    checked_at = models.DateTimeField()
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"reconciled {self.day}"


class RejectedItem(models.Model):
    """A stream item that could not be applied, kept verbatim with the reason."""

    stream = models.CharField(max_length=20, choices=Stream.choices)
    digest = models.CharField(max_length=64, help_text="sha256 of the raw item: a re-delivery is stored once")
    raw = models.TextField()
    reason = models.TextField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["stream", "digest"], name="rejected_unique_digest")]

    def __str__(self) -> str:
        return f"rejected {self.stream} item {self.id}"


# --- Flags and the review queue ------------------------------------------------------------


class FlagRule(models.TextChoices):
    TOO_FAR = "resource_location_too_far", "Too far (Sell)"
    LOCATION_UNKNOWN = "location_unknown", "Location unknown (Sell)"
    SERVICES_DISABLED = "location_services_disabled", "Location services off (Sell)"
    IMPOSSIBLE_TRAVEL = "impossible_travel", "Impossible travel"
    COORDINATE_REUSE = "coordinate_reuse", "Coordinates reused"
    IMPOSSIBLE_COORDINATES = "impossible_coordinates", "Impossible coordinates"
    LATE_LOGGING = "late_logging", "Logged late"
    BURST = "burst", "Burst of visits"
    FAR_FROM_CUSTOMER = "far_from_customer", "Far from the customer"


# Each rule's bit in Visit.flag_rules. Fixed values, stored in the database: a new rule takes the
# next free bit, and a bit is never reused.
RULE_BITS: dict[str, int] = {
    FlagRule.TOO_FAR: 1, FlagRule.LOCATION_UNKNOWN: 2, FlagRule.SERVICES_DISABLED: 4, FlagRule.IMPOSSIBLE_TRAVEL: 8,
    FlagRule.COORDINATE_REUSE: 16, FlagRule.IMPOSSIBLE_COORDINATES: 32, FlagRule.LATE_LOGGING: 64, FlagRule.BURST: 128,
    FlagRule.FAR_FROM_CUSTOMER: 256,
}  # fmt: skip


def rules_mask(rules) -> int:
    """The Visit.flag_rules value of a visit flagged by `rules` (rule names)."""
    mask = 0
    for rule in rules:
        mask |= RULE_BITS[rule]
    return mask


class Flag(models.Model):
    """One rule's finding on one visit: the numbers behind it and a sentence for people.
    Computed by flags.py; never edited by hand (a recomputation replaces it)."""

    visit = models.ForeignKey(Visit, on_delete=models.CASCADE, related_name="flags")
    rule = models.CharField(max_length=40, choices=FlagRule.choices)
    numbers = models.JSONField(default=dict)
    sentence = models.TextField()

    class Meta:
        ordering = ["visit_id", "rule"]
        constraints = [models.UniqueConstraint(fields=["visit", "rule"], name="flag_one_per_rule")]
        indexes = [models.Index(fields=["rule", "visit"], name="flag_rule")]

    def __str__(self) -> str:
        return f"{self.get_rule_display()}: {self.sentence}"


class DirtyRep(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """A rep whose flags must be recomputed: written by ingestion in the same transaction as
    the visits that changed, removed by flags.flags_refresh() once the flags are recomputed:
    around its FlagWindows, or all of them when `whole` (flags_rebuild, or too many windows)."""

    rep_id = models.BigIntegerField(primary_key=True)
    whole = models.BooleanField(default=False, help_text="recompute all of the rep's flags, not windows")
    windows = models.IntegerField(default=0, help_text="FlagWindows recorded since the last recompute")


class FlagWindow(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """A place in a rep's timeline where a visit's change can alter flags, recorded by ingestion
    with the change (flags.changes_record): the visit's facts before the change, in the rep it
    was in; or, without facts, the visit's current place in its rep."""

    rep_id = models.BigIntegerField()
    visit_id = models.BigIntegerField()
    visited_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField(null=True)
    latitude = models.FloatField(null=True)
    longitude = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["rep_id"], name="flag_window_rep")]


class DecisionKind(models.TextChoices):
    ACCEPT = "accept", "Accepted: legitimate"
    REJECT = "reject", "Rejected: not legitimate"
    FOLLOW_UP = "follow_up", "Follow up"


class AcceptReason(models.TextChoices):
    """Why a reviewer accepted a flagged visit (an accept needs one; "other" needs a note)."""

    GPS_NOISE = "gps_noise", "GPS noise"
    ADDRESS_WRONG = "address_wrong", "Address wrong in Sell"
    EXPLAINED = "explained", "Explained by the rep"
    OTHER = "other", "Other (see the note)"


class RiskTier(models.TextChoices):
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"


class DecisionQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("decisions are never edited; record a new decision instead")

    def delete(self):
        raise PermissionError("decisions are never deleted")


class Decision(models.Model):
    """A reviewer's decision on a flagged visit. Never edited or deleted (here, in the admin and,
    for updates, by a database trigger): a newer decision supersedes the last one."""

    visit = models.ForeignKey(Visit, on_delete=models.PROTECT, related_name="decisions")
    kind = models.CharField(max_length=20, choices=DecisionKind.choices)
    reason = models.CharField(
        max_length=20, choices=AcceptReason.choices, blank=True, db_default="", help_text="why accepted (accepts only)"
    )
    note = models.TextField(blank=True)
    decided_by = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="visit_decisions")
    decided_at = models.DateTimeField(default=timezone.now)

    objects = DecisionQuerySet.as_manager()

    class Meta:
        ordering = ["-decided_at", "-id"]
        indexes = [
            models.Index(fields=["visit", "-decided_at"], name="decision_visit_time"),
            # The audit trail newest first (the admin's list), without joining every visit first.
            models.Index(fields=["-decided_at", "-id"], name="decision_time"),
        ]
        constraints = [
            # A reason is an accept's only, and one of AcceptReason (accepts from before reasons
            # have none; queue.decision_problems asks one of every new accept).
            models.CheckConstraint(
                condition=Q(reason="") | Q(kind="accept", reason__in=AcceptReason.values),
                name="decision_reason_of_accepts",
            )
        ]

    def __str__(self) -> str:
        reason = f" ({self.get_reason_display()})" if self.reason else ""
        return f"{self.get_kind_display()}{reason} by {self.decided_by} on {self.decided_at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("decisions are never edited; record a new decision instead")
        with transaction.atomic():
            super().save(*args, **kwargs)
            review_status_refresh(visit_ids=[self.visit_id])

    def delete(self, *args, **kwargs):
        raise PermissionError("decisions are never deleted")


def review_status_refresh(*, visit_ids: list[int]) -> None:
    """Set these visits' review_status to the kind of their latest decision (highest decided_at,
    then id; None without one). Decision.save and queue.decisions_record call it in the transaction
    that records the decisions; a decision inserted by raw SQL must call it too."""
    from visits.review.stored import reps_lock, risk_refresh  # the review package imports the models

    # The visits' reps first, before any visit is written: the lock order (stored.reps_lock).
    reps_lock(rep_ids=Visit.objects.filter(id__in=visit_ids).values("rep_id"))
    latest: dict[int, str] = {}
    decisions = Decision.objects.filter(visit_id__in=visit_ids).order_by("visit_id", "decided_at", "id")
    for visit_id, kind in decisions.values_list("visit_id", "kind"):
        latest[visit_id] = kind  # oldest first: the last one seen wins
    by_kind: dict[str | None, list[int]] = {}
    for visit_id in visit_ids:
        by_kind.setdefault(latest.get(visit_id), []).append(visit_id)
    # A visit rejected, or no longer rejected, moves the risk of its rep's flagged visits (each
    # counts the rep's other rejected visits): those reps' risk is computed again.
    reps = {
        rep_id
        for visit_id, rep_id, status in Visit.objects.filter(id__in=visit_ids).values_list(
            "id", "rep_id", "review_status"
        )
        if (status == DecisionKind.REJECT) != (latest.get(visit_id) == DecisionKind.REJECT)
    }
    for kind, ids in by_kind.items():
        Visit.objects.filter(id__in=ids).update(review_status=kind)
    if reps:
        risk_refresh(rep_ids=reps)


class FlaggedVisit(Visit):
    """The review queue in the admin: visits with at least one flag."""

    class Meta:
        proxy = True
        verbose_name = "flagged visit"


class DistanceState(models.Model):  # noqa: DJ008 (internal bookkeeping, never shown by name)
    """One row: up to when the visits' ingested_at the customers' refresh has measured
    (geo/customers.py); without it, the next refresh measures every visit."""

    visits_measured_to = models.DateTimeField(null=True, blank=True)


# --- Accounts: who a Django user is in Sell, their mail, what they looked at ----------------------


class SellLinkVia(models.TextChoices):
    EMAIL = "email", "their e-mail equals the Sell user's"
    ADMIN = "admin", "set by an admin"


class SellLink(models.Model):
    """A Django account linked to a Sell user (a Rep): a Manager sees that user's reporting line.
    Made when the e-mails match (case-insensitive) or by an admin on the user's admin page."""

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="sell_link")
    rep = models.ForeignKey(Rep, on_delete=models.CASCADE, related_name="accounts")
    via = models.CharField(max_length=10, choices=SellLinkVia.choices)
    linked_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "link to a Sell user"

    def __str__(self) -> str:
        return f"{self.user} is {self.rep}"


class AccountSettings(models.Model):
    """A user's own choices (the settings page): whether they get the weekly digest and the alerts."""

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="visits_settings")
    digest_enabled = models.BooleanField(default=True)
    alerts_enabled = models.BooleanField(default=True)

    class Meta:
        verbose_name_plural = "account settings"

    def __str__(self) -> str:
        return f"settings of {self.user}"


class MailKind(models.TextChoices):
    DIGEST = "digest", "weekly digest"
    RATE_ALERT = "rate_alert", "too-far rate alert"


class MailSent(models.Model):
    """Every digest or alert mail sent, or tried: to whom, for which week, and how it went."""

    user = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    username = models.CharField(max_length=150, help_text="kept when the account is deleted")
    to = models.CharField(max_length=254)
    kind = models.CharField(max_length=20, choices=MailKind.choices)
    week = models.DateField(help_text="the Monday of the week it is about")
    rate_alert = models.ForeignKey("RateAlert", on_delete=models.CASCADE, null=True, blank=True, related_name="mails")
    subject = models.CharField(max_length=255)
    sent_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "mails sent"
        indexes = [models.Index(fields=["user", "kind", "week"], name="mailsent_user_week")]
        # The claim (visits/notify/send.py): a row is written before its mail is sent, and only
        # one row a mail may be pending or sent (error ""); a failed one gives its place back.
        constraints = [
            models.UniqueConstraint(
                fields=["user", "week"], condition=Q(kind="digest", error=""), name="mailsent_digest_once"
            ),
            models.UniqueConstraint(
                fields=["user", "rate_alert"], condition=Q(kind="rate_alert", error=""), name="mailsent_alert_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.to} for {self.week}"


class RateAlert(models.Model):
    """A rep whose too-far rate rose by more than ALERT_RATE_POINTS week over week: one row per
    crossing (rep and week), so their managers are mailed once."""

    rep = models.ForeignKey(Rep, on_delete=models.CASCADE, related_name="rate_alerts")
    week = models.DateField(help_text="the Monday of the week the rate rose in")
    visits_before = models.IntegerField()
    far_before = models.IntegerField()
    visits_after = models.IntegerField()
    far_after = models.IntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rep", "week"], name="ratealert_once_per_week")]

    def __str__(self) -> str:
        return f"{self.rep}: too-far rate up in the week of {self.week}"


class AccessKind(models.TextChoices):
    VISIT = "visit", "a visit's page"
    REP = "rep", "a rep's page"
    MAP = "map", "the map"
    CSV = "csv", "a CSV download"
    EXPORT = "export", "a rep's data export"


class AccessLogEntry(models.Model):
    """Who looked at whose location data, when (append-only; purged after ACCESS_LOG_DAYS)."""

    at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    username = models.CharField(max_length=150, help_text="kept when the account is deleted")
    kind = models.CharField(max_length=10, choices=AccessKind.choices)
    path = models.CharField(max_length=2000, help_text="the URL path, or the command")
    filters = models.TextField(blank=True, help_text="the query string")
    object_id = models.BigIntegerField(null=True, blank=True, help_text="the visit or rep")
    rows = models.IntegerField(null=True, blank=True, help_text="rows in the CSV")

    class Meta:
        verbose_name_plural = "access log entries"
        indexes = [models.Index(fields=["at"], name="accesslog_at")]

    def __str__(self) -> str:
        return f"{self.username} {self.kind} {self.path} at {self.at:%Y-%m-%d %H:%M}"

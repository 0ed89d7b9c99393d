"""The retention rule for reps' positions (COORDINATES_RETENTION_DAYS): the latitude and longitude
of every visit logged (visited_at) more than that many days ago are removed, and the visit says
when (coordinates_removed_at). The daily task and `retention_apply` run coordinates_retain.

What was derived from a position stays as it stood: the status, the distance to the customer
(geo/customers.py measures no removed visit again), the flags (review/frozen.py: the refresh
leaves a removed visit's flags alone, and the few flags of visits still located that read a
removed position are marked frozen here), the decisions, hence every tally and report figure.
A customer's learned point is kept too (customers.py). Ingestion never stores a position again
for a visit past the window or already removed (ingest/pages.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from visits.geo import distance
from visits.models import Flag, FlagRule, FlagWindow, Rep, Visit
from visits.review.frozen import FROZEN
from visits.review.stored import reps_lock
from visits.review.timeline import located_around

Progress = Callable[[str], None]
CHUNK = 5000  # visits to a transaction: the reps' locks are held for a fraction of a second
TRAVEL, REUSE = FlagRule.IMPOSSIBLE_TRAVEL.value, FlagRule.COORDINATE_REUSE.value


@dataclass
class RetentionResult:
    cutoff: datetime | None
    dry_run: bool = False
    visits: int = 0  # positions removed (or, in a dry run, that would be)
    reps: int = 0  # reps whose visits lost a position
    chunks: int = 0
    flags_frozen: int = 0  # flags of visits still located that read a removed position, marked frozen
    flags_scrubbed: int = 0  # coordinate-reuse flags of removed visits whose spot was taken out

    def summary(self) -> str:
        if self.cutoff is None:
            return "COORDINATES_RETENTION_DAYS is empty: positions are kept for ever; nothing removed."
        when = f"logged before {self.cutoff:%Y-%m-%d %H:%M} UTC"
        if self.dry_run:
            return f"dry run: {self.visits:,} visits of {self.reps:,} reps {when} would lose their position."
        return (
            f"{self.visits:,} visits of {self.reps:,} reps {when} lost their position, in {self.chunks:,} "
            f"transactions; {self.flags_frozen:,} flags of later visits that read one frozen, "
            f"{self.flags_scrubbed:,} coordinate-reuse flags without their spot."
        )


def retention_cutoff(*, now: datetime | None = None, days: int | None = None) -> datetime | None:
    """The moment before which visits keep no position: now less COORDINATES_RETENTION_DAYS
    (`days` instead, if given); None while positions are kept for ever."""
    days = settings.COORDINATES_RETENTION_DAYS if days is None else days
    if not days:
        return None
    return (now or timezone.now()) - timedelta(days=days)


def chunks_of(*, cutoff: datetime, chunk: int) -> Iterator[list[int]]:
    """The ids of the visits with a position logged before `cutoff`, a rep at a time in id order (a
    range of the index visit_rep_time each), gathered into lists of about `chunk`."""
    gathered: list[int] = []
    for rep_id in Rep.objects.order_by("id").values_list("id", flat=True):
        ids = (
            Visit.objects.filter(rep_id=rep_id, visited_at__lt=cutoff, latitude__isnull=False)
            .order_by("visited_at", "id")
            .values_list("id", flat=True)
        )
        for visit_id in ids:
            gathered.append(visit_id)
            if len(gathered) >= chunk:
                yield gathered
                gathered = []
    if gathered:
        yield gathered


def coordinates_retain(
    *,
    now: datetime | None = None,
    days: int | None = None,
    chunk: int = CHUNK,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RetentionResult:
    """Remove the positions the retention rule no longer allows; idempotent.

    1. The cutoff: `now` less COORDINATES_RETENTION_DAYS (or `days`); without one, nothing is done.
    2. The visits with a position logged before it, a rep at a time, in chunks (chunks_of).
    3. Each chunk in one transaction (chunk_retain): its reps locked first (review.stored.reps_lock,
       as every writer of visits), its visits read again under the lock, the flags that read their
       positions frozen, then the positions removed.
    A dry run counts what the chunks hold and writes nothing."""
    say = progress or (lambda message: None)
    now = now or timezone.now()
    cutoff = retention_cutoff(now=now, days=days)
    result = RetentionResult(cutoff=cutoff, dry_run=dry_run)
    if cutoff is None:
        return result
    say(f"retention: removing the positions of visits logged before {cutoff:%Y-%m-%d %H:%M} UTC")
    reps: set[int] = set()
    for ids in chunks_of(cutoff=cutoff, chunk=chunk):
        if dry_run:
            result.visits += len(ids)
            reps.update(Visit.objects.filter(id__in=ids_sql(ids)).values_list("rep_id", flat=True).distinct())
        else:
            chunk_retain(ids=ids, cutoff=cutoff, now=now, result=result, reps=reps)
        result.chunks += 1
        say(f"retention: chunk {result.chunks:,}: {result.visits:,} visits so far")
    result.reps = len(reps)
    say(f"retention: {result.summary()}")
    return result


def ids_sql(ids: list[int]) -> RawSQL:
    """A list of ids as a subquery of one parameter, for `__in`: Django writes a list of 5,000 as
    5,000 parameters, and compiling them cost as much as the chunk's queries (a fifth of a run)."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::bigint[])", [ids])
    return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(ids)])


def chunk_retain(*, ids: list[int], cutoff: datetime, now: datetime, result: RetentionResult, reps: set[int]) -> None:
    """One chunk's positions removed, in one transaction:
    1. the reps of its visits locked (reps_lock, in id order), then the visits read again: only those
       still of those reps, with a position and logged before the cutoff are removed (a page ingested
       meanwhile may have changed one; the next run takes it);
    2. the flags of visits that keep their position but read one of these marked frozen (flags_freeze);
    3. the removed visits' own coordinate-reuse flags lose their spot (the rep's position), keeping
       their counts, and a pending FlagWindow of one its position;
    4. latitude and longitude set NULL, coordinates_removed_at set (no tallied column changes: the
       tallies' triggers add and take away the same counts)."""
    with transaction.atomic():
        chunk_reps = set(Visit.objects.filter(id__in=ids_sql(ids)).values_list("rep_id", flat=True).distinct())
        reps_lock(rep_ids=chunk_reps)
        rows = list(
            Visit.objects.filter(id__in=ids_sql(ids), rep_id__in=chunk_reps, latitude__isnull=False)
            .filter(visited_at__lt=cutoff)
            .order_by("rep_id", "visited_at", "id")
            .values_list("id", "rep_id", "visited_at", "latitude", "longitude", "deleted_at")
        )
        if not rows:
            return
        removed = [row[0] for row in rows]
        result.flags_frozen += flags_freeze(rows=rows, cutoff=cutoff)
        result.flags_scrubbed += reuse_scrub(visit_ids=removed)
        FlagWindow.objects.filter(visit_id__in=ids_sql(removed)).update(latitude=None, longitude=None)
        Visit.objects.filter(id__in=ids_sql(removed)).update(latitude=None, longitude=None, coordinates_removed_at=now)
        result.visits += len(removed)
        reps.update(row[1] for row in rows)


def flags_freeze(*, rows: list[tuple], cutoff: datetime) -> int:
    """Mark frozen (frozen.FROZEN in their numbers) the flags of live visits keeping their position
    that read one of `rows`' (id, rep_id, visited_at, latitude, longitude, deleted_at) positions:
    a rep's first located visit after its last removed one, whose travel flag is its leg to a removed
    visit; and the coordinate-reuse flags at a spot where a removed visit was. They stay as they
    stood: recomputed, they would lose a finding the stored positions can no longer show."""
    removed = {row[0] for row in rows}
    last: dict[int, tuple] = {}
    spots: dict[int, set[tuple[float, float]]] = defaultdict(set)
    for visit_id, rep_id, visited_at, lat, lng, deleted_at in rows:  # in rep and time order
        if deleted_at is not None:
            continue  # the rules never read a deleted visit
        last[rep_id] = (visited_at, visit_id)
        if not distance.is_null_island(lat, lng):
            spots[rep_id].add(distance.spot(lat, lng))
    following = {}
    for rep_id, (visited_at, visit_id) in last.items():
        _, after = located_around(rep_id=rep_id, visited_at=visited_at, visit_id=visit_id)
        if after and after[0].visited_at >= cutoff:  # one before the cutoff goes in a later chunk
            following[after[0].id] = rep_id
    marked = 0
    travel = Flag.objects.filter(rule=TRAVEL, visit_id__in=sorted(following)).values_list("id", "numbers")
    for flag_id, numbers in travel:
        if numbers.get("other_visit") in removed and numbers.get(FROZEN) is not True:
            marked += flag_mark(flag_id=flag_id, numbers=numbers)
    if spots:
        reusing = Flag.objects.filter(
            rule=REUSE, visit__rep_id__in=sorted(spots), visit__deleted_at__isnull=True, visit__visited_at__gte=cutoff
        ).values_list("id", "numbers", "visit__rep_id", "visit__latitude", "visit__longitude")
        for flag_id, numbers, rep_id, lat, lng in reusing:
            if (
                lat is not None
                and lng is not None
                and distance.spot(lat, lng) in spots[rep_id]
                and numbers.get(FROZEN) is not True
            ):
                marked += flag_mark(flag_id=flag_id, numbers=numbers)
    return marked


def flag_mark(*, flag_id: int, numbers: dict) -> int:
    Flag.objects.filter(id=flag_id).update(numbers={**numbers, FROZEN: True})
    return 1


def reuse_scrub(*, visit_ids: list[int]) -> int:
    """The coordinate-reuse flags of these visits without their spot (the rep's own position, in
    their numbers and sentence): how many customers and visits shared it stays."""
    scrubbed = 0
    for flag in Flag.objects.filter(rule=REUSE, visit_id__in=ids_sql(visit_ids)):
        numbers = {k: v for k, v in flag.numbers.items() if k not in ("latitude", "longitude")}
        customers = numbers.get("customers", 0)
        sentence = (
            f"The same coordinates were logged at {customers} different customers "
            "(the position was removed under the retention rule)."
        )
        Flag.objects.filter(id=flag.id).update(numbers=numbers, sentence=sentence)
        scrubbed += 1
    return scrubbed

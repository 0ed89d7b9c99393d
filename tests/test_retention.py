"""The retention rule for reps' positions (geo/retention.py): positions older than the window go,
and every report figure, status, distance, flag, decision, customer point and CSV stays as it was,
through the refreshes and a rebuild after it; the flags that read a removed position are frozen and
every other flag still equals a recomputation; a re-sent event brings no position back; the map and
the visits export say how many visits lost theirs; the archive carries it; `retention_apply`, its
daily schedule, and `rep_export` (a rep's own data)."""

import csv
import io
import json
import os
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_q.models import Schedule

from visits.archive.export import archive_export
from visits.archive.load import archive_import
from visits.archive.rep_export import RepExportError, rep_export
from visits.geo.customers import customers_refresh
from visits.geo.retention import coordinates_retain, retention_cutoff
from visits.ingest.pull import visits_pull
from visits.ingest.sync import streams_sync
from visits.ingest.tallies import local_day
from visits.models import (
    AccessLogEntry,
    AllTimeTally,
    Customer,
    Decision,
    DistanceTally,
    Flag,
    FlagRule,
    MonthTally,
    OutcomeDistanceTally,
    Rep,
    RepDistanceTally,
    ReviewTally,
    VerificationStatus,
    Visit,
    WeekTally,
    YearTally,
)
from visits.reports import analytics
from visits.reports.maps import map_plan
from visits.reports.scope import Scope
from visits.review import rules
from visits.review.flags import flags_rebuild, flags_refresh
from visits.review.frozen import FROZEN
from visits.tasks import RETENTION_SCHEDULE_NAME, schedules_setup

from .conftest import DEMO_NOW, assert_flags_match, user_make

pytestmark = pytest.mark.django_db

DAYS = 28  # of the full team's eight weeks before DEMO_NOW, the first four lose their positions
CUTOFF = DEMO_NOW - timedelta(days=DAYS)


def csv_bytes(client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, url
    return b"".join(response.streaming_content)


def csv_dicts(body: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8")[1:])))


QUERIES = [
    "",
    "start=2025-11-20&end=2025-12-20",  # before the cutoff only
    "start=2025-12-10&end=2026-01-10",  # across it
    "start=2025-12-23&end=2026-01-20",  # after it
    "status=resource_location_too_far",
    "resource_type=lead&start=2025-12-01",
]


def scopes() -> list[Scope]:
    some_rep = Rep.objects.order_by("id").values_list("id", flat=True)[3]
    return [
        Scope(),
        Scope(end=CUTOFF.date() - timedelta(days=1)),
        Scope(start=CUTOFF.date() - timedelta(days=10), end=CUTOFF.date() + timedelta(days=10)),
        Scope(start=CUTOFF.date()),
        Scope(reps=frozenset({some_rep})),
        Scope(statuses=frozenset({VerificationStatus.TOO_FAR.value})),
    ]


def figures(client) -> dict:
    """Every report figure the app shows, computed afresh: the analytics behind each report page per
    scope, the tallies, the CSVs' bytes, per visit what was derived from its position, the customers'
    points and suspect figures, and the decisions."""
    found: dict = {}
    for n, scope in enumerate(scopes()):
        found[f"reps {n}"] = repr(analytics.rep_rows(scope=scope, review=True))
        found[f"outcomes {n}"] = repr(analytics.outcome_rows(scope=scope))
        found[f"matrix {n}"] = repr(analytics.matrix(scope=scope, cell_distances=True))
        found[f"trend {n}"] = repr(analytics.weekly_trend(scope=scope))
        found[f"totals {n}"] = repr(analytics.totals(scope=scope))
        found[f"histogram {n}"] = repr(analytics.distance_histogram(scope=scope))
        found[f"percentiles {n}"] = repr(sorted(analytics.too_far_percentiles(scope=scope, by=("rep",)).items()))
        found[f"rejected {n}"] = repr(sorted(analytics.rejected_by_rep(scope=scope).items()))
    for model in (MonthTally, YearTally, AllTimeTally, WeekTally, DistanceTally, RepDistanceTally,
                  OutcomeDistanceTally, ReviewTally):  # fmt: skip
        found[model.__name__] = sorted(map(repr, model.objects.values_list()))
    for query in QUERIES:
        for url in ("/reports/reps.csv", "/reports/outcomes.csv", "/reports/matrix.csv", "/review/rules.csv"):
            found[f"{url}?{query}"] = csv_bytes(client, f"{url}?{query}")
        # The visits export: the same but for the positions and whether they were removed.
        rows = csv_dicts(csv_bytes(client, f"/visits.csv?{query}"))
        found[f"/visits.csv?{query}"] = [
            {k: v for k, v in row.items() if k not in ("latitude", "longitude", "position_removed")} for row in rows
        ]
    for state in ("awaiting", "all", "reject"):
        found[f"/review.csv {state}"] = csv_bytes(client, f"/review.csv?state={state}&sort=risk")
    found["visits"] = sorted(
        Visit.objects.values_list(
            "id", "rep_id", "verification_status", "customer_distance_m", "customer_location", "flagged",
            "flag_rules", "risk", "risk_tier", "review_status", "deleted_at", "local_day",
        )
    )  # fmt: skip
    found["flags"] = sorted(Flag.objects.values_list("visit_id", "rule"))
    found["customers"] = sorted(
        Customer.objects.values_list(
            "resource_type", "resource_id", "learned_latitude", "learned_longitude", "learned_visits", "location",
            "latitude", "longitude", "far_visits", "far_reps", "points_apart_m", "suspect",
        )
    )  # fmt: skip
    found["decisions"] = sorted(Decision.objects.values_list("id", "visit_id", "kind", "note", "decided_at"))
    return found


@pytest.fixture
def held(serve, full_team, cast, client):
    """The full team synced from the demo Firehose, its customers located from the visits, the flags
    recomputed, and reviewers' decisions (a reject among them: the risk counts it)."""
    serve(full_team)
    pull = visits_pull()
    assert not pull.errors, pull.errors
    customers_refresh(everything=True)
    flags_refresh()
    flagged = list(Visit.objects.filter(flagged=True, deleted_at__isnull=True).order_by("visited_at"))
    for n, visit in enumerate(flagged[:: max(1, len(flagged) // 12)]):
        kind = ("reject", "accept", "follow_up")[n % 3]
        reason = "gps_noise" if kind == "accept" else ""
        Decision.objects.create(visit=visit, kind=kind, reason=reason, note=f"n{n}", decided_by=cast.reviewer)
    assert_flags_match()
    client.force_login(cast.superuser)
    return client


@pytest.mark.slow
def test_every_report_figure_stays_the_same_through_the_refreshes_and_a_rebuild(held):
    client = held
    before = figures(client)
    old_located = Visit.objects.filter(visited_at__lt=CUTOFF, latitude__isnull=False).count()
    new_located = Visit.objects.filter(visited_at__gte=CUTOFF, latitude__isnull=False).count()
    assert old_located > 500 and new_located > 500
    reps = Visit.objects.filter(visited_at__lt=CUTOFF, latitude__isnull=False).values("rep_id").distinct().count()

    result = coordinates_retain(now=DEMO_NOW, days=DAYS, chunk=300)  # a rep's visits split across chunks too

    assert (result.visits, result.reps, result.chunks) == (old_located, reps, -(-old_located // 300))
    assert not Visit.objects.filter(visited_at__lt=CUTOFF, latitude__isnull=False).exists()
    assert Visit.objects.filter(coordinates_removed_at=DEMO_NOW).count() == old_located
    assert Visit.objects.filter(visited_at__gte=CUTOFF, latitude__isnull=False).count() == new_located
    assert result.flags_frozen > 0, "the demo's reused spots and journeys cross the cutoff"
    assert figures(client) == before
    assert_flags_match()  # every flag not frozen equals a recomputation; the frozen ones as they stood

    # What runs later reads no missing position: the periodic refresh, a full one, a rebuild.
    customers_refresh()
    flags_refresh()
    customers_refresh(everything=True)
    flags_refresh()
    flags_rebuild()
    assert figures(client) == before
    assert_flags_match()
    assert coordinates_retain(now=DEMO_NOW, days=DAYS).visits == 0  # idempotent


@pytest.mark.slow
def test_the_flags_that_read_a_removed_position_are_frozen_and_no_other(held):
    frozen_before = {
        (f.visit_id, f.rule): (f.numbers, f.sentence) for f in Flag.objects.filter(visit__visited_at__lt=CUTOFF)
    }
    coordinates_retain(now=DEMO_NOW, days=DAYS)
    marked = list(Flag.objects.filter(numbers__has_key=FROZEN))
    assert marked and {f.rule for f in marked} <= {FlagRule.IMPOSSIBLE_TRAVEL, FlagRule.COORDINATE_REUSE}
    assert all(f.visit.visited_at >= CUTOFF and f.visit.latitude is not None for f in marked)
    # Each marked flag would be found otherwise, or not at all, by the rules over the stored positions.
    for rep_id in {f.visit.rep_id for f in marked}:
        facts = [v for v in rules_facts(rep_id)]
        found = {(f.visit_id, f.rule): f for f in rules.rep_findings(facts)}
        for flag in (f for f in marked if f.visit.rep_id == rep_id):
            want = found.get((flag.visit_id, flag.rule))
            numbers = {k: v for k, v in flag.numbers.items() if k != FROZEN}
            assert want is None or want.numbers != numbers, f"{flag.visit_id} {flag.rule} needed no freezing"
    # The removed visits' flags stand, the spot taken out of their coordinate-reuse flags only.
    after = {(f.visit_id, f.rule): f for f in Flag.objects.filter(visit__visited_at__lt=CUTOFF)}
    assert after.keys() == frozen_before.keys()
    for key, (numbers, sentence) in frozen_before.items():
        if key[1] == FlagRule.COORDINATE_REUSE:
            assert after[key].numbers == {k: v for k, v in numbers.items() if k not in ("latitude", "longitude")}
            assert "(" not in after[key].sentence.split("logged")[0], "no coordinates left in the sentence"
        else:
            assert (after[key].numbers, after[key].sentence) == (numbers, sentence)


def rules_facts(rep_id: int):
    from visits.review.flags import rep_visits

    return rep_visits(rep_id=rep_id)


def visit_make(visit_id: int, rep: Rep, at: datetime, point, *, customer: int, status: str = "verified") -> Visit:
    lat, lng = point if point else (None, None)
    return Visit.objects.create(
        id=visit_id, rep=rep, resource_type="contact", resource_id=customer, visited_at=at, created_at=at,
        latitude=lat, longitude=lng, verification_status=status, sequence=1, event_time=at,
        local_day=local_day(visited_at=at, zone_name="UTC"),
    )  # fmt: skip


@pytest.mark.slow
def test_a_journey_and_a_reused_spot_across_the_cutoff_keep_their_flags(settings):
    """Made by hand: A (removed) to B (kept) at 1,000 km/h; one spot at three customers, one of
    them before the cutoff. Recomputed without A's position, B's travel flag and the reuse flags
    would go; frozen, they stay through a rebuild, and the visits' own new flags still come."""
    settings.DISPLAY_TIME_ZONE = "UTC"
    rep = Rep.objects.create(id=1, name="Ann")
    at = DEMO_NOW - timedelta(days=DAYS, hours=1)
    visit_make(1, rep, at, (48.85, 2.35), customer=10)  # A: Paris, removed
    visit_make(2, rep, at + timedelta(hours=1, minutes=1), (45.76, 4.84), customer=11)  # B: Lyon, an hour on
    visit_make(3, rep, at - timedelta(days=2), (50.0, 8.0), customer=20)  # the spot, removed
    visit_make(4, rep, at + timedelta(days=2), (50.0, 8.0), customer=21)
    visit_make(5, rep, at + timedelta(days=3), (50.0, 8.0), customer=22)
    flags_rebuild()
    held = {(f.visit_id, f.rule): (f.numbers, f.sentence) for f in Flag.objects.all()}
    assert {(2, FlagRule.IMPOSSIBLE_TRAVEL), (4, FlagRule.COORDINATE_REUSE), (5, FlagRule.COORDINATE_REUSE)} <= set(
        held
    )

    result = coordinates_retain(now=DEMO_NOW, days=DAYS)

    assert result.visits == 2 and result.flags_frozen == 3 and result.flags_scrubbed == 1
    flags_rebuild()
    kept = {(f.visit_id, f.rule): (f.numbers, f.sentence) for f in Flag.objects.all()}
    assert kept.keys() == held.keys()
    assert kept[(2, FlagRule.IMPOSSIBLE_TRAVEL)] == ({**held[(2, FlagRule.IMPOSSIBLE_TRAVEL)][0], FROZEN: True},
                                                     held[(2, FlagRule.IMPOSSIBLE_TRAVEL)][1])  # fmt: skip
    assert kept[(1, FlagRule.IMPOSSIBLE_TRAVEL)] == held[(1, FlagRule.IMPOSSIBLE_TRAVEL)]
    assert "latitude" not in kept[(3, FlagRule.COORDINATE_REUSE)][0]
    assert_flags_match()
    # Without the mark the rebuild takes the flags away: the freezing is what keeps them.
    Flag.objects.filter(visit_id=4).update(numbers={"latitude": 50.0, "longitude": 8.0, "customers": 3, "visits": 3})
    flags_rebuild()
    assert not Flag.objects.filter(visit_id=4).exists()
    # A frozen visit's flags stay whatever later changes; a new visit is flagged as ever.
    visit_make(6, rep, at + timedelta(days=4), (0.0, 0.0), customer=23)
    flags_refresh()
    flags_rebuild()
    assert Flag.objects.filter(visit_id=6, rule=FlagRule.IMPOSSIBLE_COORDINATES).exists()
    assert Flag.objects.filter(visit_id=1, rule=FlagRule.IMPOSSIBLE_TRAVEL).exists()


def firehose_update(server, visit: Visit, *, latitude: float, longitude: float, sequence: int, visit_id=None):
    at = visit.visited_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    server.append("visits", [{
        "data": {
            "id": visit_id or visit.id, "resource_type": visit.resource_type, "resource_id": visit.resource_id,
            "creator_id": visit.rep_id, "visited_at": at, "created_at": at, "summary": "again", "outcome": None,
            "sales_rep_location": {"latitude": latitude, "longitude": longitude,
                                   "verification_status": visit.verification_status},
        },
        "meta": {"type": "visit", "event_type": "updated", "sequence": sequence, "event_id": f"again-{sequence}",
                 "event_time": "2026-01-20T15:00:00Z"},
    }])  # fmt: skip


def test_a_later_event_brings_no_position_back_and_an_old_new_visit_comes_without_one(serve, small_team, settings):
    server = serve(small_team)
    streams_sync()
    cutoff = DEMO_NOW - timedelta(days=3)
    days = (timezone.now() - cutoff).days + 1  # the setting counts back from the real now
    settings.COORDINATES_RETENTION_DAYS = days
    real_cutoff = retention_cutoff()
    removed = coordinates_retain().visits
    assert removed > 0
    old = Visit.objects.filter(coordinates_removed_at__isnull=False).order_by("id").first()
    recent = Visit.objects.filter(visited_at__gte=real_cutoff, latitude__isnull=False).first()
    assert recent is not None or real_cutoff > DEMO_NOW  # every visit of the week is past the window
    firehose_update(server, old, latitude=10.0, longitude=20.0, sequence=old.sequence + 100)
    firehose_update(server, old, latitude=11.0, longitude=21.0, sequence=1, visit_id=99_000_001)  # new, but old
    streams_sync()
    old.refresh_from_db()
    assert (old.latitude, old.longitude, old.summary) == (None, None, "again")  # the event applied, no position
    assert old.coordinates_removed_at is not None
    fresh = Visit.objects.get(id=99_000_001)
    assert (fresh.latitude, fresh.longitude, fresh.coordinates_removed_at) == (None, None, None)
    # Positions are stored again once the window allows them (the rule is the setting, read per page).
    settings.COORDINATES_RETENTION_DAYS = None
    firehose_update(server, fresh, latitude=12.0, longitude=22.0, sequence=2)
    firehose_update(server, old, latitude=12.0, longitude=22.0, sequence=old.sequence + 200)
    streams_sync()
    fresh.refresh_from_db()
    old.refresh_from_db()
    assert (fresh.latitude, fresh.longitude) == (12.0, 22.0)
    assert old.latitude is None, "a removed position never comes back"


@pytest.mark.slow
def test_the_map_and_the_visits_export_say_which_visits_lost_their_position(held, settings):
    client = held
    settings.COORDINATES_RETENTION_DAYS = DAYS
    coordinates_retain(now=DEMO_NOW, days=DAYS)
    removed = Visit.objects.live().filter(coordinates_removed_at__isnull=False).count()
    assert map_plan(scope=Scope()).removed == removed
    page = client.get("/map/").content.decode()
    assert f"{removed:,} visits of these lost their position to the retention rule (positions are kept 28 days)" in page
    recent = client.get(f"/map/?start={CUTOFF.date() + timedelta(days=1)}").content.decode()
    assert "retention rule" not in recent
    body = csv_bytes(client, "/visits.csv")
    header = next(csv.reader(io.StringIO(body.decode("utf-8")[1:])))
    assert header[-3:] == ["customer_distance_m", "customer_location", "position_removed"]
    rows = csv_dicts(body)
    gone = [r for r in rows if r["position_removed"] == "yes"]
    assert len(gone) == removed and all(r["latitude"] == r["longitude"] == "" for r in gone)
    assert {r["position_removed"] for r in rows} == {"yes", ""}
    assert sum(1 for r in rows if r["latitude"]) == Visit.objects.live().filter(latitude__isnull=False).count() > 0


@pytest.mark.slow
def test_an_archive_round_trip_keeps_the_removed_positions_and_the_frozen_flags(held, tmp_path):
    from .test_archive import wipe

    coordinates_retain(now=DEMO_NOW, days=DAYS)
    visits = sorted(Visit.objects.values_list("id", "latitude", "longitude", "coordinates_removed_at"))
    flags = sorted(Flag.objects.values_list("visit_id", "rule", "numbers", "sentence"), key=repr)
    learned = ("resource_type", "resource_id", "learned_latitude", "learned_visits")
    customers = sorted(Customer.objects.values_list(*learned))
    archive_export(path=tmp_path / "a.zip")
    wipe()
    Customer.objects.all().delete()  # wipe() knows the tables of its own data, which has none
    result = archive_import(path=tmp_path / "a.zip")
    assert result.flags.equal, result.flags.examples  # the frozen flags are not "found otherwise"
    assert sorted(Visit.objects.values_list("id", "latitude", "longitude", "coordinates_removed_at")) == visits
    assert sorted(Flag.objects.values_list("visit_id", "rule", "numbers", "sentence"), key=repr) == flags
    assert sorted(Customer.objects.values_list(*learned)) == customers
    assert_flags_match()


def test_retention_apply_prints_progress_and_a_summary_and_a_dry_run_writes_nothing(serve, small_team, settings):
    serve(small_team)
    streams_sync()
    located = Visit.objects.filter(latitude__isnull=False).count()
    settings.COORDINATES_RETENTION_DAYS = None
    out = io.StringIO()
    call_command("retention_apply", stdout=out)
    assert "COORDINATES_RETENTION_DAYS is empty" in out.getvalue()
    settings.COORDINATES_RETENTION_DAYS = (timezone.now() - (DEMO_NOW - timedelta(days=3))).days
    old = Visit.objects.filter(visited_at__lt=retention_cutoff(), latitude__isnull=False).count()
    assert 0 < old < located
    out = io.StringIO()
    call_command("retention_apply", "--dry-run", stdout=out)
    assert f"dry run: {old:,} visits of" in out.getvalue()
    assert Visit.objects.filter(latitude__isnull=False).count() == located
    out = io.StringIO()
    call_command("retention_apply", stdout=out)
    lines = out.getvalue().splitlines()
    assert any("retention: chunk 1:" in line for line in lines)
    assert lines[-1].startswith("done in ") and f"{old:,} visits of" in lines[-1] and "lost their position" in lines[-1]
    assert Visit.objects.filter(latitude__isnull=False).count() == located - old


def test_the_daily_schedule_is_made_once():
    schedules_setup()
    named = {name: (created, every) for name, created, every in schedules_setup()}
    assert Schedule.objects.filter(name=RETENTION_SCHEDULE_NAME, func="visits.tasks.retention_task").count() == 1
    assert named[RETENTION_SCHEDULE_NAME][0] is False and named[RETENTION_SCHEDULE_NAME][1].startswith("daily at")


@pytest.mark.slow
def test_a_reps_export_holds_their_record_visits_flags_and_decisions_and_is_logged(held, tmp_path, settings):
    settings.COORDINATES_RETENTION_DAYS = DAYS
    coordinates_retain(now=DEMO_NOW, days=DAYS)
    decided = Decision.objects.order_by("id").first()
    rep = decided.visit.rep
    Rep.objects.filter(id=rep.id).update(name="=cmd|' /C calc'!A0")
    theirs, other = decided.visit_id, Visit.objects.exclude(rep_id=rep.id).values_list("id", flat=True).first()
    looked = [
        AccessLogEntry.objects.create(username="max", kind="rep", path=f"/reports/reps/{rep.id}/", object_id=rep.id),
        AccessLogEntry.objects.create(username="max", kind="visit", path=f"/visits/{theirs}/", object_id=theirs),
    ]
    AccessLogEntry.objects.create(username="max", kind="visit", path=f"/visits/{other}/", object_id=other)
    path = tmp_path / "rep.zip"
    out = io.StringIO()
    call_command("rep_export", str(rep.id), str(path), stdout=out)
    assert out.getvalue().startswith(f"written {path}: ")
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == [
            "README.txt", "access_log.csv", "decisions.csv", "flags.csv", "rep.json", "visits.csv"
        ]  # fmt: skip
        accesses = csv_dicts(z.read("access_log.csv"))
        record = json.loads(z.read("rep.json"))
        visits = csv_dicts(z.read("visits.csv"))
        flags = csv_dicts(z.read("flags.csv"))
        decisions = csv_dicts(z.read("decisions.csv"))
        readme = z.read("README.txt").decode()
    assert record["id"] == rep.id and record["name"] == "=cmd|' /C calc'!A0"
    mine = Visit.objects.filter(rep_id=rep.id)
    assert sorted(int(v["id"]) for v in visits) == sorted(mine.values_list("id", flat=True))
    assert {"latitude", "longitude", "coordinates_removed_at", "customer_distance_m", "risk"} <= set(visits[0])
    located = mine.filter(latitude__isnull=False).first()
    row = next(v for v in visits if int(v["id"]) == located.id)
    assert (float(row["latitude"]), float(row["longitude"])) == (located.latitude, located.longitude)
    assert (
        sum(1 for v in visits if v["coordinates_removed_at"])
        == mine.filter(coordinates_removed_at__isnull=False).count()
        > 0
    )
    assert sorted((int(f["visit_id"]), f["rule"]) for f in flags) == sorted(
        Flag.objects.filter(visit__rep_id=rep.id).values_list("visit_id", "rule")
    )
    assert sorted(int(d["id"]) for d in decisions) == sorted(
        Decision.objects.filter(visit__rep_id=rep.id).values_list("id", flat=True)
    )
    assert "decided_by" not in decisions[0]
    assert "COORDINATES_RETENTION_DAYS = 28" in readme and "visits.csv" in readme and "decisions.csv" in readme
    # Who looked at their page and their visit, not at another rep's visit; the viewer's name left out.
    assert [(a["kind"], int(a["object_id"])) for a in accesses] == [(e.kind, e.object_id) for e in looked]
    assert "username" not in accesses[0] and "access_log.csv" in readme
    entry = AccessLogEntry.objects.get(kind="export")
    assert (entry.kind, entry.path, entry.object_id, entry.rows) == ("export", "rep_export", rep.id, mine.count())
    assert entry.username and entry.user is None
    assert [p.name for p in tmp_path.iterdir()] == ["rep.zip"]  # no temporary file left


def test_a_rep_export_refuses_an_unknown_rep_or_a_path_it_cannot_write(tmp_path):
    user_make("someone")
    Rep.objects.create(id=5, name="Bo")
    with pytest.raises(CommandError, match="No rep with id 6"):
        call_command("rep_export", "6", str(tmp_path / "x.zip"))
    with pytest.raises(CommandError, match="does not exist"):
        call_command("rep_export", "5", str(tmp_path / "missing" / "x.zip"))
    with pytest.raises(RepExportError, match="is a folder"):
        rep_export(rep_id=5, path=tmp_path)
    (tmp_path / "x.zip").write_bytes(b"previous")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: a file in the way of the folder instead
            os.chmod(locked, 0o700)
            locked.rmdir()
            locked.write_text("a file, not a folder")
            target = locked / "x.zip"
        else:
            target = locked / "x.zip"
        with pytest.raises(CommandError, match="Cannot write|does not exist"):
            call_command("rep_export", "5", str(target))
    finally:
        if locked.is_dir():
            os.chmod(locked, 0o700)
    assert (tmp_path / "x.zip").read_bytes() == b"previous" and not AccessLogEntry.objects.exists()

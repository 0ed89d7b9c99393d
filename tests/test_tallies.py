"""The tallies behind the reports: kept by triggers through every kind of write, split into
whole periods and edge days correctly, and equal to direct counts for any filter, before and
after a change of DISPLAY_TIME_ZONE."""

import importlib
import random
from collections import Counter
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import transaction

from visits.ingest import tallies
from visits.ingest.pages import visits_upsert
from visits.ingest.sync import streams_sync
from visits.models import AllTimeTally, DistanceTally, MonthTally, Outcome, OutcomeDistanceTally, Rep, Visit
from visits.reports import analytics
from visits.reports.analytics import MONTHS, WEEKS, YEARS, range_plan
from visits.reports.scope import Scope

from .conftest import assert_tallies_match

UTC = ZoneInfo("UTC")


@pytest.mark.parametrize("grains", [(MONTHS,), (WEEKS,), (YEARS, MONTHS)], ids=["months", "weeks", "years+months"])
def test_range_plan_covers_each_day_exactly_once(grains):
    rng = random.Random(7)
    floor, ceiling = date(2024, 11, 20), date(2026, 3, 10)  # the open ends stand for these
    for _ in range(300):
        a = floor + timedelta(days=rng.randrange(400))
        b = a + timedelta(days=rng.randrange(500))
        start, end = rng.choice([a, None, a]), rng.choice([b, None, b])
        reads, days = range_plan(start=start, end=end, grains=grains)
        covered = Counter()
        for low, high in days:
            covered.update(days_between(low or floor, high or ceiling))
        for grain, (first, last) in reads:
            assert first is None or grain.first(first) == first, "a tally period must be whole"
            period = grain.first(first or floor)
            while period <= (last or ceiling):
                covered.update(days_between(period, grain.following(period) - timedelta(days=1)))
                period = grain.following(period)
        wanted = Counter(days_between(start or floor, end or ceiling))
        # Open ends reach past floor/ceiling in the tally; compare inside the window only.
        inside = lambda counts: {d: n for d, n in counts.items() if floor <= d <= ceiling}  # noqa: E731
        assert inside(covered) == inside(wanted), (start, end, reads, days)


def test_range_plan_reads_whole_years_then_whole_months_then_days():
    reads, days = range_plan(start=date(2024, 12, 30), end=date(2026, 2, 28), grains=(YEARS, MONTHS))
    assert reads == [(YEARS, (date(2025, 1, 1), date(2025, 1, 1))), (MONTHS, (date(2026, 1, 1), date(2026, 2, 1)))]
    assert days == [(date(2024, 12, 30), date(2024, 12, 31))]
    assert range_plan(start=None, end=None, grains=(YEARS, MONTHS)) == ([(YEARS, (None, None))], [])


def days_between(low: date, high: date) -> list[date]:
    return [low + timedelta(days=i) for i in range((high - low).days + 1)]


def expected_counts(*, scope: Scope, by: tuple[str, ...], zone: ZoneInfo, visits: list[Visit]) -> dict:
    """Counts per key computed here in Python from visited_at; the reference for the reports."""
    counts: dict[tuple, Counter] = {}
    for v in visits:
        day = v.visited_at.astimezone(zone).date()
        if (scope.start and day < scope.start) or (scope.end and day > scope.end):
            continue
        if scope.reps is not None and v.rep_id not in scope.reps:
            continue
        if scope.outcomes is not None and v.outcome_id not in scope.outcomes:
            continue
        if scope.statuses is not None and v.verification_status not in scope.statuses:
            continue
        if scope.resource_type and v.resource_type != scope.resource_type:
            continue
        parts = {"rep": v.rep_id, "outcome": v.outcome_id, "week": day - timedelta(days=day.weekday())}
        key = tuple(parts[b] for b in by)
        counts.setdefault(key, Counter())[v.verification_status] += 1
    return counts


def got_counts(*, scope: Scope, by: tuple[str, ...]) -> dict:
    return {
        key: Counter({s: getattr(c, s) for s in analytics.VerificationStatus.values if getattr(c, s)})
        for key, c in analytics.counts_by(scope=scope, by=by).items()
    }


def random_scopes(rng: random.Random, *, days: list[date], reps: list[int], outcomes: list[int], n: int):
    yield Scope()
    for _ in range(n):
        start = rng.choice([None, rng.choice(days)])
        end = rng.choice([None, rng.choice(days)])
        if start and end and start > end:
            start, end = end, start
        yield Scope(
            start=start,
            end=end,
            reps=rng.choice([None, None, frozenset(rng.sample(reps, 3))]),
            outcomes=rng.choice([None, None, frozenset(rng.sample(outcomes, 2))]),
            statuses=rng.choice([None, None, frozenset({"verified", "resource_location_too_far"})]),
            resource_type=rng.choice(["", "", "lead"]),
        )


BYS = [(), ("rep",), ("outcome",), ("rep", "outcome"), ("week",), ("rep", "week")]


def assert_reports_count_right(*, zone_name: str, seed: int) -> None:
    zone = ZoneInfo(zone_name)
    visits = list(Visit.objects.filter(deleted_at__isnull=True))
    days = sorted({v.visited_at.astimezone(zone).date() for v in visits})
    reps = sorted(Rep.objects.values_list("id", flat=True))
    outcomes = sorted(Outcome.objects.values_list("id", flat=True))
    rng = random.Random(seed)
    for scope in random_scopes(rng, days=days, reps=reps, outcomes=outcomes, n=25):
        for by in BYS:
            assert got_counts(scope=scope, by=by) == expected_counts(scope=scope, by=by, zone=zone, visits=visits), (
                scope,
                by,
            )


@pytest.fixture
def synced(serve, full_team):
    serve(full_team)
    streams_sync()
    return full_team


@pytest.mark.slow
@pytest.mark.django_db
def test_reports_equal_direct_counts_for_any_filters(synced):
    assert tallies.tallies_current()
    assert_reports_count_right(zone_name="UTC", seed=1)


@pytest.mark.slow
@pytest.mark.django_db
def test_a_new_time_zone_counts_directly_until_the_tallies_are_rebuilt(synced, settings):
    settings.DISPLAY_TIME_ZONE = "America/Chicago"
    assert not tallies.tallies_current()  # stale: the reports count the visits themselves
    assert_reports_count_right(zone_name="America/Chicago", seed=2)
    tallies.tallies_rebuild()
    assert tallies.tallies_current()
    chicago = ZoneInfo("America/Chicago")
    assert all(v.local_day == v.visited_at.astimezone(chicago).date() for v in Visit.objects.all())
    assert_tallies_match()
    assert_reports_count_right(zone_name="America/Chicago", seed=3)


def visit_row(**change) -> dict:
    at = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)  # the last half hour of a month and a week
    row = {
        "rep_id": 1, "resource_type": "lead", "resource_id": 5, "visited_at": at, "created_at": at,
        "summary": "", "outcome_id": 10, "latitude": None, "longitude": None,
        "verification_status": "location_unknown", "sequence": 1, "event_time": at, "deleted_at": None,
    }  # fmt: skip
    return {**row, **change}


@pytest.mark.django_db(transaction=True)
def test_triggers_follow_every_kind_of_write():
    Rep.objects.create(id=1, name="A")
    Rep.objects.create(id=2, name="B")
    Outcome.objects.create(id=10, name="Met")
    steps = [
        {7: visit_row(), 8: visit_row(rep_id=2), 9: visit_row(outcome_id=None)},
        {7: visit_row(visited_at=datetime(2026, 2, 1, 0, 30, tzinfo=UTC), sequence=2)},  # next month and week
        {8: visit_row(rep_id=1, verification_status="verified", sequence=2)},
        {9: visit_row(outcome_id=10, resource_type="contact", sequence=2)},
        {8: visit_row(sequence=3, deleted_at=datetime(2026, 2, 2, tzinfo=UTC))},  # deleted in Sell
        {7: visit_row(sequence=3, summary="only the summary changes")},
    ]
    for rows in steps:
        with transaction.atomic():
            visits_upsert(rows=rows)
        assert_tallies_match()
    Visit.objects.filter(id=9).update(verification_status="verified")  # an ORM update, as the admin would
    assert_tallies_match()
    Visit.objects.filter(id__in=[7, 9]).update(flagged=True)  # as flags.py marks flagged visits
    assert_tallies_match()
    assert sum(MonthTally.objects.values_list("flagged", flat=True)) == 2
    Visit.objects.filter(id=7).delete()
    assert_tallies_match()
    assert dict(MonthTally.objects.filter(month=date(2026, 2, 1)).values_list("rep_id", "visits")) == {1: 0}


@pytest.mark.django_db(transaction=True)
def test_migrate_puts_dropped_triggers_back():
    tallies.triggers_drop()
    assert not tallies.triggers_installed()
    call_command("migrate", verbosity=0)
    assert tallies.triggers_installed() >= {"visits_tally_insert", "visits_tally_update_new", "visits_tally_delete"}


@pytest.mark.slow
@pytest.mark.django_db
def test_rebuild_command_says_what_it_did(synced, settings, capsys):
    settings.DISPLAY_TIME_ZONE = "Europe/Paris"
    call_command("tallies_rebuild")
    out = capsys.readouterr().out
    assert "in Europe/Paris" in out and "month rows" in out
    assert tallies.tallies_current()
    assert_tallies_match()


@pytest.mark.slow
@pytest.mark.django_db
def test_migration_0020_fills_the_all_time_tallies_from_the_others(synced):
    """Migration 0020 sums the new all-time tallies from the year and month distance tallies, not
    from every visit: what it writes equals the rebuild's counts (assert_tallies_match) and the
    month distance tally summed by outcome."""
    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("visits.migrations.0021_alltime_tallies")
    Visit.objects.filter(id__in=list(Visit.objects.values_list("id", flat=True)[:40])).update(
        customer_distance_m=2500.0, verification_status="resource_location_too_far"
    )
    by_outcome = Counter()
    for outcome_id, k, n in DistanceTally.objects.values_list("outcome_id", "bin", "visits"):
        by_outcome[(outcome_id, k)] += n
    assert +by_outcome, "no too-far distances to sum"
    AllTimeTally.objects.all().delete()
    OutcomeDistanceTally.objects.all().delete()
    with connection.cursor() as cursor:  # Django's schema editor will not run in a test's transaction on SQLite
        migration.fill_from_tallies(apps, SimpleNamespace(execute=cursor.execute, connection=connection))
    assert_tallies_match()
    stored = OutcomeDistanceTally.objects.values_list("outcome_id", "bin", "visits")
    assert +Counter({(o, k): n for o, k, n in stored}) == +by_outcome

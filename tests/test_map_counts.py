"""The map legend's counts and the box a map opens on (reports/map_counts.py, maps.map_plan)
against a direct count in Python over the visits, for random filters, through moves, deletions,
removed positions and history from the Core API; and that the common scopes read the tallies, not
the visits."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.test_clusters import changes_write, random_scope, world_make
from visits.models import Visit, VisitSource
from visits.reports import map_counts, maps
from visits.reports.scope import Scope


def in_scope(visit: Visit, scope: Scope) -> bool:
    """A live visit in scope, with a position or without."""
    day = visit.visited_at.astimezone(ZoneInfo(settings.DISPLAY_TIME_ZONE)).date()
    return (
        visit.deleted_at is None
        and (scope.reps is None or visit.rep_id in scope.reps)
        and (scope.statuses is None or visit.verification_status in scope.statuses)
        and (scope.outcomes is None or visit.outcome_id in scope.outcomes)
        and (not scope.resource_type or visit.resource_type == scope.resource_type)
        and (scope.start is None or day >= scope.start)
        and (scope.end is None or day <= scope.end)
    )


def assert_counts_right(*, rng: random.Random, n: int) -> None:
    everything = list(Visit.objects.all())
    for _ in range(n):
        scope = random_scope(rng)
        chosen = [v for v in everything if in_scope(v, scope)]
        located = [v for v in chosen if v.latitude is not None]
        plan = maps.map_plan(scope=scope)
        assert {s: k for s, k in plan.located.items() if k} == dict(Counter(v.verification_status for v in located))
        assert plan.without_location == len(chosen) - len(located), scope
        assert plan.history == sum(1 for v in chosen if v.source == VisitSource.CORE_API), scope
        assert plan.removed == sum(1 for v in chosen if v.coordinates_removed_at is not None), scope
        assert plan.mode == ("clusters" if located else "empty")
        bounds = map_counts.opening_bounds(scope)
        if not located:
            assert bounds is None or scope.start or scope.end, scope  # a range's whole months may hold others
            continue
        (south, west), (north, east) = bounds
        lats, lons = [v.latitude for v in located], [v.longitude for v in located]
        assert south <= min(lats) and north >= max(lats) and west <= min(lons) and east >= max(lons), scope
        if scope.start is None and scope.end is None:  # the cells of the scope's own visits: at most a cell wider
            wider = max(min(lats) - south, north - max(lats), min(lons) - west, east - max(lons))
            assert wider <= (1 / 64 if scope.reps is None else 0.5) + 1e-9, scope


def history_and_removed(rng: random.Random) -> None:
    """Some visits made Core API history (no position), some stripped of theirs by the retention rule."""
    ids = list(Visit.objects.values_list("id", flat=True))
    Visit.objects.filter(id__in=rng.sample(ids, 30)).update(source=VisitSource.CORE_API, latitude=None, longitude=None)
    Visit.objects.filter(id__in=rng.sample(ids, 30)).update(
        latitude=None, longitude=None, coordinates_removed_at=datetime(2026, 3, 1, tzinfo=UTC)
    )


@pytest.mark.django_db
def test_the_legend_and_the_opening_box_equal_a_direct_count_for_random_filters():
    rng = world_make(seed=5, visits=500)
    history_and_removed(rng)
    assert_counts_right(rng=rng, n=120)


@pytest.mark.django_db(transaction=True)
def test_the_counts_follow_moves_deletions_and_restorations():
    rng = world_make(seed=6, visits=300)
    ids = list(Visit.objects.values_list("id", flat=True))
    for step in range(2, 5):
        changes_write(rng=rng, ids=ids, sequence=step)
        assert_counts_right(rng=rng, n=15)
    Visit.objects.filter(id__in=ids[:10]).delete()
    history_and_removed(rng)
    assert_counts_right(rng=rng, n=15)


@pytest.mark.django_db
def test_the_common_maps_read_the_tallies_not_the_visits():
    """The map as it opens, one rep's and one month's: no query reads the visits table, so the page
    costs the same at a million visits as at a hundred (bench/map.py --browser)."""
    world_make(seed=7, visits=200)
    for scope in (
        Scope(),
        Scope(reps=frozenset({1, 2})),
        Scope(start=date(2025, 12, 1), end=date(2025, 12, 31), statuses=frozenset({"verified"})),
    ):
        located = Visit.objects.filter(deleted_at__isnull=True, latitude__isnull=False)
        assert located.exists()
        with CaptureQueriesContext(connection) as queries:
            plan = maps.map_plan(scope=scope)
            bounds = map_counts.opening_bounds(scope)
        assert plan.located_total and bounds is not None
        read = [q["sql"] for q in queries.captured_queries if '"visits_visit"' in q["sql"]]
        # only the two notes' counts, each through its partial index (a few rows)
        assert len(read) == 2 and all("source" in sql or "coordinates_removed_at" in sql for sql in read), read
    # an outcome filter, which the map tally does not keep, is counted from the visits
    with CaptureQueriesContext(connection) as queries:
        maps.map_plan(scope=Scope(outcomes=frozenset({10})))
    assert any('"visits_visit"' in q["sql"] for q in queries.captured_queries)

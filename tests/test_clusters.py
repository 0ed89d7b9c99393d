"""The map's clusters and points (reports/clusters.py, /map/clusters.json, /map/points.json) against
a direct count in Python over the visits, for random boxes, zoom levels and filters, from the map
tally and from the visits alike; the map tally kept by its triggers through moves, deletions and
restorations, equal to its rebuild; a Manager's reach; bad parameters; the size of an answer."""

from __future__ import annotations

import importlib
import json
import math
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection, transaction

from tests.conftest import user_make
from visits.geo.retention import coordinates_retain
from visits.ingest import map_tally, tallies
from visits.ingest.pages import visits_upsert
from visits.models import MapCellTally, Outcome, Rep, Visit
from visits.reports import clusters
from visits.reports.scope import Scope

STATUSES = ["verified", "resource_location_too_far", "location_unknown", "location_services_disabled"]
REPS = [1, 2, 3, 4, 5, 6]
OUTCOMES = [10, 11]
# Where the visits are: around a few places, one astride the antimeridian, one on cell edges.
PLACES = [(41.9, -87.6, 0.8), (48.85, 2.35, 3.0), (-33.9, 151.2, 0.2), (-17.0, 179.9, 0.3), (0.0, 0.0, 0.0)]
EDGES = [0.0, 0.5, -0.5, 4.0, 1.0 / 16, -4.0]


def visit_row(*, rng: random.Random, sequence: int = 1, **change) -> dict:
    at = datetime(2025, 11, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(4 * 30 * 24 * 60))
    lat, lon, spread = rng.choice(PLACES)
    if spread:
        lat, lon = lat + rng.uniform(-spread, spread), lon + rng.uniform(-spread, spread)
        lon = (lon + 180) % 360 - 180
    else:  # exactly on cells' edges
        lat, lon = rng.choice(EDGES), rng.choice(EDGES)
    located = rng.random() > 0.1
    row = {
        "rep_id": rng.choice(REPS), "resource_type": rng.choice(["lead", "contact"]), "resource_id": 5,
        "visited_at": at, "created_at": at, "summary": "", "outcome_id": rng.choice([*OUTCOMES, None]),
        "latitude": lat if located else None, "longitude": lon if located else None,
        "verification_status": rng.choice(STATUSES), "sequence": sequence, "event_time": at, "deleted_at": None,
    }  # fmt: skip
    return {**row, **change}


def world_make(*, seed: int, visits: int) -> random.Random:
    rng = random.Random(seed)
    for rep_id in REPS:
        Rep.objects.create(id=rep_id, name=f"Rep {rep_id}", group_id=900 + rep_id % 2)
    for outcome_id in OUTCOMES:
        Outcome.objects.create(id=outcome_id, name=f"Outcome {outcome_id}")
    rows = {1000 + i: visit_row(rng=rng) for i in range(visits)}
    for row in rng.sample(list(rows.values()), visits // 20):
        row["deleted_at"] = row["visited_at"]
    with transaction.atomic():
        visits_upsert(rows=rows)
    return rng


# --- The oracle ------------------------------------------------------------------------------


def in_scope(visit: Visit, scope: Scope) -> bool:
    day = visit.visited_at.astimezone(ZoneInfo(settings.DISPLAY_TIME_ZONE)).date()
    return (
        visit.deleted_at is None
        and visit.latitude is not None
        and (scope.reps is None or visit.rep_id in scope.reps)
        and (scope.statuses is None or visit.verification_status in scope.statuses)
        and (scope.outcomes is None or visit.outcome_id in scope.outcomes)
        and (not scope.resource_type or visit.resource_type == scope.resource_type)
        and (scope.start is None or day >= scope.start)
        and (scope.end is None or day <= scope.end)
    )


def expected_clusters(*, scope: Scope, box: clusters.Box, zoom: int) -> dict[tuple[int, int], tuple]:
    """{cell: (count, statuses, the one visit's id or None, mean latitude, mean longitude)}."""
    grid = clusters.grid_choose(box=box, zoom=zoom)
    cells: dict[tuple[int, int], list[Visit]] = defaultdict(list)
    for visit in Visit.objects.all():
        if in_scope(visit, scope) and clusters.point_in_grid(
            latitude=visit.latitude, longitude=visit.longitude, grid=grid
        ):
            cells[
                map_tally.cell_y(visit.latitude, grid.exponent), map_tally.cell_x(visit.longitude, grid.exponent)
            ].append(visit)
    return {
        cell: (
            len(found),
            dict(Counter(v.verification_status for v in found)),
            found[0].id if len(found) == 1 else None,
            sum(v.latitude for v in found) / len(found),
            sum(v.longitude for v in found) / len(found),
        )
        for cell, found in cells.items()
    }


def assert_same(answer: dict, wanted: dict, where) -> None:
    """Each cluster of the answer is the one wanted cell at its position (a mean lies in its cell;
    rounded to 5 decimals, near it), with the same count, statuses and visit."""
    matched = set()
    for c in answer["clusters"]:
        near = [
            cell
            for cell, w in wanted.items()
            if math.isclose(c["lat"], w[3], abs_tol=1e-5) and math.isclose(c["lon"], w[4], abs_tol=1e-5)
        ]
        assert len(near) == 1, (where, c, near)
        assert (c["count"], c["statuses"], c.get("id")) == wanted[near[0]][:3], (where, c, wanted[near[0]])
        matched.add(near[0])
    assert len(matched) == len(answer["clusters"]) and matched == set(wanted), where


def random_box(rng: random.Random) -> tuple[str, int]:
    zoom = rng.randrange(0, 15)
    span = 360 / 2**zoom * rng.uniform(2, 8)
    lat, lon, _ = rng.choice(PLACES)
    south = max(-90.0, lat - rng.uniform(0, span / 2))
    north = min(90.0, lat + rng.uniform(0, span / 2))
    west = max(-540.0, lon - rng.uniform(0, span))
    east = min(540.0, lon + rng.uniform(0, span))
    if rng.random() < 0.1:
        west, south, east, north = -180.0, -90.0, 180.0, 90.0
    return f"{west!r},{south!r},{east!r},{north!r}", zoom


def random_scope(rng: random.Random) -> Scope:
    first, last = date(2025, 11, 1), date(2026, 2, 28)
    start = end = None
    kind = rng.choice(["none", "months", "days"])
    if kind == "months":
        start = date(2025, rng.choice([11, 12]), 1)
        end = date(2026, rng.choice([1, 2]), 1) - timedelta(days=1)
    elif kind == "days":
        start = first + timedelta(days=rng.randrange(60))
        end = start + timedelta(days=rng.randrange(60))
    return Scope(
        start=start,
        end=min(end, last) if end else None,
        reps=rng.choice([None, None, frozenset(rng.sample(REPS, 2))]),
        outcomes=rng.choice([None, None, None, frozenset([rng.choice(OUTCOMES)])]),
        statuses=rng.choice([None, None, frozenset(rng.sample(STATUSES, 2))]),
        resource_type=rng.choice(["", "", "", "lead"]),
    )


def assert_clusters_count_right(*, rng: random.Random, n: int) -> set[str]:
    sources = set()
    for _ in range(n):
        bbox, zoom = random_box(rng)
        box, zoom = clusters.box_parse(bbox=bbox, zoom=str(zoom))
        scope = random_scope(rng)
        found = clusters.clusters_count(scope=scope, box=box, zoom=zoom)
        sources.add(found.source)
        answer = {"total": found.total, "clusters": found.clusters}
        wanted = expected_clusters(scope=scope, box=box, zoom=zoom)
        assert_same(answer, wanted, (bbox, zoom, scope, found.source))
        assert found.total == sum(w[0] for w in wanted.values())
    return sources


def changes_write(*, rng: random.Random, ids: list[int], sequence: int) -> None:
    """40 of the visits `ids` written again through ingestion: moved (another place, rep, month,
    status, or no position), deleted, restored where deleted, or stripped of their position."""
    rows = {}
    for visit_id in rng.sample(ids, 40):
        visit = Visit.objects.get(id=visit_id)
        row = visit_row(rng=rng, sequence=sequence)  # moved, another rep, month, status, or none
        kind = rng.choice(["move", "delete", "restore", "unlocate"])
        if kind == "delete":
            row = {**row, "deleted_at": row["visited_at"]}
        elif kind == "unlocate":
            row = {**row, "latitude": None, "longitude": None}
        elif kind == "restore" and visit.deleted_at is not None:
            row = {**row, "latitude": visit.latitude, "longitude": visit.longitude, "deleted_at": None}
        rows[visit_id] = row
    with transaction.atomic():
        visits_upsert(rows=rows)


# --- The tests -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_clusters_equal_a_direct_count_for_random_boxes_zooms_and_filters():
    rng = world_make(seed=1, visits=600)
    assert clusters.tally_band(scope=Scope(), grid=clusters.grid_for(box=clusters.Box(0, 1, ((0, 1),)), exponent=-1))
    sources = assert_clusters_count_right(rng=rng, n=150)
    assert sources == {"tally", "visits"}  # both ways were compared


@pytest.mark.django_db(transaction=True)
def test_the_map_tally_follows_moves_deletions_and_restorations_and_equals_its_rebuild():
    rng = world_make(seed=2, visits=300)
    ids = list(Visit.objects.values_list("id", flat=True))
    for step in range(2, 6):
        changes_write(rng=rng, ids=ids, sequence=step)
        assert_clusters_count_right(rng=rng, n=20)
    Visit.objects.filter(id__in=ids[:10]).delete()  # and deleted outright
    Visit.objects.filter(id__in=ids[10:20]).update(latitude=1.25, longitude=-3.5)  # an ORM update, as the admin
    assert_clusters_count_right(rng=rng, n=20)
    kept = map_tally_rows()
    tallies.tallies_rebuild()
    rebuilt = map_tally_rows()
    assert kept.keys() == rebuilt.keys()
    for key, (visits, lat, lon, id_sum) in rebuilt.items():
        assert kept[key][0] == visits and kept[key][3] == id_sum, key
        assert math.isclose(kept[key][1], lat, abs_tol=1e-6) and math.isclose(kept[key][2], lon, abs_tol=1e-6)
    assert {row[0] for row in kept} == set(map_tally.BANDS)
    assert {(key[0], str(key[3]) != map_tally.PLAIN_MONTH) for key in kept} == set(map_tally.LAYERS)
    assert_clusters_count_right(rng=rng, n=20)
    # Migration 0025, backwards: the 4-degree band by month and rep, summed from the 1/2-degree one;
    # forwards: the 1/2-degree band's plain rows summed from its rows by month and rep, and the
    # 4-degree band gone: the same rows as the triggers keep.
    migration = importlib.import_module("visits.migrations.0025_map_bands")
    editor = SimpleNamespace(connection=connection)
    with connection.cursor() as cursor:  # Django's schema editor will not run in a test's transaction on SQLite
        editor.execute = cursor.execute
        migration.plain_rows_remove(apps, editor)
        before = map_tally_rows()
        assert {(key[0], str(key[3]) != map_tally.PLAIN_MONTH) for key in before} == {
            (2, True),
            (-1, True),
            (-4, False),
            (-6, False),
        }
        coarse = Counter()
        for key, row in before.items():
            if key[0] == -1:
                coarse[(key[1] // 8, key[2] // 8, key[3], key[4], key[5])] += row[0]
        assert +coarse == Counter({key[1:]: row[0] for key, row in before.items() if key[0] == 2})
        migration.plain_rows_add(apps, editor)
    after = map_tally_rows()
    assert after.keys() == kept.keys()
    for key, (visits, lat, lon, id_sum) in after.items():
        assert kept[key][0] == visits and kept[key][3] == id_sum, key
        assert math.isclose(kept[key][1], lat, abs_tol=1e-6) and math.isclose(kept[key][2], lon, abs_tol=1e-6)


def map_tally_rows() -> dict[tuple, tuple]:
    rows = MapCellTally.objects.filter(visits__gt=0).values_list(
        "band", "cell_y", "cell_x", "month", "rep_id", "verification_status",
        "visits", "latitude_sum", "longitude_sum", "id_sum",
    )  # fmt: skip
    return {row[:6]: row[6:] for row in rows}


@pytest.mark.django_db
def test_the_endpoint_answers_the_filters_and_a_team(client, cast):
    rng = world_make(seed=3, visits=400)
    client.force_login(cast.manager)
    for query, scope in [
        ("", Scope()),
        ("&team=900", Scope(reps=frozenset(r for r in REPS if r % 2 == 0))),
        ("&status=verified&rep=1&rep=2", Scope(statuses=frozenset({"verified"}), reps=frozenset({1, 2}))),
        ("&start=2025-12-03&end=2026-01-10", Scope(start=date(2025, 12, 3), end=date(2026, 1, 10))),
        (f"&outcome={OUTCOMES[0]}", Scope(outcomes=frozenset({OUTCOMES[0]}))),
    ]:
        for _ in range(5):
            bbox, zoom = random_box(rng)
            response = client.get(f"/map/clusters.json?bbox={bbox}&zoom={zoom}{query}")
            assert response.status_code == 200, response.content
            box, zoom = clusters.box_parse(bbox=bbox, zoom=str(zoom))
            answer = response.json()
            wanted = expected_clusters(scope=scope, box=box, zoom=zoom)
            assert_same(answer, wanted, (query, bbox, zoom))
            assert answer["total"] == sum(w[0] for w in wanted.values())


@pytest.mark.django_db
def test_points_are_the_visits_in_the_box_with_what_a_popup_shows(client, cast, settings):
    world_make(seed=4, visits=300)
    client.force_login(cast.manager)
    bbox = "-88.0,41.5,-87.2,42.3"
    answer = client.get(f"/map/points.json?bbox={bbox}&zoom={settings.MAP_POINTS_ZOOM}&rep=1&rep=2").json()
    wanted = {
        v.id
        for v in Visit.objects.filter(rep_id__in=[1, 2])
        if in_scope(v, Scope()) and 41.5 <= v.latitude <= 42.3 and -88.0 <= v.longitude <= -87.2
    }
    assert len(wanted) > 1 and {row[6] for row in answer["rows"]} == wanted
    assert answer["truncated"] is False
    assert set(answer["lookups"]["reps"]) <= {"Rep 1", "Rep 2"}
    box, _ = clusters.box_parse(bbox=bbox, zoom="13")
    newest = sorted(Visit.objects.filter(id__in=wanted), key=lambda v: (v.visited_at, v.id), reverse=True)
    for limit in (len(wanted) - 1, len(wanted) // 2):
        few = clusters.points_list(scope=Scope(reps=frozenset({1, 2})), box=box, limit=limit)
        assert len(few["rows"]) == limit and few["truncated"] is True
        assert [row[6] for row in few["rows"]] == [v.id for v in newest][:limit]  # the newest, newest first


@pytest.mark.django_db
def test_a_manager_counts_only_their_reporting_line(client):
    world_make(seed=5, visits=300)
    Rep.objects.filter(id=1).update(email="boss@example.com")
    Rep.objects.filter(id=2).update(reports_to=1)
    manager = user_make("boss", group="Managers", email="boss@example.com")
    client.force_login(manager)
    answer = client.get("/map/clusters.json?bbox=-180,-90,180,90&zoom=1").json()
    line = [v for v in Visit.objects.filter(rep_id__in=[1, 2]) if in_scope(v, Scope())]
    assert answer["total"] == len(line) > 0
    answer = client.get("/map/clusters.json?bbox=-180,-90,180,90&zoom=1&status=verified").json()
    assert answer["total"] == sum(v.verification_status == "verified" for v in line)
    points = client.get("/map/points.json?bbox=-180,-90,180,90&zoom=13").json()
    assert {row[6] for row in points["rows"]} == {v.id for v in line}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "zoom=3",
        "bbox=1,2,3&zoom=3",
        "bbox=a,b,c,d&zoom=3",
        "bbox=0,10,1,5&zoom=3",  # south above north
        "bbox=0,-91,1,5&zoom=3",
        "bbox=5,0,1,1&zoom=3",  # west east of east
        "bbox=0,0,1,nan&zoom=3",
        "bbox=0,0,1,1",
        "bbox=0,0,1,1&zoom=23",
        "bbox=0,0,1,1&zoom=x",
    ],
)
def test_a_bad_box_or_zoom_is_a_400_saying_why(client, cast, query):
    client.force_login(cast.manager)
    for path in ("/map/clusters.json", "/map/points.json"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400 and response.json()["problems"], (path, query)


@pytest.mark.django_db
def test_points_need_the_points_zoom_and_a_bad_filter_is_a_400(client, cast, settings):
    client.force_login(cast.manager)
    response = client.get(f"/map/points.json?bbox=0,0,1,1&zoom={settings.MAP_POINTS_ZOOM - 1}")
    assert response.status_code == 400 and "MAP_POINTS_ZOOM" in response.json()["problems"][0]
    assert client.get("/map/clusters.json?bbox=0,0,1,1&zoom=3&start=yesterday").status_code == 400


@pytest.mark.django_db
def test_an_answer_holds_at_most_max_cells_and_stays_under_200_kb(client, cast):
    """The worst case: every cell of the grid holds four visits of four statuses, with long ids."""
    Rep.objects.create(id=1, name="Rep")
    box = "-180,-90,-52.01,37.99"  # 32 x 32 cells of 4 degrees at zoom 4
    grid = clusters.grid_choose(box=clusters.box_parse(bbox=box, zoom="4")[0], zoom=4)
    assert grid.cells == clusters.MAX_CELLS and grid.exponent == 2
    rng, rows = random.Random(6), {}
    for y in range(32):
        for x in range(32):
            for k, status in enumerate(STATUSES):
                lat, lon = -90 + 4 * y + rng.uniform(0.01, 3.99), -180 + 4 * x + rng.uniform(0.01, 3.99)
                rows[10**15 + (y * 32 + x) * 4 + k] = visit_row(
                    rng=rng, rep_id=1, outcome_id=None, latitude=lat, longitude=lon, verification_status=status
                )
    with transaction.atomic():
        visits_upsert(rows=rows)
    client.force_login(cast.manager)
    response = client.get(f"/map/clusters.json?bbox={box}&zoom=4")
    answer = json.loads(response.content)
    assert len(answer["clusters"]) == clusters.MAX_CELLS and answer["total"] == len(rows)
    assert len(response.content) < 200_000, len(response.content)
    wider = client.get("/map/clusters.json?bbox=-180,-90,180,90&zoom=12").json()  # coarsened, not refused
    assert len(wider["clusters"]) <= clusters.MAX_CELLS and wider["total"] == len(rows)


def test_boxes_across_the_antimeridian_are_read_as_two_spans():
    box, _ = clusters.box_parse(bbox="170,-10,190,10", zoom="5")
    assert box.spans == ((170.0, 180.0), (-180.0, -170.0))
    box, _ = clusters.box_parse(bbox="-200,-10,-170,10", zoom="5")
    assert box.spans == ((160.0, 180.0), (-180.0, -170.0))
    assert clusters.box_parse(bbox="-400,-90,400,90", zoom="0")[0].spans == ((-180.0, 180.0),)
    assert clusters.box_parse(bbox="-180,-90,180,90", zoom="0")[0].spans == ((-180.0, 180.0),)


@pytest.mark.django_db(transaction=True)
def test_positions_removed_by_the_retention_rule_leave_the_clusters():
    rng = world_make(seed=7, visits=300)
    before = clusters.clusters_count(scope=Scope(), box=clusters.Box(-90, 90, ((-180, 180),)), zoom=2).total
    coordinates_retain(now=datetime(2026, 1, 1, tzinfo=UTC), days=30)
    removed = Visit.objects.filter(coordinates_removed_at__isnull=False, deleted_at__isnull=True).count()
    assert (
        removed
        and Visit.objects.filter(latitude__isnull=False, visited_at__lt=datetime(2025, 12, 2, tzinfo=UTC)).count() == 0
    )
    after = clusters.clusters_count(scope=Scope(), box=clusters.Box(-90, 90, ((-180, 180),)), zoom=2).total
    assert 0 < after < before
    assert_clusters_count_right(rng=rng, n=30)

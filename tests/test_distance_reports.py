"""Reports in metres: the far visits and the too-far visits' median and 90th percentile, from the
tallies and the edge days, equal a computation in Python from the visits themselves (the
percentiles within the bins' stated precision, the far visits exactly) for random filters, after
every kind of write: ingestion, the customers' refresh rewriting distances, ORM updates and
deletes, a rebuild, and a change of DISTANCE_FAR_KM."""

import math
import random
from datetime import UTC, date, datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction

from visits.geo.customers import customers_refresh
from visits.ingest import distance_tally, tallies
from visits.ingest.pages import visits_upsert
from visits.models import DistanceTally, Outcome, OutcomeDistanceTally, Rep, RepDistanceTally, Visit
from visits.reports import analytics
from visits.reports.scope import Scope

from .conftest import assert_tallies_match

REPS, OUTCOMES, CUSTOMERS = [1, 2, 3, 4], [10, 11, 12], 12
START = datetime(2025, 11, 3, tzinfo=UTC)  # five months, across a new year


def customer_point(resource_id: int) -> tuple[float, float]:
    return 41.8 + resource_id * 0.02, -87.6 - resource_id * 0.01


def offset(point: tuple[float, float], metres: float, rng: random.Random) -> tuple[float, float]:
    """A point about `metres` from `point`, in a random direction (the distances themselves come
    from the refresh's geodesic, whatever they are)."""
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = metres * math.cos(bearing) / 111_320
    dlng = metres * math.sin(bearing) / (111_320 * math.cos(math.radians(point[0])))
    return point[0] + dlat, point[1] + dlng


def visit_rows(rng: random.Random, ids: range, *, sequence: int = 1) -> dict[int, dict]:
    rows = {}
    for visit_id in ids:
        at = START + timedelta(seconds=rng.randrange(150 * 86400))
        status = rng.choice(["verified"] * 5 + ["resource_location_too_far"] * 3 + ["location_unknown"])
        resource_id = rng.randrange(1, CUSTOMERS + 1)
        point = None
        if status == "verified":
            point = offset(customer_point(resource_id), rng.choice([rng.uniform(0, 80)] * 9 + [1500.0]), rng)
        elif status == "resource_location_too_far":
            point = offset(customer_point(resource_id), math.exp(rng.uniform(math.log(150), math.log(40_000))), rng)
        rows[visit_id] = {
            "rep_id": rng.choice(REPS), "resource_type": rng.choice(["lead", "contact"]), "resource_id": resource_id,
            "visited_at": at, "created_at": at, "summary": "", "outcome_id": rng.choice([*OUTCOMES, None]),
            "latitude": point[0] if point else None, "longitude": point[1] if point else None,
            "verification_status": status, "sequence": sequence, "event_time": at, "deleted_at": None,
        }  # fmt: skip
    return rows


def nearest_rank(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def expected(*, scope: Scope, by: tuple[str, ...], far_m: float, visits: list[Visit]) -> dict[tuple, tuple]:
    """{key: (far visits, too-far median, too-far 90th percentile)} computed here from the visits."""
    zone = ZoneInfo("UTC")
    far: dict[tuple, int] = {}
    too_far: dict[tuple, list[float]] = {}
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
        key = tuple({"rep": v.rep_id, "outcome": v.outcome_id}[b] for b in by)
        far[key] = far.get(key, 0) + int(v.customer_distance_m is not None and v.customer_distance_m > far_m)
        too_far.setdefault(key, [])
        if v.verification_status == "resource_location_too_far" and v.customer_distance_m is not None:
            too_far[key].append(v.customer_distance_m)
    return {k: (far[k], nearest_rank(too_far[k], 0.5), nearest_rank(too_far[k], 0.9)) for k in far}


def random_scopes(rng: random.Random, n: int):
    days = [START.date() + timedelta(days=i) for i in range(150)]
    yield Scope()
    yield Scope(start=date(2025, 12, 1), end=date(2026, 1, 31))  # whole months only
    yield Scope(start=date(2025, 12, 10), end=date(2026, 1, 20))  # edges on both sides
    for _ in range(n):
        start, end = rng.choice([None, rng.choice(days)]), rng.choice([None, rng.choice(days)])
        if start and end and start > end:
            start, end = end, start
        yield Scope(
            start=start,
            end=end,
            reps=rng.choice([None, None, frozenset(rng.sample(REPS, 2))]),
            outcomes=rng.choice([None, None, frozenset(rng.sample(OUTCOMES, 2))]),
            statuses=rng.choice([None, None, frozenset({"verified"}), frozenset({"resource_location_too_far"})]),
            resource_type=rng.choice(["", "", "lead"]),
        )


def close(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    want = max(want, 1.0)  # the first bin holds every distance of 1 m or less, read as 1 m
    return abs(got - want) <= distance_tally.PRECISION * want + 1e-9


def assert_distances_right(*, seed: int, far_m: float = 1000.0) -> None:
    """The report rows' distances equal the Python computation for random scopes."""
    rng = random.Random(seed)
    measured = Visit.objects.live().filter(customer_distance_m__isnull=False).count()
    assert measured > 100, "the data set has too few distances to test anything"
    visits = list(Visit.objects.live())
    for scope in random_scopes(rng, 12):
        for by in (("rep",), ("outcome",), ("rep", "outcome")):
            got = analytics.counts_by(scope=scope, by=by, distances=True)
            want = expected(scope=scope, by=by, far_m=far_m, visits=visits)
            assert set(got) == set(want), (scope, by)
            for key, (far, median, p90) in want.items():
                counts = got[key]
                assert counts.far == far, (scope, by, key, "far visits")
                assert close(counts.too_far_median_m, median), (scope, by, key, counts.too_far_median_m, median)
                assert close(counts.too_far_p90_m, p90), (scope, by, key, counts.too_far_p90_m, p90)


def assert_tally_matches() -> None:
    """The distance tally the triggers kept equals one counted here (zero rows aside)."""
    want: dict[tuple, int] = {}
    for v in Visit.objects.live().filter(verification_status="resource_location_too_far"):
        if v.customer_distance_m is None:
            continue
        key = (
            v.local_day.replace(day=1), v.rep_id, v.outcome_id or 0, v.resource_type,
            distance_tally.metres_bin(v.customer_distance_m),
        )  # fmt: skip
        want[key] = want.get(key, 0) + 1
    got = {
        row[:-1]: row[-1]
        for row in DistanceTally.objects.values_list("month", "rep_id", "outcome_id", "resource_type", "bin", "visits")
        if row[-1]
    }
    assert got == want
    by_rep: dict[tuple, int] = {}
    for (_, rep_id, _, _, k), n in want.items():
        by_rep[(rep_id, k)] = by_rep.get((rep_id, k), 0) + n
    assert {r[:-1]: r[-1] for r in RepDistanceTally.objects.values_list("rep_id", "bin", "visits") if r[-1]} == by_rep
    by_outcome: dict[tuple, int] = {}
    for (_, _, outcome_id, _, k), n in want.items():
        by_outcome[(outcome_id, k)] = by_outcome.get((outcome_id, k), 0) + n
    stored = OutcomeDistanceTally.objects.values_list("outcome_id", "bin", "visits")
    assert {r[:-1]: r[-1] for r in stored if r[-1]} == by_outcome
    assert_tallies_match()


def assert_all_time_reads_right(*, seed: int) -> None:
    """Open ranges read through the all-time tallies give exactly what the month and year tallies
    give, and what counting the visits directly gives (the same bins ranked)."""
    rng = random.Random(seed)
    scopes = [Scope(), Scope(statuses=frozenset({"resource_location_too_far"}))]
    scopes += [
        Scope(
            reps=rng.choice([None, frozenset(rng.sample(REPS, 2))]),
            outcomes=rng.choice([None, frozenset(rng.sample(OUTCOMES, 2))]),
            resource_type=rng.choice(["", "lead"]),
        )
        for _ in range(6)
    ]
    for scope in scopes:
        for by in ((), ("rep",), ("outcome",), ("rep", "outcome")):
            through = analytics.counts_by(scope=scope, by=by, distances=True)
            with mock.patch.object(analytics, "_all_time", return_value=False):
                by_months = analytics.counts_by(scope=scope, by=by, distances=True)
            with mock.patch.object(analytics, "tallies_current", return_value=False):
                direct = analytics.counts_by(scope=scope, by=by, distances=True)
            assert through, (scope, by)
            assert through == by_months == direct, (scope, by)


@pytest.fixture
def measured(db):
    for rep_id in REPS:
        Rep.objects.create(id=rep_id, name=f"Rep {rep_id}")
    for outcome_id in OUTCOMES:
        Outcome.objects.create(id=outcome_id, name=f"Outcome {outcome_id}")
    rng = random.Random(5)
    with transaction.atomic():
        visits_upsert(rows=visit_rows(rng, range(1, 601)))
    assert not Visit.objects.filter(customer_distance_m__isnull=False).exists()  # ingestion measures nothing
    customers_refresh(everything=True)
    return rng


def test_bins_read_percentiles_within_their_precision():
    rng = random.Random(3)
    assert distance_tally.PRECISION < 0.02
    for _ in range(200):
        values = [math.exp(rng.uniform(0, math.log(2e7))) for _ in range(rng.randrange(1, 40))]
        bins: dict[int, int] = {}
        for v in values:
            bins[distance_tally.metres_bin(v)] = bins.get(distance_tally.metres_bin(v), 0) + 1
        for fraction in (0.5, 0.9):
            assert close(distance_tally.bins_percentile(bins, fraction), nearest_rank(values, fraction))
    assert distance_tally.bins_percentile({}, 0.5) is None
    assert distance_tally.metres_bin(0.0) == 0 and distance_tally.metres_bin(1000.0) == 180  # 10^3 an edge


@pytest.mark.slow
def test_report_distances_equal_direct_computation_after_every_kind_of_write(measured, settings):
    rng = measured
    assert tallies.tallies_current()
    assert_tally_matches()
    assert_distances_right(seed=1)
    assert_all_time_reads_right(seed=1)
    # Ingestion changes visits: statuses, reps, days; and deletes some in Sell.
    changed = visit_rows(rng, range(1, 601, 7), sequence=2)
    for visit_id in range(3, 601, 29):
        changed[visit_id] = {**changed.get(visit_id, visit_rows(rng, [visit_id], sequence=2)[visit_id])}
        changed[visit_id]["deleted_at"] = changed[visit_id]["visited_at"]
    with transaction.atomic():
        visits_upsert(rows=changed)
    assert_tally_matches()
    assert_distances_right(seed=2)
    assert_all_time_reads_right(seed=2)
    # The refresh measures the changed visits again (new positions, other customers' points).
    customers_refresh()
    assert_tally_matches()
    assert_distances_right(seed=3)
    assert_all_time_reads_right(seed=3)
    # Writes from elsewhere: distances moved across the threshold, a status, rows deleted.
    Visit.objects.filter(id__in=range(2, 601, 5)).update(customer_distance_m=999.5)
    Visit.objects.filter(id__in=range(4, 601, 11)).update(customer_distance_m=1000.5)
    Visit.objects.filter(id__in=range(6, 601, 13)).update(verification_status="resource_location_too_far")
    Visit.objects.filter(id__in=range(8, 601, 17)).update(customer_distance_m=None)
    Visit.objects.filter(id__in=range(9, 601, 19)).delete()
    Visit.objects.filter(id__in=range(10, 601, 3)).update(flagged=True)  # as flags.py marks them
    assert_tally_matches()
    assert_distances_right(seed=4)
    assert_all_time_reads_right(seed=4)
    tallies.tallies_rebuild()
    assert_tally_matches()
    assert_distances_right(seed=5)
    assert_all_time_reads_right(seed=5)


@pytest.mark.slow
def test_a_new_far_distance_counts_directly_until_the_tallies_are_rebuilt(measured, settings):
    settings.DISTANCE_FAR_KM = 0.5
    assert not tallies.tallies_current()  # the far counts are the old threshold's: not read
    assert_distances_right(seed=6, far_m=500.0)
    tallies.tallies_rebuild()
    assert tallies.tallies_current()
    assert_distances_right(seed=7, far_m=500.0)
    Visit.objects.filter(id__in=range(1, 601, 3)).update(customer_distance_m=500.25)  # the new triggers' threshold
    assert_distances_right(seed=8, far_m=500.0)
    settings.DISTANCE_FAR_KM = 1.0
    tallies.tallies_ensure()  # what migrate does after it
    assert tallies.tallies_current()
    assert_distances_right(seed=9)


def csv_rows(response) -> list[dict]:
    import csv
    import io

    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))


@pytest.mark.slow
def test_csvs_and_pages_show_the_distances(measured, client, cast):
    client.force_login(cast.manager)
    want = expected(scope=Scope(), by=("rep",), far_m=1000.0, visits=list(Visit.objects.live()))
    rows = csv_rows(client.get("/reports/reps.csv"))
    assert list(rows[0])[-5:] == ["too_far_median_m", "too_far_p90_m", "far_visits", "team", "manager_id"]
    for row in rows:
        far, median, p90 = want[(int(row["rep_id"]),)]
        assert int(row["far_visits"]) == far
        assert close(float(row["too_far_median_m"]), median) and close(float(row["too_far_p90_m"]), p90)
        assert row["too_far_median_m"] == str(round(float(row["too_far_median_m"])))  # whole metres
    by_outcome = expected(scope=Scope(), by=("outcome",), far_m=1000.0, visits=list(Visit.objects.live()))
    rows = csv_rows(client.get("/reports/outcomes.csv"))
    assert list(rows[0])[-3:] == ["too_far_median_m", "too_far_p90_m", "far_visits"]
    assert {(int(r["outcome_id"]) if r["outcome_id"] else None): int(r["far_visits"]) for r in rows} == {
        k[0]: v[0] for k, v in by_outcome.items()
    }
    cells = csv_rows(client.get("/reports/matrix.csv"))
    assert list(cells[0])[-3:] == ["too_far_median_m", "too_far_p90_m", "far_visits"]
    by_cell = expected(scope=Scope(), by=("rep", "outcome"), far_m=1000.0, visits=list(Visit.objects.live()))
    assert sum(int(c["far_visits"]) for c in cells) == sum(v[0] for v in by_cell.values())
    # Unknown: a status filter leaving out the too-far visits has no too-far distance, empty in the CSV.
    verified = csv_rows(client.get("/reports/reps.csv?status=verified"))
    assert all(r["too_far_median_m"] == "" and r["too_far_p90_m"] == "" for r in verified)
    assert any(int(r["far_visits"]) for r in verified)  # verified visits far from the customer
    for path in ("/reports/reps/", "/reports/outcomes/", "/reports/matrix/"):
        page = client.get(path).content.decode()
        assert "Too-far median" in page and "Far visits" in page and "within 2%" in page, path
        assert " km</td>" in page, path
    page = client.get("/reports/reps/?status=verified").content.decode()
    assert '<td class="num">–</td>' in page
    sorted_page = client.get("/reports/reps/?sort=-too_far_median_m")
    assert sorted_page.status_code == 200


@pytest.mark.slow
def test_the_rep_page_draws_a_histogram_of_its_distances(measured, client, cast):
    import html
    import re

    client.force_login(cast.manager)
    page = client.get("/reports/reps/1/").content.decode()
    bars = re.findall(r'<g class="bar" data-bin="([^"]+)" data-too-far="(\d+)" data-other="(\d+)">', page)
    assert [html.unescape(b[0]) for b in bars] == [
        "0-100 m", "100-250 m", "250-500 m", "0.5-1 km", "1-2 km", "2-5 km", "5-10 km", "10-50 km", ">50 km",
    ]  # fmt: skip
    edges = [100, 250, 500, 1000, 2000, 5000, 10_000, 50_000, math.inf]
    want = [[0, 0] for _ in edges]
    for v in Visit.objects.live().filter(rep_id=1, customer_distance_m__isnull=False):
        slot = next(i for i, edge in enumerate(edges) if v.customer_distance_m <= edge)
        want[slot][0 if v.verification_status == "resource_location_too_far" else 1] += 1
    assert [[int(b[1]), int(b[2])] for b in bars] == want
    assert sum(w[0] for w in want) and sum(w[1] for w in want)  # both kinds drawn
    assert 'class="bar-too-far"' in page and "style=" not in page.split('<svg class="chart histogram"')[1][:5000]
    Visit.objects.filter(rep_id=1).update(customer_distance_m=None)
    page = client.get("/reports/reps/1/").content.decode()
    assert "No visit here has a distance from its customer yet" in page and 'class="bar"' not in page

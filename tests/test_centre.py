"""The robust centre (geo/centre.py) and the distances it and the visits use (geo/distance.py),
against published values and the mean it must beat."""

import random
import statistics

import pytest

from visits.geo.centre import centre_median, centre_spread_m
from visits.geo.distance import metres_between


@pytest.mark.parametrize(
    ("a", "b", "published_m"),
    [
        ((48.8566, 2.3522), (51.5074, -0.1278), 343_500),  # Paris - London, about 343.5 km
        ((40.7128, -74.0060), (34.0522, -118.2437), 3_936_000),  # New York - Los Angeles, about 3,936 km
        ((41.49008, -71.312796), (41.499498, -81.695391), 538.39044536 * 1609.344),  # geopy's docs: Newport - Cleveland
        ((40.6, -73.8), (51.6, -0.5), 5_551_759.4),  # GeographicLib's docs: JFK - LHR
    ],
)
def test_distances_between_real_places_match_published_values(a, b, published_m):
    assert metres_between(a, b) == pytest.approx(published_m, rel=0.005)
    assert metres_between(b, a) == pytest.approx(published_m, rel=0.005)


def test_distance_is_geopy_geodesic_within_a_centimetre():
    from geopy.distance import geodesic

    rng = random.Random(5)
    for _ in range(300):
        a = (rng.uniform(-80, 80), rng.uniform(-180, 180))
        b = (a[0] + rng.uniform(-2, 2), a[1] + rng.uniform(-2, 2))
        b = (max(-90, min(90, b[0])), (b[1] + 180) % 360 - 180)
        assert abs(metres_between(a, b) - geodesic(a, b).m) < 0.01
    assert metres_between((0, 0), (0.5, 179.7)) == pytest.approx(geodesic((0, 0), (0.5, 179.7)).m, abs=0.01)


def around(centre, *, n, metres, rng):
    """n points scattered within `metres` of centre (roughly, in degrees)."""
    lat, lng = centre
    d = metres / 111_000
    return [(lat + rng.uniform(-d, d), lng + rng.uniform(-d, d)) for _ in range(n)]


def test_one_outlier_50_km_away_barely_moves_the_centre_but_moves_the_mean():
    rng = random.Random(1)
    truth = (40.7580, -73.9855)
    points = around(truth, n=9, metres=40, rng=rng)
    before = centre_median(points)
    outlier = (truth[0] + 50_000 / 111_000, truth[1])  # 50 km north
    after = centre_median([*points, outlier])
    mean = (statistics.fmean(p[0] for p in [*points, outlier]), statistics.fmean(p[1] for p in [*points, outlier]))
    assert metres_between(before, truth) < 30
    assert metres_between(after, before) < 15
    assert metres_between(mean, truth) > 4_000


def test_symmetric_points_give_their_centre():
    centre = (51.5, -0.12)
    d = 0.001
    points = [
        (centre[0] + d, centre[1]),
        (centre[0] - d, centre[1]),
        (centre[0], centre[1] + d),
        (centre[0], centre[1] - d),
    ]
    assert metres_between(centre_median(points), centre) < 0.5


def test_two_points_give_a_point_between_them_and_identical_points_themselves():
    a, b = (48.85, 2.35), (48.86, 2.36)
    centre = centre_median([a, b])
    assert metres_between(a, centre) + metres_between(centre, b) == pytest.approx(metres_between(a, b), abs=1)
    assert centre_median([a, a, a]) == pytest.approx(a, abs=1e-9)
    assert centre_median([a]) == pytest.approx(a, abs=1e-9)


def test_a_point_repeated_by_most_visits_is_the_centre():
    a = (34.05, -118.24)
    others = [(34.06, -118.25), (34.04, -118.20)]
    assert metres_between(centre_median([a, a, a, *others]), a) < 0.5


def test_points_across_the_antimeridian_give_a_centre_on_it():
    points = [(-17.0, 179.999), (-17.0, -179.999), (-17.001, 179.9995), (-16.999, -179.9995)]
    lat, lng = centre_median(points)
    assert lat == pytest.approx(-17.0, abs=1e-4)
    assert abs(abs(lng) - 180) < 1e-3
    assert centre_spread_m(points, (lat, lng)) < 200


def test_spread_is_the_median_distance_to_the_centre():
    centre = (40.0, -100.0)
    points = [centre, (40.001, -100.0), (40.002, -100.0), (40.5, -100.0)]
    want = statistics.median(metres_between(p, centre) for p in points)
    assert centre_spread_m(points, centre) == want
    assert 100 < want < 250

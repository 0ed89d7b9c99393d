"""Distances and coordinate checks, free of Django: the geodesic distance (WGS-84, as geopy
computes it) and a cheap upper bound of it, for the flag rules to skip the legs that cannot be
too fast."""

from __future__ import annotations

import math

from geographiclib.geodesic import Geodesic
from geopy.distance import ELLIPSOIDS

# geopy's own ellipsoid (in km) and engine: geopy.distance.geodesic(a, b).km is this Inverse's
# s12 after building two Points and a Distance around it, which took half the time
# (tests/test_flags.py checks the figures are the same, bit for bit).
_MAJOR_KM, _, _FLATTENING = ELLIPSOIDS["WGS-84"]
_WGS84 = Geodesic(_MAJOR_KM, _FLATTENING)

# The bound: the great circle on a sphere of the Earth's mean radius (IUGG), plus 1% and a
# millimetre. On WGS-84 the geodesic is at most about 0.45% longer than that circle (a short
# north-south leg near a pole, where the meridian's radius of curvature is 6,399.6 km), and
# shorter for long legs (half the meridian is 20,003.9 km, half the circle 20,015.1 km).
MEAN_RADIUS_KM = 6371.0088
BOUND_FACTOR = 1.01
BOUND_SLACK_KM = 1e-6
_KM_PER_DEGREE = math.pi / 180 * MEAN_RADIUS_KM


def km_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Geodesic distance in kilometres between two (latitude, longitude) points (WGS-84)."""
    if a == b:
        return 0.0
    # As geopy's Point does: a coordinate of -0.0 becomes 0.0 (and the sum below turns a -0.0
    # distance into 0.0, as geopy's Distance does).
    return 0.0 + _WGS84.Inverse(a[0] or 0.0, a[1] or 0.0, b[0] or 0.0, b[1] or 0.0, Geodesic.DISTANCE)["s12"]


def km_at_most_roughly(a: tuple[float, float], b: tuple[float, float]) -> float:
    """A distance never shorter than km_at_most(a, b), cheaper still: along a meridian to the
    other latitude, then along a parallel, taken as long as the equator's (|dlat| + |dlng|)."""
    dlng = abs(b[1] - a[1])
    degrees = abs(b[0] - a[0]) + (360 - dlng if dlng > 180 else dlng)
    return degrees * _KM_PER_DEGREE * BOUND_FACTOR + BOUND_SLACK_KM


def km_at_most(a: tuple[float, float], b: tuple[float, float]) -> float:
    """A distance never shorter than km_between(a, b), for a thirtieth of its cost (haversine)."""
    if a == b:
        return 0.0
    lat1, lat2 = math.radians(a[0]), math.radians(b[0])
    half_dlat = (lat2 - lat1) / 2
    half_dlng = math.radians(b[1] - a[1]) / 2
    h = math.sin(half_dlat) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(half_dlng) ** 2
    return 2 * MEAN_RADIUS_KM * math.asin(math.sqrt(min(h, 1.0))) * BOUND_FACTOR + BOUND_SLACK_KM


def is_null_island(latitude: float, longitude: float) -> bool:
    """0,0: what a phone sends when it has no fix, not a place anyone visits."""
    return latitude == 0 and longitude == 0


def spot(latitude: float, longitude: float) -> tuple[float, float]:
    """Coordinates to 5 decimals (about a metre): the same spot for coordinate reuse."""
    return round(latitude, 5), round(longitude, 5)

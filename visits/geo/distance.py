"""Distances and coordinate checks, free of Django: the geodesic distance (WGS-84, as geopy
computes it), cheap upper bounds of it for the flag rules to skip the legs that cannot be too
fast, and a close approximation with a known error for those whose findings it settles."""

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


# Vincenty's inverse formula on the same ellipsoid: within 0.03 mm of km_between over 200,000
# random legs of a metre to 3,000 km, for a tenth of the time. The rules allow it a centimetre.
NEAR_ERROR_KM = 1e-5
_MINOR_KM = _MAJOR_KM * (1 - _FLATTENING)
_NEAR_UP_TO_KM = 19_000  # beyond, nearly antipodal: Vincenty's iteration may not converge


def km_near(a: tuple[float, float], b: tuple[float, float]) -> float | None:
    """km_between(a, b) within NEAR_ERROR_KM (Vincenty's inverse formula), or None when the
    points are nearly antipodal and the iteration does not settle."""
    if a == b:
        return 0.0
    u1 = math.atan((1 - _FLATTENING) * math.tan(math.radians(a[0])))
    u2 = math.atan((1 - _FLATTENING) * math.tan(math.radians(b[0])))
    sin_u1, cos_u1, sin_u2, cos_u2 = math.sin(u1), math.cos(u1), math.sin(u2), math.cos(u2)
    dlng = math.radians(b[1] - a[1])
    lam = dlng
    for _ in range(100):
        sin_lam, cos_lam = math.sin(lam), math.cos(lam)
        sin_sigma = math.hypot(cos_u2 * sin_lam, cos_u1 * sin_u2 - sin_u1 * cos_u2 * cos_lam)
        if sin_sigma == 0:
            return 0.0
        cos_sigma = sin_u1 * sin_u2 + cos_u1 * cos_u2 * cos_lam
        sigma = math.atan2(sin_sigma, cos_sigma)
        sin_alpha = cos_u1 * cos_u2 * sin_lam / sin_sigma
        cos2_alpha = 1 - sin_alpha * sin_alpha
        cos_2sm = cos_sigma - 2 * sin_u1 * sin_u2 / cos2_alpha if cos2_alpha else 0.0
        c = _FLATTENING / 16 * cos2_alpha * (4 + _FLATTENING * (4 - 3 * cos2_alpha))
        previous = lam
        lam = dlng + (1 - c) * _FLATTENING * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (2 * cos_2sm * cos_2sm - 1))
        )
        if abs(lam - previous) < 1e-12:
            break
    else:
        return None
    u_sq = cos2_alpha * (_MAJOR_KM**2 - _MINOR_KM**2) / _MINOR_KM**2
    big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    delta_sigma = (
        big_b * sin_sigma * (cos_2sm + big_b / 4 * (cos_sigma * (2 * cos_2sm * cos_2sm - 1)
                             - big_b / 6 * cos_2sm * (4 * sin_sigma * sin_sigma - 3) * (4 * cos_2sm * cos_2sm - 3)))
    )  # fmt: skip
    km = _MINOR_KM * big_a * (sigma - delta_sigma)
    return km if km < _NEAR_UP_TO_KM else None


def is_null_island(latitude: float, longitude: float) -> bool:
    """0,0: what a phone sends when it has no fix, not a place anyone visits."""
    return latitude == 0 and longitude == 0


def spot(latitude: float, longitude: float) -> tuple[float, float]:
    """Coordinates to 5 decimals (about a metre): the same spot for coordinate reuse."""
    return round(latitude, 5), round(longitude, 5)


def metres_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Geodesic metres between two points: Vincenty's formula (within a centimetre of geopy's
    geodesic, for a tenth of its time: it runs once per visit), geopy's engine where it fails."""
    km = km_near(a, b)
    return (km_between(a, b) if km is None else km) * 1000


def distance_text(metres: float | None) -> str:
    """A distance as the pages say it: '250 m' under a kilometre, '3.2 km', '120 km' from 100 km;
    '–' when unknown."""
    if metres is None:
        return "–"
    if metres < 999.5:
        return f"{metres:,.0f} m"
    if metres < 99_950:
        return f"{metres / 1000:,.1f} km"
    return f"{metres / 1000:,.0f} km"

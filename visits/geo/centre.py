"""The robust centre of a few positions, free of Django: the geometric median (the point with the
least sum of distances to them, by Weiszfeld's iteration on a flat projection around them), which
one stray position barely moves, unlike the mean."""

from __future__ import annotations

import math
import statistics

from visits.geo.distance import MEAN_RADIUS_KM, metres_between

_METRES_PER_RADIAN = MEAN_RADIUS_KM * 1000
_TOLERANCE_M = 0.01  # stop once a step moves the centre less than a centimetre
_ITERATIONS = 200


def _wrap(longitude: float) -> float:
    """A longitude in [-180, 180)."""
    return (longitude + 180) % 360 - 180


def centre_median(points: list[tuple[float, float]]) -> tuple[float, float]:
    """The geometric median of (latitude, longitude) points. The points are projected to metres
    east and north of the first one (longitudes taken across the antimeridian the short way), which
    is flat enough for points a customer's visits spread over (a few km: well under a metre off)."""
    if not points:
        raise ValueError("the centre of no points")
    lat0, lng0 = points[0]
    scale = math.cos(math.radians(lat0))
    xy = [(math.radians(_wrap(lng - lng0)) * scale, math.radians(lat - lat0)) for lat, lng in points]
    xy = [(x * _METRES_PER_RADIAN, y * _METRES_PER_RADIAN) for x, y in xy]
    # Start from the median of each axis: already robust, so few iterations follow.
    x, y = statistics.median(p[0] for p in xy), statistics.median(p[1] for p in xy)
    for _ in range(_ITERATIONS):
        sum_x = sum_y = sum_w = 0.0
        at_point = 0
        for px, py in xy:
            d = math.hypot(px - x, py - y)
            if d < 1e-9:  # the estimate sits on this point: Weiszfeld's weight is infinite there
                at_point += 1
                continue
            sum_x, sum_y, sum_w = sum_x + px / d, sum_y + py / d, sum_w + 1 / d
        if sum_w == 0:  # every point is here
            break
        new_x, new_y = sum_x / sum_w, sum_y / sum_w
        if at_point:
            # Vardi and Zhang's step: a point under the estimate pulls it as much as the rest's
            # resultant allows; when it outweighs them the estimate stays on it (the median).
            rx, ry = new_x - x, new_y - y
            r = math.hypot(rx, ry) * sum_w
            if r <= at_point:
                break
            share = at_point / r
            new_x, new_y = (1 - share) * new_x + share * x, (1 - share) * new_y + share * y
        step = math.hypot(new_x - x, new_y - y)
        x, y = new_x, new_y
        if step < _TOLERANCE_M:
            break
    latitude = lat0 + math.degrees(y / _METRES_PER_RADIAN)
    longitude = lng0 + math.degrees(x / _METRES_PER_RADIAN / scale) if scale > 1e-12 else lng0
    return max(-90.0, min(90.0, latitude)), _wrap(longitude)


def centre_spread_m(points: list[tuple[float, float]], centre: tuple[float, float]) -> float:
    """The median geodesic distance of the points to the centre, in metres."""
    return statistics.median(metres_between(point, centre) for point in points)

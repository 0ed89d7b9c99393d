"""Distances and coordinate checks (geopy), free of Django."""

from __future__ import annotations

from geopy.distance import geodesic


def km_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Geodesic distance in kilometres between two (latitude, longitude) points (WGS-84)."""
    if a == b:
        return 0.0
    return geodesic(a, b).km


def is_null_island(latitude: float, longitude: float) -> bool:
    """0,0: what a phone sends when it has no fix, not a place anyone visits."""
    return latitude == 0 and longitude == 0


def spot(latitude: float, longitude: float) -> tuple[float, float]:
    """Coordinates to 5 decimals (about a metre): the same spot for coordinate reuse."""
    return round(latitude, 5), round(longitude, 5)

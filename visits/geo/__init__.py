"""Places and distances (geopy)."""

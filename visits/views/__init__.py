"""Thin function views by page group; each gets its visits through `visits.access`."""

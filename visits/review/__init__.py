"""Checking visits: the flag rules (pure functions), stored flags, the review queue and its
append-only decisions.
"""

"""Tiers: the backends that answer requests."""

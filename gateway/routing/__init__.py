"""Routing: which tier answers a request, and why."""

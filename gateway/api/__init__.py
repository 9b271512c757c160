"""The HTTP API surface."""

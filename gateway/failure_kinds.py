"""`failure_kind`: the metric label for why a tier failed (the same words for every tier, local, upstream or named)."""

from __future__ import annotations

from gateway.errors import GatewayError, RateLimited, TierUnavailable, UpstreamStatusError

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
HTTP_KINDS = frozenset({"connect", "timeout", "auth", "status_4xx", "status_5xx", "protocol"})
"""The kinds of an HTTP tier's failure (`upstream_errors_total` counts the upstream's)."""
IN_PROCESS_KINDS = frozenset({"queue_full", "context_too_long"})
"""The kinds of an in-process tier's refusal (`local_rejected_total` counts the local tier's)."""


def failure_kind(exc: GatewayError) -> str | None:
    """`connect|timeout|auth|protocol` (unreachable HTTP tier), `status_4xx|status_5xx` (an HTTP tier's error
    status, a 429 included), `queue_full` (an in-process tier's slots and queue are full), `context_too_long`;
    None for anything else."""
    if isinstance(exc, TierUnavailable):
        return exc.kind
    if isinstance(exc, UpstreamStatusError):
        return "status_5xx" if exc.status_code >= 500 else "status_4xx"
    if isinstance(exc, RateLimited):
        return "queue_full"
    if exc.code == CONTEXT_LENGTH_EXCEEDED:
        return "context_too_long"
    return None

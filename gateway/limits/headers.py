"""The `x-ratelimit-*` and `retry-after` headers, as OpenAI sends them."""

from __future__ import annotations

import math

from gateway.limits.store import ScopeUsage, Scope

LIMIT_REQUESTS = "x-ratelimit-limit-requests"
REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
RESET_REQUESTS = "x-ratelimit-reset-requests"
LIMIT_TOKENS = "x-ratelimit-limit-tokens"
REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
RESET_TOKENS = "x-ratelimit-reset-tokens"
RETRY_AFTER = "retry-after"


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_headers(scopes: list[Scope], usage: list[ScopeUsage], reset_seconds: float) -> dict[str, str]:
    """Request and token headers of the tightest scope of each (the one with the fewest left); none without caps."""
    headers: dict[str, str] = {}
    best_r: tuple[int, int] | None = None
    best_t: tuple[int, int] | None = None
    for scope, used in zip(scopes, usage):
        rpm, tpm = scope.limits.rpm, scope.limits.tpm
        if rpm is not None and (best_r is None or rpm - used.requests < best_r[1]):
            best_r = (rpm, max(0, rpm - used.requests))
        if tpm is not None and (best_t is None or tpm - used.tokens < best_t[1]):
            best_t = (tpm, max(0, tpm - used.tokens))
    reset = duration(reset_seconds)
    if best_r is not None:
        headers[LIMIT_REQUESTS], headers[REMAINING_REQUESTS], headers[RESET_REQUESTS] = str(best_r[0]), str(best_r[1]), reset
    if best_t is not None:
        headers[LIMIT_TOKENS], headers[REMAINING_TOKENS], headers[RESET_TOKENS] = str(best_t[0]), str(best_t[1]), reset
    return headers

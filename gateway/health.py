"""Readiness: can this gateway serve traffic now? Per-tier status and the cache backend's, for `GET /readyz`.

Ready means at least one tier can answer: the local model (or a named in-process tier, `slm_tiers`) is loaded,
or the upstream (or a named remote tier) answers. Tiers are listed as `/v1/models` lists them: `local`, the named
tiers in config order, `upstream`. `/readyz` is unauthenticated and probed often, so a remote check (`GET
/models` with that tier's key) is cached for `ttl_seconds` and shared by concurrent probes: N probes within a TTL
cost one request to each remote tier. The cache backend is reported but never makes the gateway unready
(requests are answered without the cache).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec

from gateway.tiers.base import Backend

DEFAULT_TTL_SECONDS = 5.0
SERVING = frozenset({"ready", "reachable"})


class Readiness(msgspec.Struct):
    """The `/readyz` body."""

    status: str
    tiers: dict[str, str]
    cache: dict[str, str]


class CachedCheck:
    """An async check whose result is reused for `ttl` seconds; concurrent callers share one run."""

    def __init__(self, check: Callable[[], Awaitable[str]], ttl: float, clock: Callable[[], float] = time.monotonic):
        self._check = check
        self._ttl = ttl
        self._clock = clock
        self._value: str | None = None
        self._expires = 0.0
        self._running: asyncio.Future[str] | None = None

    async def __call__(self) -> str:
        if self._value is not None and self._clock() < self._expires:
            return self._value
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._running)  # a probe that gives up does not cancel the others' check

    async def _run(self) -> str:
        try:
            value = await self._check()
        finally:
            self._running = None
        self._value, self._expires = value, self._clock() + self._ttl
        return value


class HealthCheck:
    """Per-tier and cache-backend status of one gateway (see the module docstring)."""

    def __init__(
        self,
        local: Backend | None,
        upstream: Backend | None,
        cache_store: object | None,
        *,
        slm: Mapping[str, Backend] | None = None,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._local = local
        self._slm = {name: _tier_check(backend, ttl_seconds, clock) for name, backend in (slm or {}).items()}
        self._upstream = None if upstream is None else CachedCheck(_probe_of(upstream), ttl_seconds, clock)
        self._store = cache_store
        self._cache_backend = "redis" if getattr(cache_store, "shared", False) else "memory"
        ping = getattr(cache_store, "ping", None)
        self._ping = None if ping is None else CachedCheck(_ping_of(ping), ttl_seconds, clock)

    async def check(self) -> tuple[bool, bytes]:
        """(ready, JSON body)."""
        tiers: dict[str, str] = {}
        if self._local is not None:
            tiers["local"] = "ready" if await self._local.ready() else "loading"
        if self._slm:  # remote tiers are probed at once, not one after the other
            tiers.update(zip(self._slm, await asyncio.gather(*(check() for check in self._slm.values()))))
        tiers["upstream"] = "not configured" if self._upstream is None else await self._upstream()
        cache = {"backend": self._cache_backend, "status": await self._cache_status()}
        ready = any(state in SERVING for state in tiers.values())
        return ready, msgspec.json.encode(Readiness("ready" if ready else "not ready", tiers, cache))


    async def _cache_status(self) -> str:
        """"up" or "down": the store's latest state (traffic updates it), with a ping at most every TTL."""
        if self._ping is None:
            return "up"
        pinged = await self._ping()
        up = getattr(self._store, "up", None)
        return pinged if up is None else ("up" if up else "down")


def _probe_of(backend: Backend) -> Callable[[], Awaitable[str]]:
    """The backend's own `probe()` (reachable | unreachable | auth_failed) if it has one, else its `ready()`."""
    probe = getattr(backend, "probe", None)
    if probe is not None:
        return probe

    async def from_ready() -> str:
        return "reachable" if await backend.ready() else "unreachable"

    return from_ready


def _tier_check(backend: Backend, ttl: float, clock: Callable[[], float]) -> Callable[[], Awaitable[str]]:
    """A named tier's check: a remote one's cached `probe()`; an in-process one's "ready" or "loading"."""
    if getattr(backend, "probe", None) is not None:
        return CachedCheck(_probe_of(backend), ttl, clock)

    async def loaded() -> str:
        return "ready" if await backend.ready() else "loading"

    return loaded


def _ping_of(ping: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[str]]:
    async def status() -> str:
        return "up" if await ping() else "down"

    return status


def build_health(
    local: Backend | None,
    upstream: Backend | None,
    cache_store: object | None,
    backend_up: object,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    *,
    slm: Mapping[str, Backend] | None = None,
) -> HealthCheck:
    """The readiness component (`slm`: the named tiers); wires the cache store's state changes to the `backend_up`
    gauge."""
    if cache_store is not None and hasattr(cache_store, "on_state"):
        cache_store.on_state = lambda up: backend_up.set(1 if up else 0)  # type: ignore[attr-defined]
    else:
        backend_up.set(1)  # type: ignore[attr-defined]
    return HealthCheck(local, upstream, cache_store, slm=slm, ttl_seconds=ttl_seconds)

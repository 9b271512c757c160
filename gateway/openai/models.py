"""`GET /v1/models` and `GET /v1/models/{id}`: every tier's model and aliases, plus the upstream's own list.

The upstream's list is fetched on first use and kept for `ttl` seconds; a stale list is refreshed in the
background while the old one is served, and an upstream that fails (down, 4xx/5xx, not JSON) only leaves the
gateway's own models in the listing (the last good list is kept and retried after `retry_after` seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

OWNER = "slm-gateway"
Fetch = Callable[[], Awaitable[bytes | None]]
"""Fetches the upstream's `/models` body; None when it failed."""


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = OWNER


class _Listing(msgspec.Struct):
    object: str = "list"
    data: list[dict[str, Any]] = msgspec.field(default_factory=list)


class ModelCatalog:
    """The gateway's model ids (`own`) merged with the upstream's list (fetched with `fetch`, if any)."""

    def __init__(
        self,
        own: list[str],
        fetch: Fetch | None = None,
        *,
        ttl: float = 300.0,
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        created = int(time.time())
        self._own = [msgspec.to_builtins(ModelCard(mid, created=created)) for mid in dict.fromkeys(own)]
        self._fetch = fetch
        self._ttl = ttl
        self._retry_after = retry_after
        self._clock = clock
        self._upstream: list[dict[str, Any]] = []
        self._next_refresh = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._body: bytes | None = None

    @property
    def own_ids(self) -> list[str]:
        return [card["id"] for card in self._own]

    async def _refresh(self) -> None:
        assert self._fetch is not None
        body = await self._fetch()
        models = _parse_list(body) if body is not None else None
        if models is None:
            self._next_refresh = self._clock() + self._retry_after
            return
        self._upstream = models
        self._body = None
        self._next_refresh = self._clock() + self._ttl

    async def _current(self) -> None:
        if self._fetch is None or self._clock() < self._next_refresh:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        if not self._upstream:  # nothing to serve yet: wait for the first fetch
            await asyncio.shield(self._refreshing)

    def _merged(self) -> list[dict[str, Any]]:
        own = {card["id"] for card in self._own}
        return self._own + [m for m in self._upstream if m.get("id") not in own]

    async def listing(self) -> bytes:
        """The `/v1/models` body."""
        await self._current()
        if self._body is None:
            self._body = msgspec.json.encode(_Listing(data=self._merged()))
        return self._body

    async def find(self, model_id: str) -> dict[str, Any] | None:
        """The model object for `model_id`, or None when neither the gateway nor the upstream lists it."""
        await self._current()
        return next((m for m in self._merged() if m.get("id") == model_id), None)


def _parse_list(body: bytes) -> list[dict[str, Any]] | None:
    try:
        parsed = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, list):
        return None
    return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

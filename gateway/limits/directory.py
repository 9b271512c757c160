"""`KeyDirectory`: this replica's copy of the key store, refreshed in the background (a version check a tick).

Looking a key up is a sha256 and a dict lookup, so the request path never waits on Redis for it. A key created,
changed or revoked anywhere is seen here within `refresh_seconds` (plus one Redis round trip). While Redis is
down the last keys loaded keep working (counted as `refresh/stale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from gateway.limits.metrics import LimitMetrics
from gateway.limits.records import KeyRecord, Limits, hash_key
from gateway.limits.store import LimitStore, Scope, StoreUnavailable

log = logging.getLogger("slm_gateway.limits")


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The caller's key: `Authorization: Bearer`, else `x-api-key`, else `api-key` (as `gateway.auth` reads it)."""
    given = headers.get("authorization")
    if given:
        return given[7:].strip() if given[:7].lower() == "bearer " else None
    return headers.get("x-api-key") or headers.get("api-key") or None


class KeyDirectory:
    """Keys by hash and team caps, as last loaded from `store`."""

    def __init__(
        self,
        store: LimitStore,
        metrics: LimitMetrics | None = None,
        *,
        refresh_seconds: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._by_hash: dict[str, KeyRecord] = {}
        self._teams: dict[str, Limits] = {}
        self._scopes: dict[str, list[Scope]] = {}
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stale = False

    async def start(self) -> None:
        await self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="limits-key-refresh")

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def refresh(self) -> bool:
        """Reload keys and teams if the store's version changed; False when the store could not be read."""
        try:
            version = await self.store.version()
            if version != self._version:
                keys, teams = await self.store.keys(), await self.store.teams()
                self._by_hash = {k.sha256: k for k in keys}
                self._teams = teams
                self._scopes = {k.id: scopes_of(k, teams.get(k.team)) for k in keys}
                self._version = version
        except StoreUnavailable as exc:
            if not self._stale:
                log.warning("limits: cannot read the key store (%s); serving with the keys loaded last", exc)
            self._stale = True
            if self.metrics is not None:
                self.metrics.store_errors.labels("refresh", "stale").inc()
            return False
        if self._stale:
            log.info("limits: the key store is readable again")
        self._stale = False
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.refresh()

    def find(self, key: str) -> KeyRecord | None:
        """The usable (not revoked, not expired) record of `key`, else None."""
        record = self._by_hash.get(hash_key(key))
        if record is None or not record.usable(self.clock()):
            return None
        return record

    def of_headers(self, headers: Mapping[str, str]) -> KeyRecord | None:
        key = bearer_key(headers)
        return self.find(key) if key else None

    def team_limits(self, team: str) -> Limits | None:
        return self._teams.get(team)

    def scopes(self, record: KeyRecord) -> list[Scope]:
        """The caps a request of `record` counts against (computed when the keys were loaded)."""
        found = self._scopes.get(record.id)
        return found if found is not None else scopes_of(record, self._teams.get(record.team))


def scopes_of(record: KeyRecord, team: Limits | None) -> list[Scope]:
    """The key's caps and its team's, each only when it has any."""
    out = []
    if record.limits.any():
        out.append(Scope(f"k:{record.id}", record.limits))
    if team is not None and team.any():
        out.append(Scope(f"t:{record.team}", team))
    return out

"""`ResponseCache`: entries by key over a store, with collapsing of identical misses and error accounting.

Nothing here raises because of the store: a failed read is a miss, a failed write is a skipped write, a failed
lock means "compute it yourself". Every failure is counted in `cache_errors{operation}`.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import msgspec

from gateway.cache.collapse import Flights
from gateway.cache.entry import CacheEntry, EntryDecodeError, decode_entry, encode_entry
from gateway.cache.keys import lock_key
from gateway.cache.store import CacheStore, StoreError
from gateway.metrics import GatewayMetrics

POLL_FIRST = 0.005
POLL_MAX = 0.05


class Lead(msgspec.Struct):
    """The right (and duty) to compute the entry for `key`: finish it with `ResponseCache.finish/abandon`."""

    key: str
    future: asyncio.Future  # type: ignore[type-arg]
    token: str | None
    store: bool
    done: bool = False


class ResponseCache:
    """Get, put and collapse cache entries over one `CacheStore`."""

    def __init__(
        self,
        store: CacheStore,
        metrics: GatewayMetrics,
        *,
        ttl_seconds: float,
        max_entry_bytes: int,
        lock_timeout_seconds: float,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.max_entry_bytes = max_entry_bytes
        self.lock_timeout = lock_timeout_seconds
        self._flights: Flights[CacheEntry] = Flights()
        self._background: set[asyncio.Task[None]] = set()
        self._lookups = {r: metrics.cache_lookups.labels(r) for r in ("hit", "miss", "bypass")}

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.close()

    # -- counting -------------------------------------------------------------------------------------------
    def count_lookup(self, result: str) -> None:
        """Count one lookup as hit, miss or bypass."""
        self._lookups[result].inc()

    def _error(self, operation: str) -> None:
        self.metrics.cache_errors.labels(operation).inc()

    def _decode(self, data: bytes) -> CacheEntry | None:
        try:
            return decode_entry(data)
        except EntryDecodeError:
            self._error("decode")
            return None

    # -- entries --------------------------------------------------------------------------------------------
    async def get(self, key: str) -> CacheEntry | None:
        """The entry at `key`; None when absent, undecodable or the store failed."""
        try:
            data = await self.store.get(key)
        except StoreError as exc:
            self._error(exc.operation)
            return None
        return None if data is None else self._decode(data)

    async def put(self, key: str, entry: CacheEntry) -> bool:
        """Store `entry` (one atomic SET with a TTL) unless it is larger than `max_entry_bytes`."""
        data = encode_entry(entry)
        if len(data) > self.max_entry_bytes:
            return False
        try:
            await self.store.set(key, data, self.ttl_ms)
        except StoreError as exc:
            self._error(exc.operation)
            return False
        return True

    # -- collapsing -----------------------------------------------------------------------------------------
    async def lead_or_wait(self, key: str, *, store: bool = True) -> CacheEntry | Lead | None:
        """After a miss: the entry another request computed meanwhile, or a `Lead` to compute it, or None.

        In-process, followers await the leader's future; across replicas the leader holds `SET NX PX` on the
        lock key and the others poll for the entry. Both waits end after `lock_timeout_seconds`; None then
        means "compute it on your own".
        """
        future = self._flights.take_off(key)
        if future is None:
            return await self._flights.wait(key, self.lock_timeout)
        lead = Lead(key=key, future=future, token=None, store=store)
        if not self.store.shared:
            return lead
        token = secrets.token_hex(8)
        try:
            taken = await self.store.try_lock(lock_key(key), token, int(self.lock_timeout * 1000))
        except StoreError as exc:
            self._error(exc.operation)
            return lead
        if taken:
            lead.token = token
            return lead
        entry = await self._await_remote(key)
        if entry is not None:
            lead.done = True
            self._flights.land(key, future, entry)
            return entry
        return lead

    async def _await_remote(self, key: str) -> CacheEntry | None:
        """Poll for the entry another replica is computing, until it appears, its lock goes, or time is up."""
        deadline = time.monotonic() + self.lock_timeout
        lock = lock_key(key)
        delay = POLL_FIRST
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
            try:
                data, held = await self.store.peek(key, lock)
            except StoreError as exc:
                self._error(exc.operation)
                return None
            if data is not None:
                return self._decode(data)
            if not held:
                return None
        return None

    async def finish(self, lead: Lead, entry: CacheEntry | None) -> bool:
        """Store the leader's entry (when there is one and storing is allowed), wake followers, drop the lock;
        whether the entry was stored."""
        if lead.done:
            return False
        lead.done = True
        stored = False
        try:
            if entry is not None and lead.store:
                stored = await self.put(lead.key, entry)
            return stored
        finally:
            # Followers asked the identical question: they get the answer even when it was too large to store.
            self._flights.land(lead.key, lead.future, entry)
            if lead.token is not None:
                self._unlock_soon(lead.key, lead.token)

    def store_only(self, key: str) -> Lead:
        """A lead that only stores (the client skipped the lookup with no-cache): no collapse, no lock."""
        future: asyncio.Future[CacheEntry | None] = asyncio.get_running_loop().create_future()
        return Lead(key=key, future=future, token=None, store=True)

    def abandon(self, lead: Lead) -> None:
        """The leader produced nothing (error, interrupted stream): wake followers now, unlock in the background."""
        if lead.done:
            return
        lead.done = True
        self._flights.land(lead.key, lead.future, None)
        if lead.token is not None:
            self._unlock_soon(lead.key, lead.token)

    def _unlock_soon(self, key: str, token: str) -> None:
        """Release the cross-replica lock without making the caller wait for Redis."""
        task = asyncio.get_running_loop().create_task(self._unlock(key, token))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _unlock(self, key: str, token: str) -> None:
        try:
            await self.store.unlock(lock_key(key), token)
        except StoreError as exc:
            self._error(exc.operation)

"""The embedded store: an in-process LRU with per-entry TTL, used when no Redis URL is configured."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryStore:
    """At most `max_entries` entries, least recently used evicted first; expired entries read as absent.

    Locks are per process too: with one process the in-process collapse already makes every request after the
    first wait, so `try_lock` only guards against a second leader within this process.
    """

    shared = False

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max(1, max_entries)
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._locks: dict[str, tuple[float, str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._locks.clear()

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._entries[key] = (self._clock() + ttl_ms / 1000.0, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        now = self._clock()
        held = self._locks.get(key)
        if held is not None and held[0] > now:
            return False
        self._locks[key] = (now + ttl_ms / 1000.0, token)
        return True

    async def unlock(self, key: str, token: str) -> None:
        held = self._locks.get(key)
        if held is not None and held[1] == token:
            del self._locks[key]

    async def peek(self, key: str, lock: str) -> tuple[bytes | None, bool]:
        held = self._locks.get(lock)
        return await self.get(key), held is not None and held[0] > self._clock()

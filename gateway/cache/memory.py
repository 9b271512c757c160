"""The embedded store: an in-process LRU with per-entry TTL, used when no Redis URL is configured."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class MemoryStore:
    """At most `max_entries` entries holding at most `max_bytes` (key and value lengths), least recently used
    evicted first; a value larger than `max_bytes` is not stored. Expired entries read as absent.

    Locks are per process too: with one process the in-process collapse already makes every request after the
    first wait, so `try_lock` only guards against a second leader within this process.
    """

    shared = False

    def __init__(
        self, max_entries: int, clock: Callable[[], float] = time.monotonic, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.max_entries = max(1, max_entries)
        self.max_bytes = max(1, max_bytes)
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._locks: dict[str, tuple[float, str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        """The bytes the entries hold (keys and values)."""
        return self._bytes

    def _drop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None:
            self._bytes -= len(key) + len(item[1])

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._locks.clear()

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._drop(key)
        size = len(key) + len(value)
        if size > self.max_bytes:
            return
        self._entries[key] = (self._clock() + ttl_ms / 1000.0, value)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest, (_, old) = self._entries.popitem(last=False)
            self._bytes -= len(oldest) + len(old)

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

    async def purge_prefix(self, prefix: str) -> int:
        """Drop every entry and lock whose key starts with `prefix`; how many entries went."""
        doomed = [key for key in self._entries if key.startswith(prefix)]
        for key in doomed:
            self._drop(key)
        for key in [k for k in self._locks if k.startswith(prefix)]:
            del self._locks[key]
        return len(doomed)

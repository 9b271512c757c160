"""`RecentEntries`: the entries semantic hits read lately, kept in-process for a short while.

A semantic hit reads its entry from the exact store: on Redis one more round trip than an exact hit, ~0.3 ms of
the gateway's CPU on this machine (redis-py's layers and the socket's system calls; py-spy, bench/cache.py). A
popular answer is hit again and again, so the bytes read are reused for `reuse_seconds` (the gateway: the
Redis index's `cache.semantic.sync_interval_seconds`, 0.1 s) before the store is asked again.

Freshness bound, the same as the Redis index's mirror: an entry removed elsewhere (another replica's tenant
purge, its TTL running out) may still be served here for up to `reuse_seconds` after this replica last read it;
a purge through this replica clears everything at once. Nothing is ever written back and no TTL is touched.
Bounded: at most `max_entries` values of at most `max_value_bytes` each (larger ones are always read).
"""

from __future__ import annotations

from collections import OrderedDict


class RecentEntries:
    """Entry bytes by exact-cache key, each usable until `reuse_seconds` after it was read."""

    __slots__ = ("reuse_seconds", "max_entries", "max_value_bytes", "_values")

    def __init__(self, reuse_seconds: float, *, max_entries: int = 512, max_value_bytes: int = 32_768) -> None:
        self.reuse_seconds = reuse_seconds
        self.max_entries = max_entries
        self.max_value_bytes = max_value_bytes
        self._values: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str, now: float) -> bytes | None:
        """The value read for `key` less than `reuse_seconds` before `now`, else None."""
        found = self._values.get(key)
        if found is None:
            return None
        if now >= found[1]:
            del self._values[key]
            return None
        return found[0]

    def put(self, key: str, value: bytes, now: float) -> None:
        """Remember `value`, just read from the store at `now` (not when reuse is off, or it is too large)."""
        if self.reuse_seconds <= 0 or len(value) > self.max_value_bytes:
            return
        self._values[key] = (value, now + self.reuse_seconds)
        self._values.move_to_end(key)
        while len(self._values) > self.max_entries:
            self._values.popitem(last=False)

    def clear(self) -> None:
        self._values.clear()

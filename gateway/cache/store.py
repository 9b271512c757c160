"""The storage protocol the response cache runs on: Redis (shared by replicas) or an in-process LRU."""

from __future__ import annotations

from typing import Protocol


class StoreError(Exception):
    """The store failed (down, slow, refused); `operation` names what was being done (get|set|lock|connect)."""

    def __init__(self, operation: str, detail: str = "") -> None:
        super().__init__(f"cache store {operation} failed: {detail}" if detail else f"cache store {operation} failed")
        self.operation = operation


class CacheStore(Protocol):
    """Bytes by key with a TTL, plus a short-lived lock per key. Every method raises only StoreError."""

    shared: bool
    """True when other replicas see the same entries and locks (Redis); False for the in-process store."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None: ...

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        """Take the lock `key` for `ttl_ms` unless someone holds it."""
        ...

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock `key` if `token` still holds it."""
        ...

    async def peek(self, key: str, lock: str) -> tuple[bytes | None, bool]:
        """The entry at `key` and whether the lock `lock` is held, in one round trip."""
        ...

    async def purge_prefix(self, prefix: str) -> int:
        """Remove every key starting with `prefix` (a tenant's namespace); how many were removed."""
        ...

"""Per-tenant purge on Redis: every key of a tenant's namespace (exact entries, their locks, semantic scopes).

Keys are found with `SCAN MATCH {prefix}:{tenant namespace}:*` (non-blocking, in batches) and removed with
`UNLINK`. A tenant subdivided by `cache.tenant_header` (`key/sub`) has namespaces of its own: purge those by
their full tenant string. The in-process store and index belong to one gateway process and are purged there.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.cache.keys import tenant_namespace
from gateway.cache.store import StoreError

BATCH = 500


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


async def purge_keys(redis: Redis, key_prefix: str) -> int:
    """UNLINK every key starting with `key_prefix`; how many were removed."""
    removed = 0
    try:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=_glob_escape(key_prefix) + "*", count=BATCH):
            batch.append(key)
            if len(batch) >= BATCH:
                removed += await redis.unlink(*batch)
                batch = []
        if batch:
            removed += await redis.unlink(*batch)
    except (RedisError, OSError) as exc:
        raise StoreError("purge", f"{type(exc).__name__}: {exc}") from None
    return removed


async def purge_tenant(redis: Redis, prefix: str, tenant: str) -> int:
    """Remove every cached entry, lock and semantic scope of `tenant` under the cache key `prefix`."""
    return await purge_keys(redis, f"{prefix}:{tenant_namespace(tenant)}:")

"""The response cache: exact-match answers per tenant, in Redis (shared by replicas) or an in-process LRU.

`build_cache_layer` turns `CacheSettings` into the `CacheLayer` that `gateway.build.build_gateway` puts in front
of the dispatcher.
"""

from __future__ import annotations

from gateway.cache.flow import CacheLayer
from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import RedisStore
from gateway.cache.service import ResponseCache
from gateway.cache.store import CacheStore
from gateway.dispatch import Handler
from gateway.metrics import GatewayMetrics
from gateway.settings import CacheSettings

__all__ = ["CacheLayer", "ResponseCache", "build_cache_layer", "build_store"]


def build_store(settings: CacheSettings) -> CacheStore:
    """Redis when `redis_url` is set, else the in-process LRU."""
    if settings.redis_url:
        return RedisStore(settings.redis_url, timeout_seconds=settings.timeout_seconds)
    return MemoryStore(settings.max_memory_entries, max_bytes=settings.max_memory_bytes)


def build_cache_layer(settings: CacheSettings, inner: Handler, metrics: GatewayMetrics) -> CacheLayer:
    """The cache layer for `settings` (it answers `x-gateway-cache: bypass` to everything when disabled)."""
    cache = ResponseCache(
        build_store(settings),
        metrics,
        ttl_seconds=settings.ttl_seconds,
        max_entry_bytes=settings.max_entry_bytes,
        lock_timeout_seconds=settings.lock_timeout_seconds,
    )
    return CacheLayer(
        inner,
        cache,
        key_prefix=settings.key_prefix,
        enabled=settings.enabled,
        tenant_header=settings.tenant_header,
        cache_nondeterministic=settings.cache_nondeterministic,
    )

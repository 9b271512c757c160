"""The response cache: exact-match answers per tenant, in Redis (shared by replicas) or an in-process LRU.

`build_cache_layer` turns `CacheSettings` into the `CacheLayer` that `gateway.build.build_gateway` puts in front
of the dispatcher.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from gateway.cache.flow import CacheLayer
from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import RedisStore
from gateway.cache.service import ResponseCache
from gateway.cache.store import CacheStore
from gateway.dispatch import Handler
from gateway.metrics import GatewayMetrics
from gateway.settings import CacheSettings

if TYPE_CHECKING:
    from gateway.cache.semantic.layer import SemanticLayer
    from gateway.embedding.base import Embedder

__all__ = ["CacheLayer", "ResponseCache", "build_cache_layer", "build_semantic_layer", "build_store"]


def build_store(settings: CacheSettings) -> CacheStore:
    """Redis when `redis_url` is set, else the in-process LRU."""
    if settings.redis_url:
        return RedisStore(settings.redis_url, timeout_seconds=settings.timeout_seconds)
    return MemoryStore(settings.max_memory_entries, max_bytes=settings.max_memory_bytes)


def build_semantic_layer(
    settings: CacheSettings, inner: Handler, store: CacheStore, metrics: GatewayMetrics, embedder: Embedder
) -> SemanticLayer:
    """The semantic layer over `inner`: its index next to the exact store (Redis, else in-process), the
    embedder's calibrated threshold (or `cache.semantic.threshold`), its metrics on the gateway's registry."""
    from gateway.cache.semantic.cache import SemanticCache, SemanticSettings
    from gateway.cache.semantic.calibrate import shipped_threshold
    from gateway.cache.semantic.index import MemoryVectorIndex, VectorIndex
    from gateway.cache.semantic.layer import SemanticLayer
    from gateway.cache.semantic.metrics import SemanticMetrics
    from gateway.cache.semantic.redis_index import RedisVectorIndex

    semantic = settings.semantic
    index: VectorIndex
    if settings.redis_url:
        index = RedisVectorIndex(
            settings.redis_url, embedder.dim, prefix=settings.key_prefix, timeout_seconds=settings.timeout_seconds,
            max_rows_per_scope=semantic.max_rows_per_scope, max_mirrored_vectors=semantic.max_vectors,
            sync_interval_seconds=semantic.sync_interval_seconds, ann_min_rows=semantic.ann_min_rows,
        )
    else:
        index = MemoryVectorIndex(
            embedder.dim, max_rows_per_scope=semantic.max_rows_per_scope, max_vectors=semantic.max_vectors,
            ann_min_rows=semantic.ann_min_rows,
        )
    threshold = semantic.threshold if semantic.threshold is not None else shipped_threshold(embedder.name)
    cache = SemanticCache(
        embedder,
        index,
        store,
        SemanticSettings(
            threshold=threshold, max_turns=semantic.max_turns, max_chars=semantic.max_chars,
            candidates=semantic.candidates, deadline_seconds=semantic.deadline_seconds,
        ),
        observer=SemanticMetrics(metrics.registry),
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="slmgw-embed"),
        entry_reuse_seconds=semantic.sync_interval_seconds if settings.redis_url else 0.0,
    )
    return SemanticLayer(
        inner, cache, ttl_ms=max(1, settings.ttl_seconds * 1000), tenant_header=settings.tenant_header,
        default=semantic.default, tenants=semantic.tenants,
    )


def build_cache_layer(
    settings: CacheSettings, inner: Handler, metrics: GatewayMetrics, embedder: Embedder | None = None
) -> CacheLayer:
    """The cache layer for `settings` (it answers `x-gateway-cache: bypass` to everything when disabled): the
    exact cache, and inside it the semantic layer when `cache.semantic.enabled` (then `embedder` is required)."""
    store = build_store(settings)
    cache = ResponseCache(
        store,
        metrics,
        ttl_seconds=settings.ttl_seconds,
        max_entry_bytes=settings.max_entry_bytes,
        lock_timeout_seconds=settings.lock_timeout_seconds,
    )
    semantic = None
    if settings.semantic.enabled and settings.enabled:
        if embedder is None:
            raise ValueError("cache.semantic.enabled needs an embedder")
        semantic = inner = build_semantic_layer(settings, inner, store, metrics, embedder)
    return CacheLayer(
        inner,
        cache,
        key_prefix=settings.key_prefix,
        enabled=settings.enabled,
        tenant_header=settings.tenant_header,
        cache_nondeterministic=settings.cache_nondeterministic,
        semantic=semantic,
    )

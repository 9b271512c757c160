"""`SemanticCache.store_soon` on the Redis index: no task per store where the embedding is known or done inline
(the row is in the mirror on return, its `XADD` in the next write batch), a task where a worker thread embeds;
the stored miss is indexed so a paraphrase hits on another replica, the stream's TTL covers the row, failures
fail open (real Redis, DB from SLM_TEST_REDIS_URL)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.asyncio as aioredis

from gateway.cache.keys import cache_key
from gateway.cache.memory import MemoryStore
from gateway.cache.semantic.cache import SemanticCache, SemanticHit, SemanticMiss, SemanticSettings
from gateway.cache.semantic.calibrate import shipped_threshold
from gateway.cache.semantic.redis_index import RedisVectorIndex
from gateway.cache.semantic.scope import SemanticScope, scope_of_request
from gateway.embedding import WordLlamaEmbedder

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
TTL_MS = 60_000
FIRST = "How do I sort a list in Python?"
PARAPHRASE = "What is the best way to sort a Python list?"


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"slmgw:test:soon-{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    for key in [k async for k in client.scan_iter(match=f"{name}:*")]:
        await client.unlink(key)
    await client.aclose()


def scoped(text: str, prefix: str) -> tuple[SemanticScope, str, str]:
    raw = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0}
    found = scope_of_request("acme", "upstream", "gpt-x", raw)
    assert not isinstance(found, str)
    return found[0], found[1], cache_key(prefix, "acme", "upstream", "gpt-x", raw)


def cache_on(embedder: WordLlamaEmbedder, url: str, prefix: str, store: MemoryStore, **options: object) -> SemanticCache:
    index = RedisVectorIndex(url, embedder.dim, prefix=prefix, timeout_seconds=1, sync_interval_seconds=0.1)
    return SemanticCache(embedder, index, store, SemanticSettings(shipped_threshold(embedder.name), deadline_seconds=5),
                         **options)  # type: ignore[arg-type]


async def test_a_miss_is_indexed_without_a_task_and_a_paraphrase_hits_elsewhere(
    embedder: WordLlamaEmbedder, prefix: str
) -> None:
    store = MemoryStore(100)
    one, two = cache_on(embedder, REDIS_URL, prefix, store), cache_on(embedder, REDIS_URL, prefix, store)
    await one.start()
    await two.start()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        scope, text, key = scoped(FIRST, prefix)
        await store.set(key, b"use sorted()", TTL_MS)
        miss = await one.lookup(scope, text)  # an empty scope: decided before the embedding (signature only)
        assert isinstance(miss, SemanticMiss) and (miss.reason, miss.vector) == ("empty", None)
        done = one.store_soon(scope, text, key, TTL_MS, miss)
        assert not isinstance(done, asyncio.Task) and not done.done()
        mirror = one.index._mirrors[scope.scope_id]  # type: ignore[attr-defined]
        assert [c.entry_key for c in mirror.matrix.search(embedder.embed([text])[0], 4, 0.0)] == [key]
        assert one._indexing == {done}
        assert await done is True
        assert one._indexing == set()
        stream = one.index.key(scope.scope_id)  # type: ignore[attr-defined]
        assert await client.xlen(stream) == 1
        assert 59_000 <= await client.pttl(stream) <= 60_000
        other, paraphrase, _ = scoped(PARAPHRASE, prefix)
        hit = await two.lookup(other, paraphrase)
        assert isinstance(hit, SemanticHit) and (hit.entry_key, hit.value) == (key, b"use sorted()")
    finally:
        await client.aclose()
        await one.close()
        await two.close()


async def test_an_ineligible_store_is_false_at_once(embedder: WordLlamaEmbedder, prefix: str) -> None:
    cache = cache_on(embedder, REDIS_URL, prefix, MemoryStore(10))
    await cache.start()
    try:
        scope, text, key = scoped(FIRST, prefix)
        hit = SemanticHit(key, 0.9, b"answer")  # not a miss: not indexed, never an exception (as `store`)
        for done in (cache.store_soon(None, text, key, TTL_MS), cache.store_soon(scope, "x" * 2001, key, TTL_MS),
                     cache.store_soon(scope, text, key, TTL_MS, hit)):  # type: ignore[arg-type]
            assert done.done() and done.result() is False
        assert cache._indexing == set()
    finally:
        await cache.close()


async def test_redis_down_is_false_not_an_error(embedder: WordLlamaEmbedder, prefix: str) -> None:
    cache = cache_on(embedder, "redis://127.0.0.1:1/0", prefix, MemoryStore(10))
    await cache.start()
    try:
        scope, text, key = scoped(FIRST, prefix)
        done = cache.store_soon(scope, text, key, TTL_MS)
        assert not isinstance(done, asyncio.Task)
        assert await done is False
        assert cache._indexing == set()
    finally:
        await cache.close()


async def test_a_prompt_embedded_in_a_worker_thread_is_stored_in_a_task(
    embedder: WordLlamaEmbedder, prefix: str
) -> None:
    cache = cache_on(embedder, REDIS_URL, prefix, MemoryStore(10), executor=ThreadPoolExecutor(1), inline_chars=8)
    await cache.start()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        scope, text, key = scoped(FIRST, prefix)
        done = cache.store_soon(scope, text, key, TTL_MS, SemanticMiss("empty"))
        assert isinstance(done, asyncio.Task)
        assert await done is True
        assert await client.xlen(cache.index.key(scope.scope_id)) == 1  # type: ignore[attr-defined]
    finally:
        await client.aclose()
        await cache.close()

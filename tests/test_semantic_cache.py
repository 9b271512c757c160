"""SemanticCache over the real embedder, the in-process index and store, and Redis (DB from SLM_TEST_REDIS_URL)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from gateway.cache.keys import cache_key, tenant_namespace
from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import RedisStore
from gateway.cache.semantic.cache import SemanticCache, SemanticHit, SemanticMiss, SemanticSettings
from gateway.cache.semantic.guard import LexicalGuard, encode_signature
from gateway.cache.semantic.calibrate import shipped_threshold
from gateway.cache.semantic.index import Candidate, MemoryVectorIndex
from gateway.cache.semantic.metrics import SemanticMetrics
from gateway.cache.semantic.purge import purge_tenant
from gateway.cache.semantic.redis_index import RedisVectorIndex
from gateway.cache.semantic.scope import SemanticScope, scope_of_request
from gateway.embedding import WordLlamaEmbedder

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
PREFIX = "slmgw:test:sem"
TTL_MS = 60_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def request(text: str, **params: object) -> dict:
    return {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
            "temperature": 0, **params}


def scoped(tenant: str, text: str, **params: object) -> tuple[SemanticScope, str, str]:
    raw = request(text, **params)
    found = scope_of_request(tenant, "upstream", "gpt-x", raw)
    assert not isinstance(found, str)
    scope, prompt = found
    return scope, prompt, cache_key(PREFIX, tenant, "upstream", "gpt-x", raw)


async def remember(cache: SemanticCache, tenant: str, text: str, answer: bytes, **params: object) -> str:
    scope, prompt, key = scoped(tenant, text, **params)
    await cache.entries.set(key, answer, TTL_MS)
    miss = await cache.lookup(scope, prompt)
    assert isinstance(miss, SemanticMiss)
    assert await cache.store(scope, prompt, key, TTL_MS, miss)
    return key


def make(embedder: WordLlamaEmbedder, clock: Clock | None = None, **settings: object):
    registry = CollectorRegistry()
    metrics = SemanticMetrics(registry)
    clock = clock or Clock()
    cache = SemanticCache(
        embedder,
        MemoryVectorIndex(embedder.dim, clock=clock),
        MemoryStore(1000, clock=clock),
        # a generous deadline: these tests are about outcomes, and the machine may be busy
        SemanticSettings(threshold=shipped_threshold(embedder.name), **{"deadline_seconds": 5, **settings}),  # type: ignore[arg-type]
        observer=metrics,
    )
    return cache, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_paraphrase_hits_near_misses_do_not(embedder: WordLlamaEmbedder) -> None:
    cache, registry = make(embedder)
    key = await remember(cache, "acme", "How do I sort a list in Python?", b"use sorted()")
    scope, prompt, _ = scoped("acme", "What is the best way to sort a Python list?")
    hit = await cache.lookup(scope, prompt)
    assert isinstance(hit, SemanticHit)
    assert (hit.entry_key, hit.value) == (key, b"use sorted()")
    assert hit.similarity == pytest.approx(0.9373, abs=1e-4)
    # another pole ("reverse"): no stored prompt has its guard classes, a miss before embedding or scanning
    scope, prompt, _ = scoped("acme", "How do I reverse a list in Python?")
    miss = await cache.lookup(scope, prompt)
    assert isinstance(miss, SemanticMiss) and miss.reason == "classes"
    assert miss.vector is None and miss.signature is not None  # `store` embeds it
    # the same classes, a word swapped (similarity 0.80): the guard refuses the candidate
    scope, prompt, _ = scoped("acme", "How do I copy a list in Python?")
    miss = await cache.lookup(scope, prompt)
    assert isinstance(miss, SemanticMiss) and miss.reason == "guard" and miss.vector is not None
    scope, prompt, _ = scoped("acme", "Explain decorators in Python.")  # the same classes, similarity 0.47
    miss = await cache.lookup(scope, prompt)
    assert isinstance(miss, SemanticMiss) and miss.reason == "threshold"
    assert sample(registry, "slm_gateway_semantic_cache_hits_total") == 1
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="classes") == 1
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="guard") == 1
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="threshold") == 1
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="empty") == 1  # the first lookup
    assert sample(registry, "slm_gateway_semantic_cache_guard_refusals_total", check="swap") == 1
    assert sample(registry, "slm_gateway_semantic_cache_guard_refusals_total", check="polarity") == 0
    # the store's (the first lookup found the scope empty: not embedded), the hit, the swap, the decorators
    assert sample(registry, "slm_gateway_semantic_cache_embed_seconds_count") == 4


@pytest.mark.parametrize(
    ("tenant", "params", "system"),
    [("other", {}, None), ("acme", {"max_tokens": 50}, None), ("acme", {"temperature": 0.7}, None),
     ("acme", {}, "Be verbose.")],
)
async def test_the_scope_is_hard(embedder: WordLlamaEmbedder, tenant: str, params: dict, system: str | None) -> None:
    cache, _ = make(embedder)
    await remember(cache, "acme", "How do I sort a list in Python?", b"use sorted()")
    raw = request("How do I sort a list in Python?", **params)
    if system is not None:
        raw["messages"][0]["content"] = system
    found = scope_of_request(tenant, "upstream", "gpt-x", raw)
    assert not isinstance(found, str)
    miss = await cache.lookup(*found)
    assert isinstance(miss, SemanticMiss) and miss.reason == "empty"


async def test_other_tier_or_model_is_another_scope(embedder: WordLlamaEmbedder) -> None:
    a = scope_of_request("acme", "upstream", "gpt-x", request("hi there"))
    b = scope_of_request("acme", "local", "gpt-x", request("hi there"))
    c = scope_of_request("acme", "upstream", "gpt-y", request("hi there"))
    assert len({s[0].scope_id for s in (a, b, c)}) == 3  # type: ignore[index]
    assert a[0].scope_id.startswith(tenant_namespace("acme") + ":sem:")  # type: ignore[index]


async def test_turn_limit_length_and_ineligible_requests(embedder: WordLlamaEmbedder) -> None:
    cache, registry = make(embedder, max_turns=1, max_chars=100)
    raw = {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                      {"role": "user", "content": "How do I sort a list in Python?"}]}
    found = scope_of_request("acme", "upstream", "gpt-x", raw)
    assert not isinstance(found, str) and found[0].turns == 2
    assert (await cache.lookup(*found)).reason == "turns"  # type: ignore[union-attr]
    scope, _, _ = scoped("acme", "x")
    assert (await cache.lookup(scope, "y" * 101)).reason == "length"  # type: ignore[union-attr]
    assert (await cache.lookup(None, "anything")).reason == "scope"  # type: ignore[union-attr]
    image = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert scope_of_request("acme", "upstream", "gpt-x", image) == "not-text"
    assert scope_of_request("acme", "upstream", "gpt-x", {"messages": [{"role": "assistant", "content": "x"}]}) == "not-user"
    parts = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert scope_of_request("acme", "upstream", "gpt-x", parts)[1] == "a\nb"  # type: ignore[index]
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="turns") == 1
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="length") == 1
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="scope") == 1


async def test_ttl_is_not_re_armed_by_hits(embedder: WordLlamaEmbedder) -> None:
    clock = Clock()
    cache, _ = make(embedder, clock)
    await remember(cache, "acme", "How do I sort a list in Python?", b"use sorted()")
    scope, prompt, _ = scoped("acme", "What is the best way to sort a Python list?")
    clock.now += 59.0
    assert isinstance(await cache.lookup(scope, prompt), SemanticHit)
    clock.now += 1.0  # 60 s after the store, whatever the hit did
    miss = await cache.lookup(scope, prompt)
    assert isinstance(miss, SemanticMiss) and miss.reason == "empty"


async def test_a_vanished_entry_is_a_miss(embedder: WordLlamaEmbedder) -> None:
    cache, registry = make(embedder)
    key = await remember(cache, "acme", "How do I sort a list in Python?", b"use sorted()")
    await cache.entries.close()  # the exact store lost everything (eviction, restart)
    scope, prompt, _ = scoped("acme", "What is the best way to sort a Python list?")
    miss = await cache.lookup(scope, prompt)
    assert isinstance(miss, SemanticMiss) and miss.reason == "entry"
    assert key.startswith(PREFIX + ":" + tenant_namespace("acme"))


class BrokenEmbedder:
    name = "broken"
    dim = 256

    def embed(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError("model crashed")


class StuckIndex(MemoryVectorIndex):
    async def search(
        self, scope_id: str, vector: np.ndarray, k: int, classes: tuple[int, ...] | None = None
    ) -> list[Candidate]:
        await asyncio.sleep(5)
        return []


async def test_fail_open_on_a_broken_embedder_or_a_stuck_index(embedder: WordLlamaEmbedder) -> None:
    registry = CollectorRegistry()
    metrics = SemanticMetrics(registry)
    scope, prompt, key = scoped("acme", "How do I sort a list in Python?")
    guard = encode_signature(LexicalGuard().signature(prompt))  # a row with the prompt's guard classes: the
    broken_index, stuck_index = MemoryVectorIndex(256), StuckIndex(256)  # lookups embed and search
    for index in (broken_index, stuck_index):
        await index.add(scope.scope_id, "other", np.eye(256, dtype=np.float32)[0], guard, TTL_MS)
    broken = SemanticCache(BrokenEmbedder(), broken_index, MemoryStore(10),
                           SemanticSettings(0.6, deadline_seconds=5),
                           observer=metrics)
    miss = await broken.lookup(scope, prompt)
    assert isinstance(miss, SemanticMiss) and (miss.reason, miss.vector, miss.signature) == ("error", None, None)
    assert await broken.store(scope, prompt, key, TTL_MS) is False
    stuck = SemanticCache(embedder, stuck_index, MemoryStore(10), SemanticSettings(0.6, deadline_seconds=0.5),
                          observer=metrics)
    assert (await stuck.lookup(scope, prompt)).reason == "timeout"  # type: ignore[union-attr]
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="error") == 1
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="timeout") == 1


async def test_memory_index_bounds_and_purge(embedder: WordLlamaEmbedder) -> None:
    index = MemoryVectorIndex(embedder.dim, max_rows_per_scope=3, max_vectors=5)
    vectors = embedder.embed([f"prompt number {i}" for i in range(8)])
    for i in range(4):
        await index.add("tA:sem:1", f"k{i}", vectors[i], b"", TTL_MS)
    found = await index.search("tA:sem:1", vectors[0], 10)
    assert sorted(c.entry_key for c in found) == ["k1", "k2", "k3"]  # k0 was the oldest
    for i in range(4, 7):
        await index.add("tB:sem:1", f"k{i}", vectors[i], b"", TTL_MS)
    assert len(index) == 3  # scope tA (least recently used) made room
    assert await index.search("tA:sem:1", vectors[0], 10) == []
    assert await index.purge_tenant("tB") == 1
    assert len(index) == 0


# -- Redis -----------------------------------------------------------------------------------------------------
@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def redis_cache(embedder: WordLlamaEmbedder, **kw: object) -> SemanticCache:
    index = RedisVectorIndex(REDIS_URL, embedder.dim, prefix=PREFIX, **kw)  # type: ignore[arg-type]
    store = RedisStore(REDIS_URL)
    cache = SemanticCache(embedder, index, store, SemanticSettings(shipped_threshold(embedder.name), deadline_seconds=5))
    await store.start()
    await cache.start()
    return cache


async def test_redis_replicas_share_vectors_and_purge(embedder: WordLlamaEmbedder, redis_client: aioredis.Redis) -> None:
    one, two = await redis_cache(embedder), await redis_cache(embedder)
    try:
        key = await remember(one, "acme", "How do I sort a list in Python?", b"use sorted()")
        await remember(one, "globex", "How do I sort a list in Python?", b"globex answer")
        scope, prompt, _ = scoped("acme", "What is the best way to sort a Python list?")
        hit = await two.lookup(scope, prompt)  # the other replica sees it on its next lookup
        assert isinstance(hit, SemanticHit) and (hit.entry_key, hit.value) == (key, b"use sorted()")
        stream = f"{PREFIX}:{scope.scope_id}"
        assert await redis_client.type(stream) == b"stream"
        assert 59_000 <= await redis_client.pttl(stream) <= 60_000
        assert await purge_tenant(redis_client, PREFIX, "acme") == 2  # the entry and the scope's stream
        miss = await two.lookup(scope, prompt)
        assert isinstance(miss, SemanticMiss) and miss.reason == "empty"
        other, other_prompt, _ = scoped("globex", "What is the best way to sort a Python list?")
        hit = await one.lookup(other, other_prompt)
        assert isinstance(hit, SemanticHit) and hit.value == b"globex answer"
    finally:
        for cache in (one, two):
            await cache.close()
            await cache.entries.close()


async def test_redis_down_is_a_miss(embedder: WordLlamaEmbedder) -> None:
    index = RedisVectorIndex("redis://127.0.0.1:1/0", embedder.dim, prefix=PREFIX)
    cache = SemanticCache(embedder, index, MemoryStore(10), SemanticSettings(0.6, deadline_seconds=5))
    await cache.start()
    scope, prompt, key = scoped("acme", "How do I sort a list in Python?")
    assert (await cache.lookup(scope, prompt)).reason == "error"  # type: ignore[union-attr]
    assert await cache.store(scope, prompt, key, TTL_MS) is False
    await cache.close()


async def test_redis_mirror_catches_up_in_batches_and_is_bounded(
    embedder: WordLlamaEmbedder, redis_client: aioredis.Redis
) -> None:
    writer = RedisVectorIndex(REDIS_URL, embedder.dim, prefix=PREFIX, timeout_seconds=1)
    reader = RedisVectorIndex(REDIS_URL, embedder.dim, prefix=PREFIX, timeout_seconds=1, max_mirrored_vectors=301)
    await writer.start()
    await reader.start()
    try:
        vectors = embedder.embed([f"stored prompt {i}" for i in range(300)])  # > SYNC_BATCH (256)
        for i in range(300):
            await writer.add("tA:sem:1", f"k{i}", vectors[i], b"g", TTL_MS)
        found = await reader.search("tA:sem:1", vectors[7], 300)
        assert len(found) == 300 and found[0].entry_key == "k7" and found[0].guard == b"g"
        await writer.add("tB:sem:1", "b0", vectors[0], b"g", TTL_MS)
        assert [c.entry_key for c in await reader.search("tB:sem:1", vectors[0], 5)] == ["b0"]
        await writer.add("tC:sem:1", "c0", vectors[0], b"g", TTL_MS)
        assert [c.entry_key for c in await reader.search("tC:sem:1", vectors[0], 5)] == ["c0"]
        assert list(reader._mirrors) == ["tB:sem:1", "tC:sem:1"]  # 301 mirrored = the bound: tA (least recent) went
    finally:
        await writer.close()
        await reader.close()


class SlowRedisStore(MemoryStore):
    """The in-process store, whose reads first wait for a real Redis command that takes 0.3 s (a BLPOP on an
    empty list): a slow store read, on a real connection."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(10)
        self.client = client

    async def get(self, key: str) -> bytes | None:
        await self.client.blpop(["slmgw:test:sem:nothing-here"], timeout=0.3)
        return await super().get(key)


async def test_a_slow_store_read_is_not_cancelled_and_keeps_its_redis_connection(
    embedder: WordLlamaEmbedder,
) -> None:
    """The deadline does not cancel a store read in flight (redis-py drops a connection whose command was
    cancelled, and under overload that meant a new connection per late lookup): the read ends (the hit it found
    is served), and the connection goes back to the pool, connected. A lookup past its deadline before the read
    is a `timeout` miss."""
    client = aioredis.Redis.from_url(REDIS_URL)
    pool = client.connection_pool
    store = SlowRedisStore(client)
    registry = CollectorRegistry()
    cache = SemanticCache(embedder, MemoryVectorIndex(embedder.dim), store,
                          SemanticSettings(shipped_threshold(embedder.name), deadline_seconds=0.05),
                          observer=SemanticMetrics(registry))
    try:
        scope, prompt, key = scoped("acme", "How do I sort a list in Python?")
        await store.set(key, b"use sorted()", TTL_MS)
        assert await cache.store(scope, prompt, key, TTL_MS)
        paraphrase_scope, paraphrase, _ = scoped("acme", "What is the best way to sort a Python list?")
        hit = await cache.lookup(paraphrase_scope, paraphrase)
        assert isinstance(hit, SemanticHit) and (hit.entry_key, hit.value) == (key, b"use sorted()")
        assert sample(registry, "slm_gateway_semantic_cache_hits_total") == 1
        (connection,) = pool._available_connections
        assert connection.is_connected and len(pool._in_use_connections) == 0
        assert await client.ping() is True and pool._available_connections == [connection]  # reused
    finally:
        await client.aclose()


async def test_redis_hits_never_re_arm_a_ttl(embedder: WordLlamaEmbedder, redis_client: aioredis.Redis) -> None:
    """On Redis, neither the entry's TTL nor its scope stream's is pushed out by a semantic hit (no sliding
    re-arm): both are set back by hand to what time would have left of them, then hit twice."""
    cache = await redis_cache(embedder)
    try:
        key = await remember(cache, "acme", "How do I sort a list in Python?", b"use sorted()")
        scope, prompt, _ = scoped("acme", "What is the best way to sort a Python list?")
        stream = f"{PREFIX}:{scope.scope_id}"
        await redis_client.pexpire(key, 5_000)
        await redis_client.pexpire(stream, 7_000)
        for _ in range(2):
            hit = await cache.lookup(scope, prompt)
            assert isinstance(hit, SemanticHit) and hit.entry_key == key
        assert 0 < await redis_client.pttl(key) <= 5_000
        assert 0 < await redis_client.pttl(stream) <= 7_000
    finally:
        await cache.close()
        await cache.entries.close()

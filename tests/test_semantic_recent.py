"""RecentEntries (the entries semantic hits read lately) and their reuse by SemanticCache, over the real embedder."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.cache.memory import MemoryStore
from gateway.cache.semantic.cache import SemanticCache, SemanticHit, SemanticMiss, SemanticSettings
from gateway.cache.semantic.calibrate import shipped_threshold
from gateway.cache.semantic.index import MemoryVectorIndex
from gateway.cache.semantic.metrics import SemanticMetrics
from gateway.cache.semantic.recent import RecentEntries
from gateway.embedding import WordLlamaEmbedder
from tests.test_semantic_cache import Clock, remember, scoped


def test_a_value_is_reused_until_its_window_ends() -> None:
    recent = RecentEntries(0.1)
    recent.put("k", b"answer", 10.0)
    assert recent.get("k", 10.0) == b"answer"
    assert recent.get("k", 10.099) == b"answer"
    assert recent.get("k", 10.1) is None
    assert len(recent) == 0  # dropped once stale
    assert recent.get("other", 10.0) is None


def test_bounds_and_off() -> None:
    recent = RecentEntries(1.0, max_entries=2, max_value_bytes=4)
    recent.put("a", b"1", 0.0)
    recent.put("b", b"2", 0.0)
    recent.put("big", b"12345", 0.0)  # larger than max_value_bytes: never kept
    recent.put("c", b"3", 0.0)  # the oldest ("a") makes room
    assert (recent.get("a", 0.5), recent.get("b", 0.5), recent.get("c", 0.5), recent.get("big", 0.5)) == (
        None, b"2", b"3", None)
    recent.clear()
    assert len(recent) == 0
    off = RecentEntries(0.0)
    off.put("a", b"1", 0.0)
    assert len(off) == 0


class CountingStore(MemoryStore):
    """The in-process store, counting reads."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(1000, clock=clock)
        self.reads = 0

    async def get(self, key: str) -> bytes | None:
        self.reads += 1
        return await super().get(key)


async def test_hits_reuse_the_entry_read_within_the_window_then_read_again() -> None:
    embedder = WordLlamaEmbedder()
    clock = Clock()
    store = CountingStore(clock)
    cache = SemanticCache(
        embedder, MemoryVectorIndex(embedder.dim, clock=clock), store,
        SemanticSettings(threshold=shipped_threshold(embedder.name), deadline_seconds=5),
        observer=SemanticMetrics(CollectorRegistry()), clock=clock, entry_reuse_seconds=0.1,
    )
    key = await remember(cache, "acme", "How do I sort a list in Python?", b"use sorted()")
    scope, prompt, _ = scoped("acme", "What is the best way to sort a Python list?")
    reads = store.reads
    first = await cache.lookup(scope, prompt)
    second = await cache.lookup(scope, prompt)
    assert isinstance(first, SemanticHit) and isinstance(second, SemanticHit)
    assert (first.value, second.value, first.entry_key) == (b"use sorted()", b"use sorted()", key)
    assert store.reads == reads + 1  # the second hit reused the first one's read
    await store.close()  # the entry is gone from the store (purged elsewhere, evicted)
    clock.now += 0.05
    assert isinstance(await cache.lookup(scope, prompt), SemanticHit)  # within the window: still served here
    clock.now += 0.06  # past the window (0.1 s after the read)
    gone = await cache.lookup(scope, prompt)
    assert isinstance(gone, SemanticMiss) and gone.reason == "entry"
    assert store.reads == reads + 2

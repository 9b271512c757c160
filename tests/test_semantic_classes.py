"""Rows grouped by guard classes: a lookup whose classes no stored row has is a miss (`classes`) before embedding
or scanning, and every decision is the one the whole-scope search gives (the labelled pairs, one scope and many)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from gateway.cache.memory import MemoryStore
from gateway.cache.semantic.cache import SemanticCache, SemanticHit, SemanticMiss, SemanticSettings
from gateway.cache.semantic.calibrate import DEFAULT_PAIRS, load_pairs, shipped_threshold
from gateway.cache.semantic.guard import GUARD_VERSION, LexicalGuard, encode_signature, stored_classes
from gateway.cache.semantic.index import MemoryVectorIndex, ScopeMatrix
from gateway.cache.semantic.scope import SemanticScope
from gateway.embedding import WordLlamaEmbedder

TTL_MS = 3_600_000


class WholeScopeIndex(MemoryVectorIndex):
    """The search before rows were grouped: every lookup embeds and scans the whole scope."""

    async def class_rows(self, scope_id: str, classes: tuple[int, ...]) -> tuple[int, int]:
        rows, _ = await super().class_rows(scope_id, classes)
        return rows, rows


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def scope(name: str) -> SemanticScope:
    return SemanticScope("acme", "upstream", "m", "params", name, 1)


def test_stored_classes() -> None:
    signature = LexicalGuard().signature("Convert 5 miles to km")
    assert stored_classes(encode_signature(signature)) == signature.classes
    other = msgspec.structs.replace(signature, version=GUARD_VERSION + 1)
    assert stored_classes(encode_signature(other)) is None
    assert stored_classes(b"not a signature") is None
    assert stored_classes(b"") is None


def test_matrix_counts_rows_by_classes() -> None:
    five, fifty = (encode_signature(LexicalGuard().signature(t)) for t in ("Convert 5 miles", "Convert 50 miles"))
    c5, c50 = stored_classes(five), stored_classes(fifty)
    assert c5 is not None and c50 is not None and c5 != c50
    matrix = ScopeMatrix(4, 3)
    vector = np.array([1, 0, 0, 0], dtype=np.float32)
    matrix.add("a", vector, five, 100.0)
    matrix.add("b", vector, five, 100.0)
    matrix.add("c", vector, b"garbage", 100.0)
    assert (matrix.class_rows(c5), matrix.class_rows(c50)) == (2, 0)
    matrix.add("b", vector, fifty, 100.0)  # the same entry stored again with another prompt's guard
    assert (matrix.class_rows(c5), matrix.class_rows(c50)) == (1, 1)
    matrix.add("a", vector, five, 100.0)  # the same row seen again: unchanged
    assert (matrix.class_rows(c5), matrix.class_rows(c50)) == (1, 1)
    matrix.add("d", vector, fifty, 100.0)  # full: replaces the oldest row ("a")
    assert (matrix.class_rows(c5), matrix.class_rows(c50), len(matrix)) == (0, 2, 3)
    matrix.add("e", vector, fifty, 100.0)  # replaces "b" (fifty)
    matrix.add("f", vector, five, 100.0)  # replaces "c" (garbage, never agreeable)
    assert (matrix.class_rows(c5), matrix.class_rows(c50), len(matrix)) == (1, 2, 3)


async def test_a_miss_without_agreeable_rows_is_not_embedded_and_is_still_indexed(embedder: WordLlamaEmbedder) -> None:
    cache = SemanticCache(embedder, MemoryVectorIndex(embedder.dim), MemoryStore(100),
                          SemanticSettings(shipped_threshold(embedder.name), deadline_seconds=5))
    here = scope("one")
    await cache.entries.set("k5", b"8.05 km", TTL_MS)
    first = await cache.lookup(here, "Convert 5 miles to km")
    assert isinstance(first, SemanticMiss) and (first.reason, first.vector) == ("empty", None)
    assert await cache.store(here, "Convert 5 miles to km", "k5", TTL_MS, first) is True
    near = await cache.lookup(here, "Convert 50 miles to km")  # cosine ~0.95, another number
    assert isinstance(near, SemanticMiss) and (near.reason, near.vector) == ("classes", None)
    await cache.entries.set("k50", b"80.5 km", TTL_MS)
    assert await cache.store(here, "Convert 50 miles to km", "k50", TTL_MS, near) is True  # embedded by `store`
    again = await cache.lookup(here, "Please convert 50 miles to km")
    assert isinstance(again, SemanticHit) and (again.entry_key, again.value) == ("k50", b"80.5 km")
    back = await cache.lookup(here, "Please convert 5 miles to km")
    assert isinstance(back, SemanticHit) and back.entry_key == "k5"


def decision(found: SemanticHit | SemanticMiss) -> str:
    return f"hit {found.entry_key}" if isinstance(found, SemanticHit) else "miss"


@pytest.mark.parametrize("shared", [True, False], ids=["one-scope", "scope-per-pair"])
async def test_decisions_equal_the_whole_scope_search_on_the_labelled_pairs(
    embedder: WordLlamaEmbedder, shared: bool
) -> None:
    """Every pair's first prompt stored (in one scope, or each pair in its own), every second prompt looked up:
    the same hit (the same entry) or miss as the whole-scope search, pair by pair."""
    pairs, _ = load_pairs(DEFAULT_PAIRS)
    guard = LexicalGuard()
    settings = SemanticSettings(shipped_threshold(embedder.name), deadline_seconds=30)
    grouped = SemanticCache(embedder, MemoryVectorIndex(embedder.dim, max_rows_per_scope=5000), MemoryStore(5000),
                            settings)
    whole = SemanticCache(embedder, WholeScopeIndex(embedder.dim, max_rows_per_scope=5000), MemoryStore(5000), settings)
    for i, pair in enumerate(pairs):
        where = scope("all" if shared else f"pair-{i}")
        for cache in (grouped, whole):
            await cache.entries.set(f"k{i}", pair.a.encode(), TTL_MS)
            assert await cache.index.add(where.scope_id, f"k{i}", embedder.embed([pair.a])[0],
                                         encode_signature(guard.signature(pair.a)), TTL_MS) is None
    outcomes: dict[str, int] = {}
    for i, pair in enumerate(pairs):
        where = scope("all" if shared else f"pair-{i}")
        mine, theirs = await grouped.lookup(where, pair.b), await whole.lookup(where, pair.b)
        assert decision(mine) == decision(theirs), (pair, mine, theirs)
        outcome = "hit" if isinstance(mine, SemanticHit) else mine.reason
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    expected = ({"classes": 292, "guard": 219, "hit": 845, "threshold": 59} if shared else
                {"classes": 666, "guard": 212, "hit": 380, "threshold": 157})
    assert (len(pairs), outcomes) == (1415, expected)

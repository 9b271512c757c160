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
from gateway.cache.semantic.index import CLASS_SCAN_SHARE, Candidate, MemoryVectorIndex, ScopeMatrix
from gateway.cache.semantic.scope import SemanticScope
from gateway.embedding import WordLlamaEmbedder

TTL_MS = 3_600_000


class WholeScopeIndex(MemoryVectorIndex):
    """The search before rows were grouped: every lookup embeds and scans the whole scope (not only the rows of
    its guard classes)."""

    async def class_rows(self, scope_id: str, classes: tuple[int, ...]) -> tuple[int, int]:
        rows, _ = await super().class_rows(scope_id, classes)
        return rows, rows

    async def search(
        self, scope_id: str, vector: np.ndarray, k: int, classes: tuple[int, ...] | None = None
    ) -> list[Candidate]:
        return await super().search(scope_id, vector, k)  # every row, whatever its classes


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


def test_a_search_told_the_classes_scans_only_their_rows_when_they_are_few() -> None:
    """40 rows: 36 of "5 miles" (rows 0-35), 4 of "50 miles" (36-39, row 37 expired). Told the 50-mile classes,
    the search returns the live 50-mile rows only, by exact score; untold, or when a class holds more than
    1/`CLASS_SCAN_SHARE` of the scope, the whole scope is scanned."""
    guard = LexicalGuard()
    five = encode_signature(guard.signature("Convert 5 miles to km"))
    fifty = encode_signature(guard.signature("Convert 50 miles to km"))
    c5, c50 = stored_classes(five), stored_classes(fifty)
    assert c5 is not None and c50 is not None
    eye = np.eye(8, dtype=np.float32)
    query = eye[0]
    matrix = ScopeMatrix(8, 100)
    for row in range(40):
        vector = eye[0] if row == 3 else eye[1]  # row 3: the query itself
        if row >= 36:  # 50-mile rows, nearer the query the later they are
            vector = (eye[0] * (row - 35) / 10 + eye[1]).astype(np.float32)
            vector /= np.linalg.norm(vector)
        matrix.add(f"r{row}", vector, fifty if row >= 36 else five, 50.0 if row == 37 else 100.0)
    assert (len(matrix), matrix.class_rows(c50), 40 // CLASS_SCAN_SHARE) == (40, 4, 5)
    told = matrix.search(query, 4, 60.0, c50)
    assert [c.entry_key for c in told] == ["r39", "r38", "r36"]  # r37 expired at 50.0
    assert [round(c.similarity, 4) for c in told] == [0.3714, 0.2873, 0.0995]
    assert [c.entry_key for c in matrix.search(query, 2, 60.0)] == ["r3", "r39"]
    assert [c.entry_key for c in matrix.search(query, 2, 60.0, c5)] == ["r3", "r39"]  # 36 of 40: the whole scan
    matrix.add("r40", eye[1], fifty, 100.0)  # 5 of 41 rows: still few enough
    assert [c.entry_key for c in matrix.search(query, 9, 60.0, c50)] == ["r39", "r38", "r36", "r40"]
    matrix.add("r41", eye[1], fifty, 100.0)  # 6 of 42: more than 1/8, the whole scope is scanned
    assert [c.entry_key for c in matrix.search(query, 2, 60.0, c50)] == ["r3", "r39"]
    assert matrix.search(query, 2, 60.0, (1, 2, 3)) == matrix.search(query, 2, 60.0)  # classes no row has
    assert isinstance(told[0], Candidate) and told[0].guard == fifty


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
    # in one scope, 34 of the whole-scope search's guard refusals are threshold misses here: the nearest rows were
    # in other guard classes, which a class-restricted scan (`CLASS_SCAN_MAX_ROWS`) never proposes
    expected = ({"classes": 292, "guard": 185, "hit": 845, "threshold": 93} if shared else
                {"classes": 671, "guard": 212, "hit": 380, "threshold": 152})  # 5 "tie" pairs: polarity (guard v4)
    assert (len(pairs), outcomes) == (1415, expected)

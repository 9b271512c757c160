"""What a repeated lookup reuses, and that it never changes the outcome: a scope's remembered searches
(`ScopeMatrix.search`: the same result as a fresh scan after an add, an expiry, and in a small scope none kept) and
the prompt memo (`PromptMemo`: a prompt looked up twice is embedded once)."""

from __future__ import annotations

import numpy as np

from gateway.cache.semantic.guard import LexicalGuard
from gateway.cache.semantic.index import SEARCHES_MIN_ROWS, ScopeMatrix
from gateway.cache.semantic.prompts import PromptMemo
from gateway.embedding import WordLlamaEmbedder
from tests.test_semantic_cache import embedder, make, remember, sample, scoped  # noqa: F401 (a fixture)


def unit(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def fresh(matrix: ScopeMatrix, query: np.ndarray, k: int, now: float) -> list[str]:
    return [c.entry_key for c in matrix._search_exact(query, k, now)[0]]


def test_a_remembered_search_is_the_result_a_fresh_scan_gives() -> None:
    rng = np.random.default_rng(3)
    rows = unit(rng, SEARCHES_MIN_ROWS)
    matrix = ScopeMatrix(32, 10_000, ann_min_rows=0)
    for i, row in enumerate(rows):
        matrix.add(f"r{i}", row, b"", 2000.0)
    query = rows[7] + 0.01 * unit(rng, 1)[0]
    query /= np.linalg.norm(query)
    first = matrix.search(query, 4, 1000.0)
    assert first[0].entry_key == "r7" and len(first) == 4
    assert matrix.search(query, 4, 1000.0) == first == matrix._search_exact(query, 4, 1000.0)[0]
    assert len(matrix._searches) == 1
    # a better row added: seen at once
    matrix.add("closer", query, b"", 1500.0)
    assert [c.entry_key for c in matrix.search(query, 4, 1000.0)] == ["closer"] + [c.entry_key for c in first[:3]]
    # that row expires: the result falls back to what a scan gives now, without it
    assert [c.entry_key for c in matrix.search(query, 4, 1500.0)] == fresh(matrix, query, 4, 1500.0)
    assert [c.entry_key for c in matrix.search(query, 4, 1500.0)] == [c.entry_key for c in first]
    # every row expired: nothing
    assert matrix.search(query, 4, 2000.0) == []
    # a row replaced in place (same key, new vector): the new similarity
    matrix.add("r7", -query, b"", 3000.0)
    assert [(c.entry_key, round(c.similarity, 4)) for c in matrix.search(query, 1, 2500.0)] == [("r7", -1.0)]


def test_a_small_scope_remembers_no_search() -> None:
    rng = np.random.default_rng(4)
    matrix = ScopeMatrix(32, 10_000, ann_min_rows=0)
    for i, row in enumerate(unit(rng, SEARCHES_MIN_ROWS - 1)):
        matrix.add(f"r{i}", row, b"", 2000.0)
    matrix.search(unit(rng, 1)[0], 4, 1000.0)
    assert len(matrix._searches) == 0


def test_the_prompt_memo_is_bounded_and_read_only() -> None:
    memo = PromptMemo(max_prompts=2)
    for text in ("a", "b", "c"):
        memo.remember(text, np.ones(4, dtype=np.float32))
    assert (len(memo), memo.vector("a") is None, memo.vector("c") is not None) == (2, True, True)
    assert memo.vector("c").flags.writeable is False  # type: ignore[union-attr]
    assert memo.signature("c") is None


async def test_a_prompt_looked_up_again_is_not_embedded_again(embedder: WordLlamaEmbedder) -> None:  # noqa: F811
    cache, registry = make(embedder)
    await remember(cache, "acme", "How do I sort a list in Python?", b"use sorted()")  # 1 embedding (the miss)
    scope, prompt, _ = scoped("acme", "What is the best way to sort a Python list?")
    hits = [await cache.lookup(scope, prompt) for _ in range(3)]
    assert [round(h.similarity, 4) for h in hits] == [0.9373] * 3  # type: ignore[union-attr]
    assert sample(registry, "slm_gateway_semantic_cache_embed_seconds_count") == 2
    assert sample(registry, "slm_gateway_semantic_cache_hits_total") == 3
    assert cache.prompts.signature(prompt) == LexicalGuard().signature(prompt)  # the one a fresh guard computes

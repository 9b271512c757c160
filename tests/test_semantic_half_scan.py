"""The fp16 scan only proposes: a scope's search returns exactly what the float32 scan returns (same keys, same
similarities bit for bit, same order), on random and adversarial rows (duplicates, near-ties, a threshold's
edge, expired and replaced rows). The semantic decision reads nothing else, so it is the exact scan's."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.cache.semantic import ann
from gateway.cache.semantic.half import HalfScan
from gateway.cache.semantic.index import HALF_MIN_ROWS, ScopeMatrix

pytestmark = pytest.mark.skipif(not ann.available(), reason="faiss is not installed")

DIM = 256
NOW = 1000.0


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def pair(vectors: np.ndarray, expires: np.ndarray | None = None, max_rows: int = 50_000) -> tuple[ScopeMatrix, ScopeMatrix]:
    fast = ScopeMatrix(DIM, max_rows)
    exact = ScopeMatrix(DIM, max_rows, half_scan=False)
    for i, v in enumerate(vectors):
        x = 1e9 if expires is None else float(expires[i])
        fast.add(f"k{i}", v, bytes([i % 251]), x)
        exact.add(f"k{i}", v, bytes([i % 251]), x)
    return fast, exact


def same(fast: ScopeMatrix, exact: ScopeMatrix, queries: np.ndarray, k: int = 4) -> int:
    """Asserts equal results; returns how many the fp16 scan proved (not fallen back to the exact scan)."""
    proven = 0
    for q in queries:
        got = fast._search_exact(q, k, NOW)
        want = exact._search_exact(q, k, NOW)
        assert [(c.entry_key, c.similarity, c.guard) for c in got[0]] == [
            (c.entry_key, c.similarity, c.guard) for c in want[0]
        ]
        assert got[1] == want[1]
        proven += len(fast) >= HALF_MIN_ROWS and fast._search_half(q, k, NOW) is not None
    return proven


def test_random_rows_and_paraphrase_queries_match_the_exact_scan() -> None:
    rng = np.random.default_rng(1)
    rows = unit(rng.standard_normal((5000, DIM)))
    fast, exact = pair(rows)
    near = unit(rows[rng.integers(0, 5000, 100)] + 0.05 * rng.standard_normal((100, DIM)))
    far = unit(rng.standard_normal((100, DIM)))
    assert same(fast, exact, near) == 100
    assert same(fast, exact, far) == 100
    assert same(fast, exact, far, k=16) == 100


def test_duplicate_rows_tie_and_the_lower_row_comes_first() -> None:
    rng = np.random.default_rng(2)
    rows = unit(rng.standard_normal((3000, DIM)))
    rows[100:140] = rows[7]  # 41 identical rows: the top 4 are a tie
    fast, exact = pair(rows)
    got = fast._search_exact(rows[7], 4, NOW)[0]
    assert [c.entry_key for c in got] == ["k7", "k100", "k101", "k102"]
    assert same(fast, exact, rows[[7, 100, 139]]) == 0  # a tie beyond the proposals: not proven, scanned exactly


def test_near_ties_around_a_threshold_match_the_exact_scan() -> None:
    rng = np.random.default_rng(3)
    base = unit(rng.standard_normal(DIM))
    noise = unit(rng.standard_normal((2000, DIM)))
    # rows at cosine 0.9 +/- 1e-6 .. 1e-3 of the query: closer than the fp16 error
    offsets = np.concatenate([np.linspace(-1e-3, 1e-3, 40), np.linspace(-1e-6, 1e-6, 40)])
    ortho = unit(noise[:80] - (noise[:80] @ base)[:, None] * base)
    cos = 0.9 + offsets
    edge = unit(cos[:, None] * base + np.sqrt(1 - cos**2)[:, None] * ortho)
    rows = np.concatenate([noise, edge]).astype(np.float32)
    fast, exact = pair(rows)
    same(fast, exact, np.stack([base, unit(base + 0.01 * noise[0])]), k=4)
    same(fast, exact, np.stack([base]), k=16)


def test_expired_rows_among_the_best_match_the_exact_scan() -> None:
    rng = np.random.default_rng(4)
    rows = unit(rng.standard_normal((2000, DIM)))
    query = rows[5]
    rows[10:40] = unit(query + 0.01 * rng.standard_normal((30, DIM)))
    expires = np.full(2000, 1e9)
    expires[10:30] = NOW - 1  # 20 of the 31 best are expired: more than the fp16 scan's spare proposals
    fast, exact = pair(rows, expires)
    assert same(fast, exact, np.stack([query])) == 0
    expires[10:40] = 1e9
    expires[10:15] = NOW  # expiring now counts as expired
    fast, exact = pair(rows, expires)
    assert same(fast, exact, np.stack([query])) == 1
    assert [c.entry_key for c in fast._search_exact(query, 4, NOW)[0]][0] == "k5"


def test_replaced_rows_are_replaced_in_the_fp16_copy() -> None:
    rng = np.random.default_rng(5)
    rows = unit(rng.standard_normal((HALF_MIN_ROWS + 200, DIM)))
    fast, exact = pair(rows, max_rows=HALF_MIN_ROWS + 200)
    queries = unit(rng.standard_normal((20, DIM)))
    assert same(fast, exact, queries) == 20  # the fp16 copy exists from here on
    for i, q in enumerate(queries[:10]):  # the same key again, then a full scope's oldest row
        fast.add(f"k{HALF_MIN_ROWS + i}", q, b"r", 1e9)  # rows the ring does not reach here
        exact.add(f"k{HALF_MIN_ROWS + i}", q, b"r", 1e9)
        fast.add(f"new{i}", -q, b"n", 1e9)
        exact.add(f"new{i}", -q, b"n", 1e9)
    assert same(fast, exact, queries) == 20
    assert same(fast, exact, -queries) == 20
    assert fast._search_exact(queries[3], 1, NOW)[0][0].entry_key == f"k{HALF_MIN_ROWS + 3}"
    assert fast._search_exact(-queries[3], 1, NOW)[0][0].entry_key == "new3"


def test_small_scopes_and_unfit_rows_are_scanned_exactly() -> None:
    rng = np.random.default_rng(6)
    rows = unit(rng.standard_normal((HALF_MIN_ROWS - 1, DIM)))
    fast, exact = pair(rows)
    same(fast, exact, rows[:3])
    assert fast._half is None
    half = HalfScan(DIM)
    import faiss

    assert faiss.omp_get_max_threads() == 1  # in this (the event loop's) thread: no OpenMP threads to fight it
    half.set(0, rows[0])
    assert half.usable
    half.set(1, rows[1] * 1e6)
    assert not half.usable
    assert len(half) == 2


def test_extend_gives_the_codes_and_bounds_of_set_row_by_row() -> None:
    rng = np.random.default_rng(8)
    rows = unit(rng.standard_normal((300, DIM))) * np.float32(3.0)
    one_by_one, at_once = HalfScan(DIM), HalfScan(DIM)
    for i, row in enumerate(rows):
        one_by_one.set(i, row)
    at_once.extend(rows[:100])
    at_once.extend(rows[100:])
    import faiss

    assert len(at_once) == len(one_by_one) == 300
    assert np.array_equal(faiss.vector_to_array(at_once._index.codes), faiss.vector_to_array(one_by_one._index.codes))
    assert at_once.max_norm == pytest.approx(3.0, rel=1e-6)
    assert one_by_one.max_norm == pytest.approx(3.0, rel=1e-6)
    assert at_once.usable and one_by_one.usable
    huge = HalfScan(DIM)
    huge.extend(rows[:2] * np.float32(1e5))  # norms 3e5: a component may not fit fp16
    assert not huge.usable and len(huge) == 2


def test_a_scope_makes_its_fp16_copy_when_it_reaches_the_size_not_at_its_first_search() -> None:
    """Made at a first search instead, the copy of a 20,000-row mirror caught up after a restart held the event
    loop for ~0.2 s in that search (bench/cold_mirror.py)."""
    rng = np.random.default_rng(9)
    rows = unit(rng.standard_normal((HALF_MIN_ROWS + 5, DIM)))
    fast = ScopeMatrix(DIM, 50_000)
    for i, row in enumerate(rows[: HALF_MIN_ROWS - 1]):
        fast.add(f"k{i}", row, b"g", 1e9)
    assert fast._half is None
    fast.add(f"k{HALF_MIN_ROWS - 1}", rows[HALF_MIN_ROWS - 1], b"g", 1e9)
    assert fast._half is not None and len(fast._half) == HALF_MIN_ROWS  # every row so far, before any search
    for i in range(HALF_MIN_ROWS, len(rows)):
        fast.add(f"k{i}", rows[i], b"g", 1e9)
    assert len(fast._half) == HALF_MIN_ROWS + 5
    exact = ScopeMatrix(DIM, 50_000, half_scan=False)
    for i, row in enumerate(rows):
        exact.add(f"k{i}", row, b"g", 1e9)
    assert same(fast, exact, rows[-8:]) == 8


def test_faiss_is_imported_when_an_index_is_built_not_by_a_first_lookup() -> None:
    """Imported by the first lookup's new scope, faiss (~80 ms) held every request in flight that long."""
    import subprocess
    import sys

    code = ("import sys\nfrom gateway.cache.semantic.index import MemoryVectorIndex\n"
            "assert 'faiss' not in sys.modules\nMemoryVectorIndex(256)\nprint('faiss' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"

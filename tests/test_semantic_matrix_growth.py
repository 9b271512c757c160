"""A scope's matrix doubles while small, then grows once to its bound (`RESERVE_ROWS`): the rows are never copied
again as a large scope grows (each doubling copied them into fresh pages: 70 ms at 65,536 rows), and every row,
expiry and guard class survives each growth."""

from __future__ import annotations

import numpy as np

from gateway.cache.semantic.index import RESERVE_ROWS, ScopeMatrix

DIM = 64
NOW = 1000.0


def test_the_matrix_doubles_to_reserve_rows_then_grows_once_to_its_bound() -> None:
    rows = np.random.default_rng(3).standard_normal((RESERVE_ROWS + 904, DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    matrix = ScopeMatrix(DIM, 10_000, ann_min_rows=0, half_scan=False)
    capacities = {}
    for i, vector in enumerate(rows):
        matrix.add(f"k{i}", vector, b"g%d" % (i % 3), NOW + 1 + i)
        capacities[i + 1] = matrix._vectors.shape[0]
    assert [capacities[n] for n in (1, 16, 17, 33, 2048, 2049, 4096, 4097, 5000)] == [
        16, 16, 32, 64, 2048, 4096, 4096, 10_000, 10_000
    ]
    assert matrix._expires.shape == (10_000,) and matrix._class_ids.shape == (10_000,)
    assert np.array_equal(matrix._vectors[: len(rows)], rows)
    assert np.array_equal(matrix._expires[: len(rows)], NOW + 1 + np.arange(len(rows)))
    for i in (0, 15, 16, 4095, 4096, len(rows) - 1):
        found = matrix.search(rows[i], 1, NOW)
        assert [c.entry_key for c in found] == [f"k{i}"] and found[0].guard == b"g%d" % (i % 3)


def test_a_bound_below_reserve_rows_is_reached_by_doubling() -> None:
    matrix = ScopeMatrix(DIM, 100, ann_min_rows=0, half_scan=False)
    for i in range(100):
        matrix.add(f"k{i}", np.ones(DIM, dtype=np.float32), b"", NOW + 60)
    assert matrix._vectors.shape[0] == 100 and len(matrix) == 100

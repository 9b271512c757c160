"""A half-precision copy of a scope's matrix that proposes the rows an exact scan would return, with a proof.

An exact scan of 10,000 x 256 float32 reads 10 MB per lookup: out of cache (other requests ran since the last
lookup) that is ~0.5-0.65 ms here, the memory's time, not the arithmetic's. The same rows in float16 (faiss's
`IndexScalarQuantizer` QT_fp16, one thread, in the calling thread) are half the bytes: ~0.33 ms cold.

It only proposes rows (`propose`: the `want` best by the fp16 score) and says how far off an fp16 score can be
(`error`: each fp16 component is within 2^-11 of its float32 value, relative, so a row's fp16 score is within
2^-11 |x| |q| of its exact one, plus float32 rounding of both sums; `error` doubles that, which also covers the
float32 rounding of the norms it is given). `ScopeMatrix`
re-scores the proposals exactly in float32 and keeps them only when its k-th best exact score is above the
`want`-th fp16 score plus `error`: every row not proposed scores at most that, so the k rows are exactly the
exact scan's. Otherwise (near-ties, many expired rows among the proposals) it scans exactly as before.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gateway.cache.semantic import ann

FP16_MAX = 65504.0
RELATIVE_ERROR = 2.0**-10
"""Twice fp16's unit roundoff (2^-11) plus float32 accumulation (~d * 2^-24, 1.5e-5 at 256-d): a safe bound."""
SUBNORMAL_ERROR = 2.0**-24
"""The absolute error of an fp16 subnormal (|x| < 6.1e-5), per component, times max |q_i|."""


class HalfScan:
    """faiss QT_fp16 codes whose ids are the matrix's row numbers (rows are added in order, replaced in place)."""

    __slots__ = ("_index", "_rows", "dim", "max_norm", "usable")

    def __init__(self, dim: int) -> None:
        faiss = ann._faiss()
        if faiss is None:
            raise RuntimeError("faiss is not installed")
        faiss.omp_set_num_threads(1)  # per thread: this is the event loop's (see ann.IvfIndex.adopt)
        self._index: Any = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        self._rows = 0
        self.dim = dim
        self.max_norm = 0.0
        """An upper bound of every row's norm (never lowered: a replaced row only makes it conservative)."""
        self.usable = True
        """False once a row may not fit fp16 (its norm, which bounds every component, beyond 32752, or not
        finite): never proposes again."""

    def __len__(self) -> int:
        return self._rows

    def _bound(self, norm: float) -> None:
        """Take a row's (or rows' largest) norm into `max_norm` and `usable` (a component is at most the norm)."""
        if not (norm <= FP16_MAX / 2):  # also NaN
            self.usable = False
        elif norm > self.max_norm:
            self.max_norm = norm

    def set(self, row: int, vector: np.ndarray) -> None:
        """Row `row` now holds `vector`: appended when it is the next row, else replaced in place (~5 us)."""
        one = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        flat = one[0]
        self._bound(math.sqrt(float(flat.dot(flat))) if one.size else 0.0)
        total = self._rows
        if row == total:
            self._index.add(one)
            self._rows += 1
        elif row < total:
            import faiss  # available: the index exists

            size = self._index.code_size
            codes = faiss.rev_swig_ptr(self._index.codes.data(), total * size)
            codes[row * size : (row + 1) * size] = self._index.sa_encode(one)[0]
        else:
            raise IndexError(f"row {row} after {total} rows")

    def extend(self, vectors: np.ndarray) -> None:
        """Append `vectors` as the next rows in one call: the codes `set` gives row by row, without its per-row
        cost."""
        rows = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if not len(rows):
            return
        self._bound(math.sqrt(float(np.einsum("ij,ij->i", rows, rows).max())))
        self._index.add(rows)
        self._rows += len(rows)

    def error(self, vector: np.ndarray) -> float:
        """How far any row's fp16 score of `vector` can be from its exact float32 score."""
        q = np.abs(vector)
        return RELATIVE_ERROR * self.max_norm * float(np.linalg.norm(vector)) + self.dim * SUBNORMAL_ERROR * float(
            q.max()
        ) + 1e-7

    def propose(self, vector: np.ndarray, want: int) -> tuple[np.ndarray, float]:
        """The row numbers of the `want` best rows by fp16 score (best first), and the lowest of their scores
        (-inf when every row was proposed): no other row's fp16 score is above it."""
        scores, rows = self._index.search(np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1), want)
        found = rows[0]
        keep = found >= 0
        if want >= len(self) or not keep.all():
            return found[keep], -np.inf
        return found, float(scores[0][-1])

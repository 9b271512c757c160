"""The approximate index of a large scope: faiss's inverted file (IVF) over the rows of its `ScopeMatrix`.

An exact scan reads every vector of the scope (100,000 x 256 float32 = 100 MB per lookup, ~5 ms on this
machine's cores); the IVF reads the centroids and the `nprobe` nearest lists only (~1/8 of the rows). Its lists
hold each row as a 4-bit product code (faiss's `IndexIVFPQFastScan`, not by residual: one 4-bit code per 4
dimensions, 32 bytes a 256-d row against 512 in float16), scored in SIMD registers from a per-query table: a
100,000-row search takes ~0.2 ms instead of ~0.45 ms with float16 lists (bench/semantic_ann.py, same run). It only
proposes rows: `ScopeMatrix` re-scores them in float32 against its own matrix and checks their expiry, so the
threshold and the guard see exact similarities; what approximation costs is recall, never a wrong hit: a stored
paraphrase in a list that was not probed, or (the codes' part) one whose approximate score ranks it below `k` +
`ANN_EXTRA` farther rows. The codes' part, probing every list (bench/semantic_ann.py --probe-all, 430 pair-set
paraphrases among ~12,000 real prompts, and with 88,000 random rows): none lost, the same candidates above the
threshold as the exact scan for 430 of 430, as with float16 lists. The probes' part, on 100,000 random unit
vectors (an IVF's worst case: no clusters) with bench/paraphrases.py's stored prompt among them: 39 probes of 316
lists lost 0-1 of 2,400 paraphrases (tests/test_semantic_ann.py keeps it; rows that served a hit are re-scored by
every search).

The fast-scan lists cannot drop one code cheaply (faiss scans every list: ~0.3 ms at 100,000 rows), so a row
written again keeps its old code (stale: it only proposes the row) and an expired row is hidden by a bitmap the
search passes to faiss; a scope whose stale codes reach half its rows is rebuilt (`IvfIndex.worn`).

`faiss-cpu` (MIT, Meta) is imported lazily; without it (`available()` is False) every scope is scanned exactly.
Building (k-means on a sample, then adding every row: ~1.2 s at 100,000 here) runs in a worker thread (faiss releases
the GIL), once a scope reaches `ScopeMatrix.ann_min_rows` rows, again each time it doubles and when it is worn;
`IndexBuilds` schedules that for the index that owns the matrices. faiss runs single-threaded here (OpenMP threads
spinning on shared cores slowed the event loop down).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.tasks import cancel_and_wait

if TYPE_CHECKING:
    from gateway.cache.semantic.index import ScopeMatrix

log = logging.getLogger("slm_gateway")

MIN_LISTS, MAX_LISTS = 16, 1024
TRAIN_POINTS_PER_LIST = 64
"""k-means sees at most this many sampled rows per list (faiss wants at least 39)."""
MIN_PROBES = 16
PROBE_SHARE = 8
"""`nprobe` = max(MIN_PROBES, lists / PROBE_SHARE): ~1/8 of the rows are read. Fewer (1/16) lost the bench's
paraphrase among 10,000 random vectors (no structure: an IVF's worst case) in one build out of two."""
DIMS_PER_CODE = 4
"""A row's product code has one 4-bit code per this many dimensions (`pq_codes`)."""
CATCH_UP_ROWS = 4096
"""Rows written during a build are given to the new index in the worker thread this many at a time (their copy,
taken on the event loop, ~4 MB at 256-d) until few are left for `ScopeMatrix.install`."""
STALE_SHARE = 2
"""A scope's index is rebuilt once its stale codes (rows written again) reach 1/2 of its rows."""


def _faiss() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def available() -> bool:
    """Whether faiss can be imported (else every scope is scanned exactly)."""
    return _faiss() is not None


def pq_codes(dim: int) -> int:
    """Sub-quantizers of a row's product code (each codes an equal share of the dimensions in 4 bits): the fewest
    that give each at most `DIMS_PER_CODE` dimensions (64 at 256-d: 32 bytes a row; 257, a prime: 257)."""
    return next(m for m in range(-(-dim // DIMS_PER_CODE), dim + 1) if dim % m == 0)


def lists_for(rows: int) -> int:
    """Inverted lists for a scope of `rows` rows: ~sqrt(rows), within 16..1024."""
    return max(MIN_LISTS, min(MAX_LISTS, int(math.sqrt(rows))))


class IvfIndex:
    """faiss `IndexIVFPQFastScan` (4-bit product-quantized lists, inner product) whose ids are the matrix's row
    numbers. Its lists cannot drop one code cheaply (a removal scans every list: ~0.3 ms at 100,000 rows), so a
    replaced row's old code stays (`stale`: it proposes the row, which is re-scored from its current vector) and a
    row that has expired is hidden from searches by a bitmap (`remove`) until it is written again."""

    __slots__ = (
        "_ivf", "nlist", "nprobe", "_one", "_rows", "trained", "stale", "_worn_floor", "_dead", "_dead_rows",
        "_selector", "_params",
    )

    def __init__(self, ivf: Any, nlist: int, nprobe: int, rows: int) -> None:
        self._ivf = ivf
        self.nlist = nlist
        self.nprobe = nprobe
        self._one = np.zeros(1, dtype=np.int64)
        self._rows = rows
        self.trained = rows
        """The rows it was built on (its lists were fitted to them): `ScopeMatrix` rebuilds it at twice that."""
        self.stale = 0
        """Codes of rows that were written again since (the row's current code is in the index too)."""
        self._worn_floor = 0
        """`worn` is False below this many stale codes (`postpone_rebuild`)."""
        self._dead = np.zeros((rows + 7) // 8 + 1, dtype=np.uint8)
        """One bit a row (faiss's `IDSelectorBitmap` order): set while the row is hidden (`remove`)."""
        self._dead_rows = 0
        self._selector: Any = None
        self._params: Any = None

    def __len__(self) -> int:
        """Rows 0..len-1 have a code in the index."""
        return self._rows

    @classmethod
    def build(cls, vectors: np.ndarray, *, seed: int = 1) -> IvfIndex:
        """Train on a sample of `vectors` (rows 0..n-1, float32, C order) and add them all (ids = row numbers).
        Slow (k-means and the product quantizer's: ~1.2 s at 100,000 rows here): call it in a worker thread."""
        faiss = _faiss()
        if faiss is None:
            raise RuntimeError("faiss is not installed")
        faiss.omp_set_num_threads(1)
        n, dim = vectors.shape
        nlist = lists_for(n)
        ivf = faiss.IndexIVFPQFastScan(
            faiss.IndexFlatIP(dim), dim, nlist, pq_codes(dim), 4, faiss.METRIC_INNER_PRODUCT
        )
        ivf.by_residual = False  # codes of the rows themselves, not of their offsets from the list's centroid
        ivf.cp.seed = seed
        ivf.cp.niter = 10
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        ivf.pq.cp.niter = 10  # faiss's 25 took 0.6 s more at 100,000 rows for the same score error (0.054 mean)
        sample = vectors
        if n > TRAIN_POINTS_PER_LIST * nlist:
            picked = np.random.default_rng(seed).choice(n, TRAIN_POINTS_PER_LIST * nlist, replace=False)
            sample = vectors[np.sort(picked)]
        ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
        ivf.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(n, dtype=np.int64))
        nprobe = min(nlist, max(MIN_PROBES, nlist // PROBE_SHARE))
        ivf.nprobe = nprobe
        return cls(ivf, nlist, nprobe, n)

    def adopt(self) -> None:
        """Called in the thread that will use the index (the event loop's): faiss's OpenMP thread count is a
        per-thread setting, and its default (every core) made each single-row add cost ~1.3 ms instead of ~30 us
        on 2 busy cores."""
        faiss = _faiss()
        if faiss is not None:
            faiss.omp_set_num_threads(1)

    def _revive(self, rows: np.ndarray) -> None:
        """Rows written again: shown to searches again (their old codes too, which only propose them)."""
        if not self._dead_rows:
            return
        for row in rows.tolist():
            byte, bit = row >> 3, 1 << (row & 7)
            if self._dead[byte] & bit:
                self._dead[byte] &= ~bit & 0xFF
                self._dead_rows -= 1

    def _grow(self, rows: int) -> None:
        self._rows = max(self._rows, rows)
        if self._rows >= 8 * len(self._dead) - 8:
            grown = np.zeros(2 * len(self._dead) + (self._rows + 7) // 8, dtype=np.uint8)
            grown[: len(self._dead)] = self._dead
            self._dead = grown
            self._selector = self._params = None  # they point at the old bitmap

    def upsert(self, row: int, vector: np.ndarray) -> None:
        """Row `row` now holds `vector` (a row below `len` keeps its old code too: `stale`)."""
        self._one[0] = row
        self._ivf.add_with_ids(np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1), self._one)
        if row >= self._rows:
            self._grow(row + 1)
        else:
            self.stale += 1
            self._revive(self._one)

    def upsert_rows(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """`upsert` of many rows at once (`rows` ascending int64, `vectors` theirs)."""
        if not len(rows):
            return
        self._ivf.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(rows))
        replaced = rows[rows < self._rows]
        self.stale += len(replaced)
        self._grow(int(rows[-1]) + 1)
        self._revive(replaced)

    def remove(self, row: int) -> None:
        """Hide `row` from searches (it expired) until it is written again."""
        byte, bit = row >> 3, 1 << (row & 7)
        if not self._dead[byte] & bit:
            self._dead[byte] |= bit
            self._dead_rows += 1

    def worn(self) -> bool:
        """Whether stale codes are `1/STALE_SHARE` of the rows: a rebuild is due (`ScopeMatrix.build_due`)."""
        return self.stale * STALE_SHARE >= self._rows and self.stale >= self._worn_floor

    def postpone_rebuild(self) -> None:
        """Its rebuild failed: not worn again before its stale codes double (not a new build at every add)."""
        self._worn_floor = 2 * max(1, self.stale)

    def _search_params(self) -> Any:
        faiss = _faiss()
        assert faiss is not None
        if self._params is None:
            bitmap = faiss.IDSelectorBitmap(len(self._dead), faiss.swig_ptr(self._dead))  # n: the bitmap's bytes
            self._selector = (bitmap, faiss.IDSelectorNot(bitmap))  # both kept: faiss holds raw pointers
            self._params = faiss.SearchParametersIVF(sel=self._selector[1])
        self._params.nprobe = int(self._ivf.nprobe)
        return self._params

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        """Row numbers of up to `k` rows near `vector` (approximately the nearest), best first."""
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        if self._dead_rows:
            _, rows = self._ivf.search(query, k, params=self._search_params())
        else:
            _, rows = self._ivf.search(query, k)
        found = rows[0]
        found = found[found >= 0]
        if self.stale:
            _, first = np.unique(found, return_index=True)
            found = found[np.sort(first)]
        return found


class IndexBuilds:
    """Builds the IVF of a `ScopeMatrix` that is due for one, in one worker thread, one build at a time per matrix
    (owned by `MemoryVectorIndex` and `RedisVectorIndex`; `close` cancels what is pending)."""

    def __init__(self, build: Callable[[np.ndarray], IvfIndex] = IvfIndex.build) -> None:
        available()  # faiss is imported now, as the gateway is built (~80 ms), not in the event loop by the first
        # lookup that makes a scope (its `ScopeMatrix` asks), which held every request in flight that long
        self._build = build
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def after_add(self, matrix: ScopeMatrix) -> None:
        """Start the matrix's build when it is due (a no-op otherwise, and without faiss)."""
        if not matrix.build_due():
            return
        rows = matrix.start_build()
        task = asyncio.get_running_loop().create_task(self._run(matrix, rows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, matrix: ScopeMatrix, rows: np.ndarray) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slmgw-ann")
        try:
            index = await loop.run_in_executor(self._executor, self._build, rows)
            if not matrix.outgrown(index):
                while (taken := matrix.take_changed(CATCH_UP_ROWS)) is not None:  # rows written meanwhile
                    await loop.run_in_executor(self._executor, index.upsert_rows, *taken)
                matrix.install(index)
        except asyncio.CancelledError:
            matrix.abandon_build()
            raise
        except Exception:  # a failed build leaves the scope as it was (the exact scan, or its current index); it is
            # tried again once the scope doubles (or a worn index's stale codes do)
            log.exception("building the approximate index of a semantic scope failed (%d rows)", len(rows))
            matrix.abandon_build()
            return
        self.after_add(matrix)  # outgrown while it was built: the next build starts now

    async def wait(self) -> None:
        """Until every build started so far is installed (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

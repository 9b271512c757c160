"""The approximate index of a large scope: faiss's inverted file (IVF) over the rows of its `ScopeMatrix`.

An exact scan reads every vector of the scope (100,000 x 256 float32 = 100 MB per lookup, ~5 ms on this
machine's cores); the IVF reads the centroids and the `nprobe` nearest lists only (~1/8 of the rows). Its lists
hold the rows in float16 (faiss's scalar quantizer QT_fp16, not by residual): half the bytes a probe reads, which
is what a lookup waits for (out of cache: ~0.55 ms instead of ~0.85-0.95 ms per 100,000-row search, and the same
rows proposed but for fp16 near-ties, ~2^-10 relative). It only proposes rows: `ScopeMatrix` re-scores them in float32 against its
own matrix and checks their expiry, so the threshold and the guard see exact similarities; what approximation
costs is recall (a stored paraphrase in a list that was not probed is a miss), never a wrong hit. Measured on
100,000 random unit vectors (an IVF's worst case: no clusters) with bench/paraphrases.py's stored prompt among
them: 39 probes of 316 lists lost 0, 1 and 4 of its 2,400 paraphrases over three seeds, and up to 49 (2 %) for two
seeds with other stored texts (tests/test_semantic_ann.py; rows that served a hit are re-scored by every search), 16 probes 25-33
(tests/test_semantic_ann.py keeps the recall on the pair set).

`faiss-cpu` (MIT, Meta) is imported lazily; without it (`available()` is False) every scope is scanned exactly.
Building (k-means on a sample, then adding every row) runs in a worker thread (faiss releases the GIL), once a
scope reaches `ScopeMatrix.ann_min_rows` rows and again each time it doubles; `IndexBuilds` schedules that for the
index that owns the matrices. faiss runs single-threaded here (OpenMP threads spinning on shared cores slowed the
event loop down).
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


def _faiss() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def available() -> bool:
    """Whether faiss can be imported (else every scope is scanned exactly)."""
    return _faiss() is not None


def lists_for(rows: int) -> int:
    """Inverted lists for a scope of `rows` rows: ~sqrt(rows), within 16..1024."""
    return max(MIN_LISTS, min(MAX_LISTS, int(math.sqrt(rows))))


class IvfIndex:
    """faiss `IndexIVFScalarQuantizer` (float16 lists, inner product) whose ids are the matrix's row numbers."""

    __slots__ = ("_ivf", "nlist", "nprobe", "_one")

    def __init__(self, ivf: Any, nlist: int, nprobe: int) -> None:
        self._ivf = ivf
        self.nlist = nlist
        self.nprobe = nprobe
        self._one = np.zeros(1, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ivf.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, *, seed: int = 1) -> IvfIndex:
        """Train on a sample of `vectors` (rows 0..n-1, float32, C order) and add them all (ids = row numbers).
        Slow (k-means: ~0.1-1 s): call it in a worker thread."""
        faiss = _faiss()
        if faiss is None:
            raise RuntimeError("faiss is not installed")
        faiss.omp_set_num_threads(1)
        n, dim = vectors.shape
        nlist = lists_for(n)
        ivf = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False
        )  # lists in float16, not by residual (see the module docstring)
        ivf.cp.seed = seed
        ivf.cp.niter = 10
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        sample = vectors
        if n > TRAIN_POINTS_PER_LIST * nlist:
            picked = np.random.default_rng(seed).choice(n, TRAIN_POINTS_PER_LIST * nlist, replace=False)
            sample = vectors[np.sort(picked)]
        ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove by id in O(1)
        ivf.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(n, dtype=np.int64))
        nprobe = min(nlist, max(MIN_PROBES, nlist // PROBE_SHARE))
        ivf.nprobe = nprobe
        return cls(ivf, nlist, nprobe)

    def adopt(self) -> None:
        """Called in the thread that will use the index (the event loop's): faiss's OpenMP thread count is a
        per-thread setting, and its default (every core) made each single-row add cost ~1.3 ms instead of ~30 us
        on 2 busy cores."""
        faiss = _faiss()
        if faiss is not None:
            faiss.omp_set_num_threads(1)

    def upsert(self, row: int, vector: np.ndarray, *, new: bool = False) -> None:
        """Row `row` now holds `vector` (replacing what the index had for it, unless it is a `new` row)."""
        self._one[0] = row
        if not new:
            self._ivf.remove_ids(self._one)
        self._ivf.add_with_ids(np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1), self._one)

    def upsert_rows(self, rows: np.ndarray, vectors: np.ndarray, built: int) -> None:
        """`upsert` of many rows at once (`rows` ascending int64, `vectors` theirs): rows below `built` were in
        the index and are replaced, the others are new."""
        if not len(rows):
            return
        replaced = rows[rows < built]
        if len(replaced):
            self._ivf.remove_ids(np.ascontiguousarray(replaced))
        self._ivf.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(rows))

    def remove(self, row: int) -> None:
        self._one[0] = row
        self._ivf.remove_ids(self._one)

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        """Row numbers of up to `k` rows near `vector` (approximately the nearest), best first."""
        _, rows = self._ivf.search(np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1), k)
        found = rows[0]
        return found[found >= 0]


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
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slmgw-ann")
        try:
            index = await asyncio.get_running_loop().run_in_executor(self._executor, self._build, rows)
        except asyncio.CancelledError:
            matrix.abandon_build()
            raise
        except Exception:  # a failed build leaves the exact scan; it is tried again once the scope doubles
            log.exception("building the approximate index of a semantic scope failed (%d rows)", len(rows))
            matrix.abandon_build()
            return
        matrix.install(index)
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

"""Vectors by scope: the in-process index, and the per-scope matrix it (and the Redis mirror) scans.

A lookup in a scope below `ann_min_rows` rows (32,768) is an exact scan of its matrix (one float32
matrix-vector product, ~0.25 ms at 10,000 x 256). A larger scope gets an approximate index
(`gateway.cache.semantic.ann`: faiss's IVF with product-coded lists, built in a worker thread, rebuilt each time
the scope doubles or its stale codes reach half its rows) that proposes rows, which are re-scored exactly here
(~0.1 ms at 100,000, where the exact scan takes ~5 ms); until its first build is installed, or without faiss, the
scope is scanned exactly. An exact scan of a scope of `HALF_MIN_ROWS` rows or more goes through an fp16 copy
first (`gateway.cache.semantic.half`; made when the scope reaches that size and kept up to date by every add), whose
proposals are re-scored exactly and used only when provably the float32 scan's result. A search told the query's
guard classes scans only the rows with those classes when they are few (`CLASS_SCAN_MAX_ROWS`, at most
1/`CLASS_SCAN_SHARE` of the scope): a row with other classes can never pass the lexical guard, and real prompts
spread over many classes (the largest held 6.1 % of the 10,588 routing-dev prompts and 8.2 % of the 1,250
arena-hard prompts). Scopes are bounded
(`max_rows_per_scope`, oldest replaced first) and so is the whole index (`max_vectors`, least recently used
scope first).

TTL: every vector carries the absolute time its entry expires; reads never extend it (no sliding re-arm), and
expired rows are skipped by the scan; their slots are reused oldest first once the scope is full, and a scope
nobody uses is dropped when the total bound needs room.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway.cache.semantic import ann
from gateway.cache.semantic.ann import IndexBuilds, IvfIndex
from gateway.cache.semantic.guard import stored_classes
from gateway.cache.semantic.half import HalfScan


@dataclass(frozen=True, slots=True)
class Candidate:
    """A stored prompt near the query: the exact-cache key of its entry, its similarity and guard signature."""

    entry_key: str
    similarity: float
    guard: bytes


class VectorIndex(Protocol):
    """Where the semantic layer keeps vectors. Methods raise only `gateway.cache.store.StoreError`."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def search(
        self, scope_id: str, vector: np.ndarray, k: int, classes: tuple[int, ...] | None = None
    ) -> list[Candidate]:
        """Up to `k` live rows of the scope, most similar first; given the query's guard `classes`, possibly only
        rows with those classes (`ScopeMatrix.search`)."""
        ...

    async def class_rows(self, scope_id: str, classes: tuple[int, ...]) -> tuple[int, int]:
        """The scope's rows, and those of them with these guard classes (`ScopeMatrix.class_rows`), as the next
        `search` of the scope would see them (live or expired)."""
        ...

    async def add(self, scope_id: str, entry_key: str, vector: np.ndarray, guard: bytes, ttl_ms: int) -> None:
        """Remember `vector` for the entry at `entry_key` for `ttl_ms` (replacing that key's older row)."""
        ...

    async def purge_tenant(self, tenant_ns: str) -> int:
        """Forget every scope of a tenant namespace; the number of scopes dropped."""
        ...

    def served(self, scope_id: str, entry_key: str) -> None:
        """The row of `entry_key` just served a semantic hit (`ScopeMatrix.served`; no I/O)."""
        ...


def _dot_rows_einsum(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    return np.einsum("ij,j->i", matrix, vector)


_dot_rows = getattr(np, "vecdot", _dot_rows_einsum)
"""Each row of a float32 matrix dotted with a vector, in the calling thread (a constant, chosen at import)."""


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with room for `rows` rows: its rows copied, the rest left unwritten (nothing reads past a scope's
    rows). `np.resize` filled the new rows with copies of the old ones: growing a 16,384-row matrix wrote 32 MB and
    held the event loop for ~40 ms (bench/cold_mirror.py)."""
    out = np.empty((rows, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out


RESERVE_ROWS = 4096
"""A scope's matrix doubles until it holds this many rows, then grows once to `max_rows`: the pages of an
allocation that large are mapped as rows are first written, so the rows are not copied again. Doubling, the copy into
fresh pages held the event loop 70 ms at 65,536 rows (first touch; 5.7 ms into pages already mapped)."""

SMALL_K = 16
"""Up to this many rows are picked by repeated argmax (the semantic cache asks for 4), more by argpartition."""

ANN_MIN_ROWS = 32_768
"""A scope this large gets an approximate index (`gateway.cache.semantic.ann`); 0: never."""
ANN_EXTRA = 8
"""The approximate index is asked for this many more rows than wanted (some may have expired)."""
HALF_MIN_ROWS = 1024
"""A scope this large (and below `ann_min_rows`) is scanned in fp16 first (`gateway.cache.semantic.half`), whose
proposals are re-scored exactly; a smaller one is scanned exactly (~0.03 ms)."""
HALF_EXTRA = 12
"""The fp16 scan proposes this many more rows than wanted (room for expired rows and near-ties)."""
INSTALL_ROWS = 256
"""At most this many rows written during a build are given to the index on the event loop, as it is installed
(~1.2 ms); more go in from the build's worker thread first (`IndexBuilds`): 17,000 rows took ~80 ms."""
SEARCHES_KEPT = 32
"""Queries whose result a scope remembers (`ScopeMatrix.search`)."""
CLASS_SCAN_MAX_ROWS = 1024
"""A search scans only the rows with the query's guard classes when at most this many rows have them (gathered
and re-scored exactly: ~0.1 ms for 1,024 rows at 256-d, against ~0.25 ms for a 10,000-row exact scan)..."""
CLASS_SCAN_SHARE = 8
"""... and they are at most 1/8 of the scope (else the whole scope's scan is as cheap)."""
SERVED_ROWS = 64
"""Rows that served a hit lately, re-scored by every approximate search of their scope (`ScopeMatrix.served`)."""
SEARCHES_MIN_ROWS = 1024
"""Only a scope of at least this many rows remembers searches (a smaller one is scanned in ~0.03 ms): so what is
remembered (~1 KiB a query at 256-d) stays within ~3 % of the scope's own matrix."""


class ScopeMatrix:
    """One scope's rows: a growing float32 matrix with the expiry, entry key and guard of each row, and the
    approximate index of a large scope (see the module docstring)."""

    __slots__ = (
        "dim", "max_rows", "_vectors", "_expires", "_keys", "_guards", "_rows", "_next",
        "ann_min_rows", "_ann", "_changed", "_build_at", "_version", "_searches", "half_scan", "_half", "_served",
        "_classes", "_class_rows", "_class_ids", "_class_count",
    )

    def __init__(
        self, dim: int, max_rows: int, *, ann_min_rows: int = ANN_MIN_ROWS, half_scan: bool = True
    ) -> None:
        self.dim = dim
        self.half_scan = half_scan and ann.available()
        """Whether an exact scan of `HALF_MIN_ROWS` rows or more is proposed by an fp16 scan first."""
        self._half: HalfScan | None = None
        self.max_rows = max(1, max_rows)
        self.ann_min_rows = ann_min_rows if ann_min_rows > 0 and ann.available() else 0
        self._ann: IvfIndex | None = None
        self._changed: set[int] | None = None
        """Rows written since the build under way took its rows (None: no build under way)."""
        self._build_at = self.ann_min_rows
        capacity = min(16, self.max_rows)
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._expires = np.zeros(capacity, dtype=np.float64)
        self._keys: list[str] = []
        self._guards: list[bytes] = []
        self._classes: list[tuple[int, ...] | None] = []
        """Each row's guard classes (`guard.stored_classes`; None: it can never agree)."""
        self._class_rows: dict[tuple[int, ...] | None, list] = {}
        """Guard classes -> [those classes (the one copy the rows share), rows (live or expired) with them, their
        number in `_class_ids`]: a query whose classes no row has cannot be a hit."""
        self._class_ids = np.zeros(capacity, dtype=np.int64)
        """Each row's classes, by number (`_class_rows`): the rows a class-restricted search scans."""
        self._class_count = 0
        self._rows: dict[str, int] = {}
        self._next = 0  # once full, the ring position of the oldest row
        self._version = 0
        """Bumped by every change of the rows (or of the approximate index) a search reads."""
        self._searches: OrderedDict[tuple[bytes, int], tuple[int, float, list[Candidate]]] = OrderedDict()
        """Recent searches: (query bytes, k) -> (version, valid until, result); see `search`."""
        self._served: OrderedDict[int, None] = OrderedDict()
        """Rows that served a hit lately, least recently first (`served`)."""

    def __len__(self) -> int:
        return len(self._keys)

    def class_rows(self, classes: tuple[int, ...]) -> int:
        """How many rows (live or expired) have these guard classes: only those can pass the guard for a prompt
        with them, so none means no search can give a hit."""
        found = self._class_rows.get(classes)
        return 0 if found is None else found[1]

    def _set_classes(self, row: int, guard: bytes) -> None:
        """Row `row` (an existing one, or the next one: appended) now has `guard`'s classes."""
        classes = stored_classes(guard)
        counts = self._class_rows
        if row < len(self._classes):
            old = counts[self._classes[row]]
            old[1] -= 1
            if not old[1]:
                del counts[old[0]]
        found = counts.get(classes)
        if found is None:
            self._class_count += 1
            found = counts[classes] = [classes, 0, self._class_count]
        found[1] += 1
        self._class_ids[row] = found[2]
        if row == len(self._classes):
            self._classes.append(found[0])
        else:
            self._classes[row] = found[0]

    def add(self, entry_key: str, vector: np.ndarray, guard: bytes, expires: float) -> None:
        row = self._rows.get(entry_key)
        if row is not None and self._expires[row] == expires and self._guards[row] == guard:
            return  # the same store seen again (a replica reading its own write back from the stream)
        self._version += 1
        new = False
        if row is None:
            if len(self._keys) < self.max_rows:
                row = len(self._keys)
                new = True
                if row == self._vectors.shape[0]:
                    grown = self.max_rows if row >= RESERVE_ROWS else min(self.max_rows, row * 2)
                    self._vectors = _grown(self._vectors, grown)
                    self._expires = _grown(self._expires, grown)
                    self._class_ids = _grown(self._class_ids, grown)
                self._keys.append(entry_key)
                self._guards.append(guard)
            else:  # full: overwrite the oldest row
                row = self._next
                self._next = (self._next + 1) % self.max_rows
                del self._rows[self._keys[row]]
                self._served.pop(row, None)  # another entry's row now
                self._keys[row] = entry_key
                self._guards[row] = guard
            self._rows[entry_key] = row
            self._set_classes(row, guard)
        else:
            if self._guards[row] != guard:
                self._set_classes(row, guard)
            self._guards[row] = guard
        self._vectors[row] = vector
        self._expires[row] = expires
        if self._ann is not None:
            self._ann.upsert(row, self._vectors[row])
        if self._half is not None:
            self._half.set(row, self._vectors[row])
        elif new and row + 1 == HALF_MIN_ROWS and self.half_scan:  # (off once an approximate index is installed)
            self._start_half()
        if self._changed is not None:
            self._changed.add(row)

    # -- the approximate index (built by `ann.IndexBuilds`) --------------------------------------------------
    @property
    def approximate(self) -> bool:
        """Whether lookups go through the approximate index."""
        return self._ann is not None

    def build_due(self) -> bool:
        """Whether a build should start: none is under way, and the scope reached `_build_at` rows (its first
        build, then each time it doubles) or its index is worn (`IvfIndex.worn`: rows written again)."""
        if self._changed is not None:
            return False
        return 0 < self._build_at <= len(self._keys) or (self._ann is not None and self._ann.worn())

    def start_build(self) -> np.ndarray:
        """The rows to build from (a view, read in the worker thread; rows written meanwhile are noted)."""
        self._changed = set()
        return self._vectors[: len(self._keys)]

    def outgrown(self, index: IvfIndex) -> bool:
        """Whether the scope outgrew `index` while it was built (as many rows new as it was built on: it would be
        rebuilt at once); if so it is dropped, and a build of every row is due now."""
        built = index.trained
        if sum(1 for row in self._changed or () if row >= built) < built:
            return False
        self._changed = None
        self._build_at = len(self._keys)
        return True

    def take_changed(self, most: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Up to `most` of the rows written since the build took its rows (the lowest first) and a copy of their
        vectors, no longer noted as written: for `IndexBuilds` to give them to the index in its worker thread.
        None while no more than `INSTALL_ROWS` are noted (`install` gives those on the event loop)."""
        if self._changed is None or len(self._changed) <= INSTALL_ROWS:
            return None
        rows = np.fromiter(sorted(self._changed), dtype=np.int64)[:most]
        self._changed.difference_update(rows.tolist())
        return rows, self._vectors[rows]

    def install(self, index: IvfIndex) -> None:
        """Use `index` from now on, after giving it the rows written while it was built and not given to it yet
        (`take_changed`; in one call: row by row, the ~67,000 rows a 100,000-row mirror's catch-up wrote during its
        first build held the event loop for seconds)."""
        changed = np.fromiter(sorted(self._changed or ()), dtype=np.int64)
        self._changed = None
        index.adopt()
        index.upsert_rows(changed, self._vectors[changed])
        self._ann = index
        self._half = None  # scans go through the approximate index from now on
        self.half_scan = False
        self._build_at = 2 * index.trained
        self._version += 1

    def abandon_build(self) -> None:
        self._build_at = 2 * max(len(self._keys), self._build_at)
        self._changed = None
        if self._ann is not None:
            self._ann.postpone_rebuild()

    def served(self, entry_key: str) -> None:
        """The row of `entry_key` served a semantic hit: every approximate search re-scores it from now on, with
        the index's proposals (at most `SERVED_ROWS` such rows, the least recently served out first). The index
        finds a row only when the query's probed lists hold it (~1/8 of a scope's rows): a popular answer, where
        hits are, then no longer depends on that; a first hit still does. Re-scored exactly like the proposals, so
        no search returns anything but live rows with their exact similarities."""
        row = self._rows.get(entry_key)
        if row is None:
            return
        if row in self._served:
            self._served.move_to_end(row)
            return
        self._served[row] = None
        while len(self._served) > SERVED_ROWS:
            self._served.popitem(last=False)
        self._version += 1  # searches may find it now

    def search(
        self, vector: np.ndarray, k: int, now: float, classes: tuple[int, ...] | None = None
    ) -> list[Candidate]:
        """Up to `k` live rows nearest `vector`, best first. Given the query's guard `classes`, when few rows have
        them (`CLASS_SCAN_MAX_ROWS`, `CLASS_SCAN_SHARE`), the `k` nearest of those rows only, by exact scores:
        the guard refuses every other row, and the search is no longer approximate for such a query.

        The same query again (same bytes, same `k`) gets the same result without a scan while no row changed
        (`_version`) and none of the rows the result was read from has expired since (`valid until`: the
        earliest expiry among the rows returned, and for the approximate index among every row it proposed):
        rows only leave a result by expiring or by a change, so that is the result a new scan would give. At most
        `SEARCHES_KEPT` queries are remembered in a scope of at least `SEARCHES_MIN_ROWS` rows (a popular paraphrase
        asked again and again)."""
        n = len(self._keys)
        if n == 0 or k <= 0:
            return []
        if classes is not None:
            found = self._class_rows.get(classes)
            if found is not None and found[1] <= CLASS_SCAN_MAX_ROWS and found[1] * CLASS_SCAN_SHARE <= n:
                return self._search_rows(np.flatnonzero(self._class_ids[:n] == found[2]), vector, k, now)
        if n < SEARCHES_MIN_ROWS:
            return self._search_exact(vector, k, now)[0]
        query = (vector.tobytes(), k)
        known = self._searches.get(query)
        if known is not None and known[0] == self._version and now < known[1]:
            self._searches.move_to_end(query)
            return list(known[2])
        if self._ann is not None:
            found, until = self._search_approximate(vector, k, now)
        else:
            found, until = self._search_exact(vector, k, now)
        self._searches[query] = (self._version, until, found)
        self._searches.move_to_end(query)
        while len(self._searches) > SEARCHES_KEPT:
            self._searches.popitem(last=False)
        return list(found)

    def _until(self, rows: list[int] | np.ndarray) -> float:
        """The earliest expiry among `rows` (+inf for none): a search's result holds until then."""
        return float(self._expires[rows].min()) if len(rows) else math.inf

    def _search_exact(self, vector: np.ndarray, k: int, now: float) -> tuple[list[Candidate], float]:
        n = len(self._keys)
        if self.half_scan and k <= SMALL_K and n >= HALF_MIN_ROWS:
            proven = self._search_half(vector, k, now)
            if proven is not None:
                return proven
        # vecdot (numpy >= 2.0) and einsum run in the calling thread; `@` goes to a multi-threaded BLAS, which on
        # a busy machine was 10-20x slower for this size. vecdot's SIMD loop scans 10,000 x 256 in ~0.23 ms CPU
        # here, einsum in ~0.47 ms (bench/semantic_cache.py)
        scores = _dot_rows(self._vectors[:n], vector)
        scores[self._expires[:n] <= now] = -np.inf
        if k <= SMALL_K:  # k passes of argmax: ~0.01 ms at 10,000 rows, ~0.04 ms at 100,000 (argpartition: 0.08, 1.1)
            found, picked = [], []
            for _ in range(min(k, n)):
                i = int(scores.argmax())
                score = float(scores[i])
                if not math.isfinite(score):
                    break
                found.append(Candidate(self._keys[i], score, self._guards[i]))
                picked.append(i)
                scores[i] = -np.inf
            return found, self._until(picked)
        if k < n:
            top = np.argpartition(scores, n - k)[n - k:]
        else:
            top = np.arange(n)
        top = top[np.argsort(scores[top])[::-1]]
        top = top[np.isfinite(scores[top])]
        return [Candidate(self._keys[i], float(scores[i]), self._guards[i]) for i in top], self._until(top)

    def _start_half(self) -> None:
        """The fp16 copy of every row so far, in one call (~3 ms at 1,024 rows), kept up to date by `add` from now
        on. Made when the scope reaches `HALF_MIN_ROWS` rows, not at its first search: built then, the copy of a
        20,000-row mirror just caught up (a restart) held the event loop for ~0.2 s in that search."""
        self._half = HalfScan(self.dim)
        self._half.extend(self._vectors[: len(self._keys)])

    def _search_half(self, vector: np.ndarray, k: int, now: float) -> tuple[list[Candidate], float] | None:
        """The exact scan's result through the fp16 scan's proposals, or None where that is not proven (then the
        caller scans exactly): the k best live proposals by exact score (ties: the lower row first, as argmax)
        are the exact scan's when the k-th scores above every unproposed row's fp16 score plus the fp16 error."""
        half = self._half  # made by `add` at `HALF_MIN_ROWS` rows, so there for every scope this large
        if half is None or not half.usable:
            return None
        rows, floor = half.propose(vector, k + HALF_EXTRA)
        live = rows[self._expires[rows] > now]
        if len(live) < k:
            return None
        scores = _dot_rows(self._vectors[live], vector)  # exact, as the full scan computes each row
        order = np.lexsort((live, -scores))[:k]
        kth = float(scores[order[-1]])
        if not kth > floor + half.error(vector):
            return None
        found = [Candidate(self._keys[int(live[i])], float(scores[i]), self._guards[int(live[i])]) for i in order]
        return found, self._until(live[order])

    def _search_rows(self, rows: np.ndarray, vector: np.ndarray, k: int, now: float) -> list[Candidate]:
        """The `k` live rows of `rows` nearest `vector`, by exact scores (ties: the lower row first)."""
        rows = rows[self._expires[rows] > now]
        if not len(rows):
            return []
        scores = _dot_rows(self._vectors[rows], vector)
        order = np.lexsort((rows, -scores))[:k]
        return [Candidate(self._keys[int(rows[i])], float(scores[i]), self._guards[int(rows[i])]) for i in order]

    def _search_approximate(self, vector: np.ndarray, k: int, now: float) -> tuple[list[Candidate], float]:
        assert self._ann is not None
        rows = self._ann.search(vector, k + ANN_EXTRA)
        if self._served:
            rows = np.union1d(rows, np.fromiter(self._served, dtype=np.int64, count=len(self._served)))
        expired = self._expires[rows] <= now
        if expired.any():  # hidden by the index from now on (a row written again is shown again)
            for row in rows[expired]:
                self._ann.remove(int(row))
                self._served.pop(int(row), None)
            self._version += 1  # the index proposes other rows from now on
            rows = rows[~expired]
        if not len(rows):
            return [], math.inf
        # exact, from the matrix (the index only proposes rows); ties: the lower row first, as the exact scan's argmax
        return self._search_rows(rows, vector, k, now), self._until(rows)

    def live(self, now: float) -> int:
        return int((self._expires[: len(self._keys)] > now).sum())


class MemoryVectorIndex:
    """The in-process index: a `ScopeMatrix` per scope, bounded per scope and in total."""

    def __init__(
        self,
        dim: int,
        *,
        max_rows_per_scope: int = 20_000,
        max_vectors: int = 200_000,
        ann_min_rows: int = ANN_MIN_ROWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dim = dim
        self.max_rows_per_scope = max_rows_per_scope
        self.max_vectors = max_vectors
        self.ann_min_rows = ann_min_rows
        self.builds = IndexBuilds()
        self._clock = clock
        self._scopes: OrderedDict[str, ScopeMatrix] = OrderedDict()
        self._total = 0

    def __len__(self) -> int:
        return self._total

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self.builds.close()
        self._scopes.clear()
        self._total = 0

    async def search(
        self, scope_id: str, vector: np.ndarray, k: int, classes: tuple[int, ...] | None = None
    ) -> list[Candidate]:
        matrix = self._scopes.get(scope_id)
        if matrix is None:
            return []
        self._scopes.move_to_end(scope_id)
        return matrix.search(vector, k, self._clock(), classes)

    async def class_rows(self, scope_id: str, classes: tuple[int, ...]) -> tuple[int, int]:
        matrix = self._scopes.get(scope_id)
        return (0, 0) if matrix is None else (len(matrix), matrix.class_rows(classes))

    async def add(self, scope_id: str, entry_key: str, vector: np.ndarray, guard: bytes, ttl_ms: int) -> None:
        matrix = self._scopes.get(scope_id)
        if matrix is None:
            matrix = self._scopes[scope_id] = ScopeMatrix(
                self.dim, self.max_rows_per_scope, ann_min_rows=self.ann_min_rows
            )
        self._scopes.move_to_end(scope_id)
        before = len(matrix)
        matrix.add(entry_key, vector, guard, self._clock() + ttl_ms / 1000.0)
        self.builds.after_add(matrix)
        self._total += len(matrix) - before
        while self._total > self.max_vectors and len(self._scopes) > 1:
            _, evicted = self._scopes.popitem(last=False)
            self._total -= len(evicted)

    def served(self, scope_id: str, entry_key: str) -> None:
        matrix = self._scopes.get(scope_id)
        if matrix is not None:
            matrix.served(entry_key)

    async def purge_tenant(self, tenant_ns: str) -> int:
        doomed = [scope_id for scope_id in self._scopes if scope_id.startswith(tenant_ns + ":")]
        for scope_id in doomed:
            self._total -= len(self._scopes.pop(scope_id))
        return len(doomed)

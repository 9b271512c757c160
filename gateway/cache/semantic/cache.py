"""`SemanticCache`: the semantic layer that sits after an exact-cache miss.

    found = await semantic.lookup(scope, text)          # SemanticHit | SemanticMiss
    if isinstance(found, SemanticHit): replay decode_entry(found.value)   # `x-gateway-cache: semantic-hit`
    ... answer normally, store the entry under its exact key, then:
    await semantic.store(scope, text, exact_key, ttl_ms, found)          # reuses the miss's embedding
    semantic.store_soon(scope, text, exact_key, ttl_ms, found)           # the same, not awaited (the request path)

Entries stay in the exact cache store (`CacheStore`), under their exact keys; the vector index holds only the
vector, the entry key, the entry's expiry and a guard signature. A hit needs, in order: a scope (the request
has one), few enough turns, a short enough prompt, a stored vector in the scope at or above the calibrated
threshold, the lexical guard's agreement, and the entry still in the exact store. Every failure of the
embedder, the index or the store, and every lookup that overruns its deadline, is a miss (`error` /
`timeout`), never an exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import numpy as np

from gateway.cache.semantic.guard import GuardSignature, LexicalGuard, decode_signature, encode_signature
from gateway.cache.semantic.index import VectorIndex
from gateway.cache.semantic.prompts import PromptMemo
from gateway.cache.semantic.recent import RecentEntries
from gateway.cache.semantic.scope import SemanticScope
from gateway.cache.store import CacheStore
from gateway.embedding.base import Embedder
from gateway.tasks import cancel_and_wait

T = TypeVar("T")


class SemanticObserver(Protocol):
    """What the cache reports (`gateway.cache.semantic.metrics.SemanticMetrics` implements it)."""

    def hit(self, similarity: float) -> None: ...

    def miss(self, reason: str) -> None: ...

    def guard_refused(self, check: str) -> None: ...

    def embedded(self, seconds: float) -> None: ...


class _Silent:
    def hit(self, similarity: float) -> None: ...

    def miss(self, reason: str) -> None: ...

    def guard_refused(self, check: str) -> None: ...

    def embedded(self, seconds: float) -> None: ...


async def _uncancelled(timeout: asyncio.Timeout, operation: Awaitable[T]) -> T:
    """Await a store or index operation with the deadline's timer off: it is bounded by its own socket timeout
    (`cache.timeout_seconds`), never cancelled, because redis-py drops a connection whose command was cancelled
    (its reply unread). Each lookup or index write over the deadline then cost a new connection (connect,
    handshake, `importlib.metadata` for the client's name): under overload ~15 % of the gateway's CPU, which
    made the overload worse. (Running it as a task of its own instead put it behind everything else in the event
    loop's queue: under overload every lookup then missed.) The timer is back on afterwards."""
    when = timeout.when()
    timeout.reschedule(None)
    try:
        return await operation
    finally:
        timeout.reschedule(when)


def _written(done: asyncio.Future[bool], batch: asyncio.Future[None]) -> None:
    """`store_soon`'s outcome once the index's write batch is back: True when it was written."""
    if not done.done():
        done.set_result(not batch.cancelled() and batch.exception() is None)


INLINE_CHARS = 256
"""Prompts up to this long are embedded in the event loop's thread: measured (bench/semantic_cache.py) at
~0.05 ms p50 / 0.2 ms p99 CPU, less than the hop to a worker thread and back costs on a busy machine (it added
~2.6 ms wall p50 at load 9 on 2 cores); longer ones (up to `max_chars`, 1.7 ms p99 CPU) go to the executor."""


@dataclass(frozen=True, slots=True)
class SemanticHit:
    entry_key: str
    similarity: float
    value: bytes
    """The stored entry's bytes, as the exact store holds them (decode with `gateway.cache.entry.decode_entry`)."""


@dataclass(frozen=True, slots=True)
class SemanticMiss:
    reason: str
    """One of `gateway.cache.semantic.metrics.REJECT_REASONS`."""
    best: float | None = None
    """Similarity of the best candidate, when there was one."""
    vector: np.ndarray | None = None
    signature: GuardSignature | None = None
    """The query's embedding and guard signature, kept so `store` need not compute them again. A miss decided
    before the embedding (`empty`, `classes`, or a timeout or index failure then) has the signature only: `store`
    embeds the prompt. A miss with neither is not indexed (no scope, or the embedder failed)."""


@dataclass(frozen=True, slots=True)
class SemanticSettings:
    threshold: float
    """The calibrated similarity threshold of the embedder (see `gateway.cache.semantic.calibrate`)."""
    max_turns: int = 1
    """Semantic matches only for conversations of at most this many user turns."""
    max_chars: int = 2000
    """Longer prompts are never matched semantically (nor embedded)."""
    candidates: int = 4
    """How many nearest rows above the threshold the guard may look at."""
    deadline_seconds: float = 0.02
    """A lookup or store that takes longer is abandoned as a miss."""


class SemanticCache:
    """Semantic lookup and store over a `VectorIndex`, with entries in a `CacheStore`."""

    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        store: CacheStore,
        settings: SemanticSettings,
        *,
        guard: LexicalGuard | None = None,
        observer: SemanticObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
        executor: Executor | None = None,
        inline_chars: int = INLINE_CHARS,
        entry_reuse_seconds: float = 0.0,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.entries = store
        self.settings = settings
        self.guard = guard or LexicalGuard()
        self.observer: SemanticObserver = observer or _Silent()
        self._clock = clock
        self.executor = executor
        """Where prompts longer than `inline_chars` are embedded: a thread off the event loop, so the deadline
        holds for a slow embedding (None: always in the calling thread)."""
        self.inline_chars = inline_chars
        self.recent = RecentEntries(entry_reuse_seconds)
        """Entries hits read lately, reused for `entry_reuse_seconds` without a store read (0: always read; see
        `gateway.cache.semantic.recent` for the freshness bound)."""
        self._indexing: set[asyncio.Future[bool]] = set()
        """`store_soon`'s writes still under way (held so they are not collected; cancelled by `close`)."""
        self.prompts = PromptMemo()
        """Embeddings and guard signatures of prompts looked up lately (pure functions of the text)."""

    async def start(self) -> None:
        await self.index.start()

    async def close(self) -> None:
        await cancel_and_wait(*self._indexing)
        await self.index.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    def _miss(self, reason: str, **extra: object) -> SemanticMiss:
        self.observer.miss(reason)
        return SemanticMiss(reason, **extra)  # type: ignore[arg-type]

    def _embed_timed(self, text: str) -> tuple[np.ndarray, float]:
        started = self._clock()
        vector = self.embedder.embed([text])[0]
        return vector, self._clock() - started

    async def _embed(self, text: str) -> np.ndarray:
        if self.executor is None or len(text) <= self.inline_chars:
            vector, seconds = self._embed_timed(text)
        else:
            loop = asyncio.get_running_loop()
            vector, seconds = await loop.run_in_executor(self.executor, self._embed_timed, text)
        self.observer.embedded(seconds)
        return vector

    async def lookup(self, scope: SemanticScope | None, text: str) -> SemanticHit | SemanticMiss:
        """A stored answer to a paraphrase of `text` in `scope`, or why there is none."""
        if scope is None:
            return self._miss("scope")
        if scope.turns > self.settings.max_turns:
            return self._miss("turns")
        if len(text) > self.settings.max_chars:
            return self._miss("length")
        deadline = asyncio.get_running_loop().time() + self.settings.deadline_seconds
        signature = self.prompts.signature(text) or self.guard.signature(text)
        try:  # no stored prompt with the same guard classes: no candidate could pass the guard (no embedding yet:
            # `store` embeds the prompt once its answer is stored, after the answer went out)
            async with asyncio.timeout_at(deadline):
                rows, agreeable = await self.index.class_rows(scope.scope_id, signature.classes)
        except TimeoutError:
            return self._miss("timeout", signature=signature)
        except Exception:  # fail open: the index broke
            return self._miss("error", signature=signature)
        if not agreeable:
            return self._miss("classes" if rows else "empty", signature=signature)
        vector = self.prompts.vector(text)
        if vector is None:
            try:
                async with asyncio.timeout_at(deadline):
                    vector = await self._embed(text)
            except TimeoutError:
                return self._miss("timeout", signature=signature)
            except Exception:  # fail open: the embedder broke; the request goes on as a miss (not indexed)
                return self._miss("error")
            self.prompts.remember(text, vector, signature)
        try:
            async with asyncio.timeout_at(deadline) as timeout:
                return await self._lookup(scope, vector, signature, timeout, deadline)
        except TimeoutError:  # the embedding is kept: `store` can index the prompt once its answer is stored
            return self._miss("timeout", vector=vector, signature=signature)
        except Exception:  # fail open: the index or the store broke
            return self._miss("error", vector=vector, signature=signature)

    async def _lookup(
        self, scope: SemanticScope, vector: np.ndarray, signature: GuardSignature, timeout: asyncio.Timeout,
        deadline: float,
    ) -> SemanticHit | SemanticMiss:
        if not vector.any():
            return self._miss("empty", vector=vector, signature=signature)
        found = await self.index.search(scope.scope_id, vector, self.settings.candidates, signature.classes)
        if not found:
            return self._miss("empty", vector=vector, signature=signature)
        best = found[0].similarity
        above = [c for c in found if c.similarity >= self.settings.threshold]
        if not above:
            return self._miss("threshold", best=best, vector=vector, signature=signature)
        refused = None
        for candidate in above:
            stored = decode_signature(candidate.guard)
            check = "version" if stored is None else self.guard.disagreement(signature, stored)
            if check is not None:
                self.observer.guard_refused(check)
                refused = refused or check
                continue
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError
            # a copy read lately, unless the store is known to be down (`RedisStore.up` False after a failure, e.g.
            # this request's exact lookup): then the lookup fails open as it did without the copy
            reuse = getattr(self.entries, "up", None) is not False
            value = self.recent.get(candidate.entry_key, self._clock()) if reuse else None
            if value is None:
                # a read that has begun is waited for (bounded by the store's socket timeout): its answer, once
                # here, is worth more than a miss (under overload, dropping late reads turned nearly every lookup
                # into an upstream call)
                value = await _uncancelled(timeout, self.entries.get(candidate.entry_key))
                if value is None:
                    continue
                self.recent.put(candidate.entry_key, value, self._clock())
            self.index.served(scope.scope_id, candidate.entry_key)
            self.observer.hit(candidate.similarity)
            return SemanticHit(candidate.entry_key, candidate.similarity, value)
        reason = "guard" if refused is not None else "entry"
        return self._miss(reason, best=best, vector=vector, signature=signature)

    async def store(
        self,
        scope: SemanticScope | None,
        text: str,
        entry_key: str,
        ttl_ms: int,
        miss: SemanticMiss | None = None,
    ) -> bool:
        """Index the entry just stored at `entry_key` (same TTL); False when it was not indexed."""
        if not self._indexable(scope, text):
            return False
        assert scope is not None
        try:
            async with asyncio.timeout(self.settings.deadline_seconds) as timeout:
                vector = miss.vector if miss is not None and miss.vector is not None else await self._embed(text)
                if not vector.any():
                    return False
                guard = self._stored_signature(text, miss)
                await _uncancelled(timeout, self.index.add(scope.scope_id, entry_key, vector, guard, ttl_ms))
        except Exception:  # a failed index write only costs future hits
            return False
        return True

    def store_soon(
        self, scope: SemanticScope | None, text: str, entry_key: str, ttl_ms: int, miss: SemanticMiss | None = None
    ) -> asyncio.Future[bool]:
        """`store` without waiting for the index write (a round trip to Redis), so the answer that was just stored
        is not held up by it; the future says what `store` would. When the index queues writes itself
        (`RedisVectorIndex.add_soon`) and the embedding is known or done inline, everything before the write is
        done here and now (the row is in this replica's mirror on return; no task, no timer per store: the write
        batch is bounded by the index's socket timeout, as `store`'s index write); else `store` in a task of its
        own, whose first step (before any await) puts the row in the mirror."""
        loop = asyncio.get_running_loop()
        add_soon = getattr(self.index, "add_soon", None)
        known = getattr(miss, "vector", None) is not None  # not a miss (say a hit): False below, as `store`
        if add_soon is None or not (known or self.executor is None or len(text) <= self.inline_chars):
            task = loop.create_task(self.store(scope, text, entry_key, ttl_ms, miss))
            self._indexing.add(task)
            task.add_done_callback(self._indexing.discard)
            return task
        done: asyncio.Future[bool] = loop.create_future()
        try:
            row = self._row(scope, text, miss)
            written = add_soon(scope.scope_id, entry_key, row[0], row[1], ttl_ms) if row is not None else None
        except Exception:  # a failed index write only costs future hits
            written = None
        if written is None:
            done.set_result(False)
            return done
        self._indexing.add(done)
        done.add_done_callback(self._indexing.discard)
        written.add_done_callback(partial(_written, done))
        return done

    def _row(self, scope: SemanticScope | None, text: str, miss: SemanticMiss | None) -> tuple[np.ndarray, bytes] | None:
        """`store`'s vector and encoded signature, computed in this thread (None: not indexed, as `store`)."""
        if not self._indexable(scope, text):
            return None
        vector = miss.vector if miss is not None and miss.vector is not None else None
        if vector is None:
            vector, seconds = self._embed_timed(text)
            self.observer.embedded(seconds)
        if not vector.any():
            return None
        return vector, self._stored_signature(text, miss)

    def _indexable(self, scope: SemanticScope | None, text: str) -> bool:
        """Whether a prompt is ever indexed: a scope, few enough turns, short enough (what `lookup` requires)."""
        return scope is not None and scope.turns <= self.settings.max_turns and len(text) <= self.settings.max_chars

    def _stored_signature(self, text: str, miss: SemanticMiss | None) -> bytes:
        """The encoded guard signature an index row keeps: the miss's, else computed."""
        signature = miss.signature if miss is not None and miss.signature is not None else None
        return encode_signature(signature or self.guard.signature(text))

"""The shared vector index: vectors in Redis next to the entries, scanned in a per-replica mirror.

Each scope is one Redis stream, `{prefix}:{tenant namespace}:sem:{scope digest}` (so the tenant purge of
`gateway.cache.semantic.purge` removes it with the tenant's entries). Every stored vector is one stream entry
`{k: entry key, v: float32 bytes, g: guard signature, x: expiry in Unix ms}`, appended with `XADD ... MAXLEN ~`
(the scope bound); the stream's own TTL is pushed out to the newest entry's (`PEXPIRE NX` then `PEXPIRE GT`),
so an idle scope disappears by itself. Reads never touch a TTL.

A lookup reads what was appended since this replica last looked (`XRANGE key (last-id +`, pipelined with
`EXISTS`) into an in-process `ScopeMatrix` and scans that, so the steady-state cost is one round trip plus
the local scan, and every replica sees every other's entries on its next lookup. With `sync_interval_seconds`
(the gateway: `cache.semantic.sync_interval_seconds`, 0.1) a mirror caught up that recently is scanned without
the round trip, and a warm mirror due for a catch-up is scanned as it is while the catch-up runs in the background
(a lookup never waits for a round trip once the mirror is warm): other replicas' entries (and purges) then reach it
within the interval plus `sync_linger_seconds` plus a round trip, its own adds at once. Catching up a large scope is
done by a background task the lookup only waits for up to its deadline (a first lookup on a cold replica may
miss). A stream that vanished (purged, expired) empties the mirror.

Index writes carry the catch-up (see `_write`): one `MULTI` per batch reads, for every warm mirror it writes to,
what the stream gained since the mirror's last id (`EXISTS`, `XRANGE`), then appends the batch's rows, so the mirror
is caught up to its own new rows without reading them back, and its next catch-up is due an interval later. A warm
mirror's catch-up waits up to `sync_linger_seconds` (0.02) for an index write to ride on, or for other scopes'
catch-ups to share its round trip (a semantic miss's lookup is followed by its write within milliseconds: one round
trip instead of two; over many scopes, several catch-ups per round trip).

Catch-ups and writes go through a `gateway.resp.PipelinedRedis` connection of the index's own (hiredis; a
fraction of redis-py's CPU per command), under the same breaker and timeout as the redis-py link (the purge's).

Redis Stack's vector search (FT.SEARCH KNN) is not used: this machine's Redis (7.0, no modules) cannot run it,
and the mirror needs nothing but streams. Scale: a scope costs `dim * 4` bytes per vector in Redis and in every
replica's memory (256-d: ~1 KiB; 20,000 vectors ~21 MB per replica), 1.5 times that in a mirror large enough for an
approximate index (`ScopeMatrix`: from 32,768 rows), whose lookups then cost ~0.1 ms at 100,000 rows instead of an
exact scan's ~5 ms.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from redis.exceptions import RedisError

from gateway.cache.breaker import Breaker
from gateway.cache.semantic.ann import IndexBuilds
from gateway.cache.semantic.index import ANN_MIN_ROWS, Candidate, ScopeMatrix
from gateway.cache.semantic.purge import purge_keys
from gateway.cache.semantic.write_batch import WRITE_LINGER, WriteBatches
from gateway.cache.store import StoreError
from gateway.redis_link import RedisLink
from gateway.resp import PipelinedRedis, ReplyError

SYNC_BATCH = 256
"""Stream entries per catch-up round trip (~270 KB at 256-d): small enough to finish within a socket timeout."""
OWN_IDS = 4 * SYNC_BATCH
"""At most this many own stream ids are remembered per mirror (beyond, own rows are re-read and de-duplicated)."""
SYNC_LINGER = 0.02
"""Seconds a warm mirror's catch-up waits for an index write (or other scopes' catch-ups) to share its round trip."""


def _stream_id(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _later(a: str, b: str) -> str:
    """The later of two stream ids (`ms-seq`)."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return a if (int(ams), int(aseq or 0)) >= (int(bms), int(bseq or 0)) else b


def _entries(reply: object) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """An `XRANGE` reply as read by hiredis (`[id, [field, value, ...]]` each) as redis-py gives it."""
    return [(entry[0], dict(zip(entry[1][::2], entry[1][1::2], strict=True))) for entry in reply or ()]  # type: ignore[union-attr]


def _seen(future: asyncio.Future[bool]) -> None:
    """Mark a catch-up's failure as seen (its sync task, if still waiting, got it)."""
    if not future.cancelled():
        future.exception()


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a sync's failure as seen (the lookup that awaited it, if any, has already turned it into a miss)."""
    if not task.cancelled():
        task.exception()


class _Rows:
    """The rows of every mirror of an index, kept by its mirrors (`_Mirror.add`, `reset`, `drop`): a new mirror
    makes room without summing every mirror's rows (with 100,000 small scopes that sum took ~36 ms a new scope)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


class _Mirror:
    __slots__ = ("matrix", "rows", "last_id", "syncing", "synced_at", "added_at", "own", "checked")

    def __init__(self, dim: int, max_rows: int, ann_min_rows: int, rows: _Rows) -> None:
        self.matrix = ScopeMatrix(dim, max_rows, ann_min_rows=ann_min_rows)
        self.rows: _Rows | None = rows
        """The index's count this mirror's rows are in (None once dropped: a task still holding it counts no more)."""
        self.last_id = "0-0"
        self.syncing: asyncio.Task[None] | None = None
        self.synced_at = -math.inf
        """`time.monotonic()` when the last successful catch-up started."""
        self.added_at = -math.inf
        """`time.monotonic()` of this replica's last add to the scope."""
        self.checked = False
        """Made current by a lookup's `class_rows` just now: its `search` (next) needs no catch-up of its own."""
        self.own: set[str] = set()
        """Stream ids of this replica's rows written without the catch-up: already in the matrix, skipped when a
        catch-up reads them (bounded by `OWN_IDS`)."""

    def add(self, entry_key: str, vector: np.ndarray, guard: bytes, expires: float) -> None:
        """`ScopeMatrix.add`, counted."""
        before = len(self.matrix)
        self.matrix.add(entry_key, vector, guard, expires)
        if self.rows is not None:
            self.rows.total += len(self.matrix) - before

    def reset(self) -> None:
        """Start over from the stream's beginning (it vanished: purged or expired), with an empty matrix."""
        if self.rows is not None:
            self.rows.total -= len(self.matrix)
        old = self.matrix
        self.matrix = ScopeMatrix(old.dim, old.max_rows, ann_min_rows=old.ann_min_rows)
        self.last_id = "0-0"
        self.own.clear()

    def drop(self) -> None:
        """Out of the index: its rows are no longer counted, its catch-up is cancelled."""
        if self.rows is not None:
            self.rows.total -= len(self.matrix)
            self.rows = None
        if self.syncing is not None:
            self.syncing.cancel()


class RedisVectorIndex:
    """`VectorIndex` on Redis streams with in-process mirrors (see the module docstring)."""

    def __init__(
        self,
        url: str,
        dim: int,
        *,
        prefix: str,
        max_rows_per_scope: int = 20_000,
        max_mirrored_vectors: int = 200_000,
        timeout_seconds: float = 0.05,
        max_connections: int = 32,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.time,
        sync_interval_seconds: float = 0.0,
        ann_min_rows: int = ANN_MIN_ROWS,
        write_linger_seconds: float = WRITE_LINGER,
        sync_linger_seconds: float = SYNC_LINGER,
    ) -> None:
        self.dim = dim
        self.ann_min_rows = ann_min_rows
        self.builds = IndexBuilds()
        """Approximate indexes of large mirrors (`gateway.cache.semantic.ann`), built in a worker thread."""
        self.prefix = prefix
        self.max_rows_per_scope = max_rows_per_scope
        self.max_mirrored_vectors = max_mirrored_vectors
        self.link: RedisLink[StoreError] = RedisLink(
            url, timeout_seconds=timeout_seconds, max_connections=max_connections, breaker=breaker or Breaker(),
            error=StoreError, what="vector index",
        )
        self.breaker = self.link.breaker
        self.resp = PipelinedRedis(url, timeout=timeout_seconds)
        """Catch-ups and index writes go through this connection (hiredis, pipelined: ~0.04 ms of CPU a command
        against ~0.13-0.16 ms through redis-py), under the link's breaker and timeout; the purge stays on redis-py."""
        self._clock = clock
        self.sync_interval = sync_interval_seconds
        """A mirror caught up less than this long ago is scanned without a round trip (this replica's own adds
        are in it at once; other replicas' reach it within the interval)."""
        self._mirrors: OrderedDict[str, _Mirror] = OrderedDict()
        self._rows = _Rows()
        """Rows in all mirrors, against `max_mirrored_vectors`."""
        self._writes: WriteBatches[tuple[str, dict[str, object], int] | None] = WriteBatches(
            self._write, linger_seconds=write_linger_seconds)
        """Index writes issued within `write_linger_seconds` of each other go to Redis in one pipeline."""
        self.sync_linger = sync_linger_seconds
        """How long a warm mirror's catch-up waits to share a round trip (with an index write or other catch-ups)."""
        self._catchups: dict[str, asyncio.Future[bool]] = {}
        """Warm mirrors' catch-ups waiting for the next `_write` (True once caught up, False if more is behind)."""
        self._catchup_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:  # the URL may carry a password
        return "RedisVectorIndex()"

    def key(self, scope_id: str) -> str:
        return f"{self.prefix}:{scope_id}"

    async def start(self) -> None:
        self.link.open()

    async def close(self) -> None:
        if self._catchup_timer is not None:
            self._catchup_timer.cancel()
            self._catchup_timer = None
        for future in self._catchups.values():
            future.cancel()
        self._catchups.clear()
        await self._writes.close()
        await self.builds.close()
        for mirror in self._mirrors.values():
            mirror.drop()
        self._mirrors.clear()
        await self.resp.close()
        await self.link.close()

    def _mirror(self, scope_id: str) -> _Mirror:
        mirror = self._mirrors.get(scope_id)
        if mirror is not None:
            self._mirrors.move_to_end(scope_id)
            return mirror
        # a new mirror: make room first (least recently used scopes go; checked here only, not per lookup)
        while self._mirrors and self._rows.total >= self.max_mirrored_vectors:
            self._mirrors.popitem(last=False)[1].drop()
        mirror = self._mirrors[scope_id] = _Mirror(self.dim, self.max_rows_per_scope, self.ann_min_rows, self._rows)
        return mirror

    async def _sync(self, scope_id: str, mirror: _Mirror) -> None:
        """Append what the stream gained since `mirror.last_id` (in batches), or reset a vanished stream. A warm
        mirror first waits up to `sync_linger` to share a round trip (`_catch_up_soon`)."""
        if self.sync_interval > 0 and self.sync_linger > 0 and mirror.synced_at != -math.inf:
            if await self._catch_up_soon(scope_id):
                return
        key = self.key(scope_id)
        started = time.monotonic()
        while True:
            exists, rows = await self._read(self._catch_up_commands(key, mirror.last_id))
            rows = _entries(rows)
            if not exists:
                if mirror.added_at >= started:  # added here meanwhile: the stream exists now; look again next time
                    return
                if len(mirror.matrix) or mirror.last_id != "0-0":
                    mirror.reset()
                mirror.synced_at = started
                return
            for stream_id, fields in rows:
                sid = _stream_id(stream_id)
                if sid in mirror.own:  # this replica's row, in the matrix since its add
                    mirror.own.discard(sid)
                else:
                    self._mirror_row(mirror, fields)
                mirror.last_id = _later(mirror.last_id, sid)  # a write may have read further
            self.builds.after_add(mirror.matrix)
            if len(rows) < SYNC_BATCH:
                mirror.synced_at = started
                return

    @staticmethod
    def _catch_up_commands(key: str, last_id: str) -> list[tuple[object, ...]]:
        return [("EXISTS", key), ("XRANGE", key, f"({last_id}", "+", "COUNT", SYNC_BATCH)]

    async def _read(self, commands: list[tuple[object, ...]]) -> list[object]:
        """Read-only commands on `resp` (`StoreError` when they fail; refused without a network call while the
        breaker is open); retried once at once when the connection was lost, never after a timeout."""
        self.link.client("get")  # started, and the breaker allows it
        try:
            try:
                replies = await self.resp.execute_many(commands)
            except TimeoutError:
                raise
            except ConnectionError:
                replies = await self.resp.execute_many(commands)
        except (ReplyError, OSError) as exc:  # ConnectionError and TimeoutError are OSErrors: they open the breaker
            raise self.link.failed("get", exc) from None
        self.link.ok()
        return replies

    async def search(
        self, scope_id: str, vector: np.ndarray, k: int, classes: tuple[int, ...] | None = None
    ) -> list[Candidate]:
        return (await self._current(scope_id)).search(vector, k, self._clock(), classes)

    async def class_rows(self, scope_id: str, classes: tuple[int, ...]) -> tuple[int, int]:
        matrix = await self._current(scope_id, check=True)
        return len(matrix), matrix.class_rows(classes)

    async def _current(self, scope_id: str, *, check: bool = False) -> ScopeMatrix:
        """The scope's mirror matrix, as a lookup scans it: caught up first when cold (or with interval 0), else as
        it is while a due catch-up runs in the background. A `search` right after the lookup's `class_rows`
        (`check`) scans the mirror that call made current (with interval 0: one catch-up per lookup, not two)."""
        mirror = self._mirror(scope_id)
        idle = mirror.syncing is None or mirror.syncing.done()
        checked, mirror.checked = mirror.checked, False
        if checked and not check and idle and mirror.synced_at != -math.inf:
            return mirror.matrix
        if idle and time.monotonic() - mirror.synced_at >= self.sync_interval:
            mirror.syncing = asyncio.create_task(self._sync(scope_id, mirror))
            mirror.syncing.add_done_callback(_retrieve)
            idle = False
        if not idle and (self.sync_interval <= 0 or mirror.synced_at == -math.inf):
            # a cold mirror (or one that must be current: interval 0) waits for its catch-up; a warm one is scanned
            # as it is while the catch-up runs, so a steady-state lookup never waits for a round trip
            assert mirror.syncing is not None
            await asyncio.shield(mirror.syncing)  # the caller's deadline may give up; the catch-up goes on
        mirror.checked = check
        return mirror.matrix

    async def add(self, scope_id: str, entry_key: str, vector: np.ndarray, guard: bytes, ttl_ms: int) -> None:
        await asyncio.shield(self.add_soon(scope_id, entry_key, vector, guard, ttl_ms))  # a waiter giving up
        # leaves the batch

    def add_soon(self, scope_id: str, entry_key: str, vector: np.ndarray, guard: bytes,
                 ttl_ms: int) -> asyncio.Future[None]:
        """`add` without a coroutine: the row is in this replica's mirror on return, its `XADD` queued in the next
        write batch; the batch's future (shared by every row of the batch: never cancel it), which fails with the
        write's `StoreError`. Bounded by the connection's timeout, as `add`."""
        ttl_ms = max(1, ttl_ms)
        expires_ms = int(self._clock() * 1000) + ttl_ms
        fields = {
            "k": entry_key,
            "v": np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
            "g": guard,
            "x": str(expires_ms),
        }
        mirror = self._mirrors.get(scope_id)
        if mirror is not None:  # visible here at once, before the write (which catches a warm mirror up past its
            # own rows; a cold one's catch-up reads them again: same key); a failed write leaves it here only,
            # pointing at an entry that was stored
            mirror.added_at = time.monotonic()
            mirror.add(entry_key, np.asarray(vector, dtype=np.float32), guard, expires_ms / 1000.0)
            self.builds.after_add(mirror.matrix)
        return self._writes.queue((scope_id, fields, ttl_ms))

    def _catch_up_soon(self, scope_id: str) -> asyncio.Future[bool]:
        """The scope's catch-up in the next `_write` (an index write's, or one of catch-ups only after
        `sync_linger`): True once caught up, False when more than `SYNC_BATCH` rows were behind."""
        future = self._catchups.get(scope_id)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._catchups[scope_id] = loop.create_future()
            future.add_done_callback(_seen)
            if self._catchup_timer is None:
                self._catchup_timer = loop.call_later(self.sync_linger, self._catch_up_now)
        return future

    def _catch_up_now(self) -> None:
        """A batch without rows for the catch-ups waiting (behind the batch in flight, if any: one at a time)."""
        self._catchup_timer = None
        if self._catchups:
            self._writes.queue(None)

    async def _write(self, queued: list[tuple[str, dict[str, object], int] | None]) -> None:
        """One `MULTI`: for every catch-up waiting (`_catch_up_soon`) and every warm mirror of a written scope due
        for one, `EXISTS` and `XRANGE` from the mirror's last id; then every row's `XADD ... MAXLEN ~`, then each
        stream's TTL pushed out once (NX, then GT). Atomic, so a mirror caught up before its own rows has them all
        up to the last of them, without reading them back (`None` items: catch-ups only, see `_catch_up_now`).
        Without a catch-up, a plain pipeline; the rows' ids go into their mirror's `own`, skipped when read. Without
        rows (catch-ups only): the `EXISTS` / `XRANGE` pairs on `resp`, the cheap connection, not atomic (as `_sync`)."""
        batch = [item for item in queued if item is not None]
        waiting, self._catchups = self._catchups, {}
        if self._catchup_timer is not None:
            self._catchup_timer.cancel()
            self._catchup_timer = None
        started = time.monotonic()
        catching: dict[str, tuple[_Mirror, str]] = {}  # scope -> (its mirror, read from)
        for scope_id in [*waiting, *(item[0] for item in batch)]:
            mirror = self._mirrors.get(scope_id)
            if (mirror is not None and mirror.synced_at != -math.inf and scope_id not in catching
                    and (scope_id in waiting or started - mirror.synced_at >= self.sync_interval)):
                # a cold mirror is caught up by its own sync; one caught up within the interval is not read
                # again for a write (its own rows are noted in `own` instead)
                catching[scope_id] = (mirror, mirror.last_id)
        operation = "set" if batch else "get"
        ttls: dict[str, int] = {}
        try:
            if not batch:  # catch-ups only: read-only, on the cheap connection (no MULTI needed without rows)
                commands = [c for scope_id, (_, last_id) in catching.items()
                            for c in self._catch_up_commands(self.key(scope_id), last_id)]
                replies = await self._read(commands) if commands else []
                replies = [_entries(r) if i % 2 else r for i, r in enumerate(replies)]
            else:
                replies = await self._write_rows(catching, batch, ttls, operation)
        except (RedisError, OSError, StoreError) as exc:
            error = exc if isinstance(exc, StoreError) else self.link.failed(operation, exc)
            for future in waiting.values():
                if not future.done():
                    future.set_exception(error)
            raise error from None
        caught_up = {scope_id: self._caught_up(scope_id, mirror, replies[2 * i], replies[2 * i + 1], batch, started)
                     for i, (scope_id, (mirror, _)) in enumerate(catching.items())}
        for (scope_id, _, _), stream_id in zip(batch, replies[2 * len(catching):], strict=False):
            if caught_up.get(scope_id):  # everything before this row is in the mirror: it need not read it back
                mirror = catching[scope_id][0]
                mirror.last_id = _later(mirror.last_id, _stream_id(stream_id))
            elif (mirror := self._mirrors.get(scope_id)) is not None:  # the next catch-up skips it
                if len(mirror.own) >= OWN_IDS:
                    mirror.own.clear()
                mirror.own.add(_stream_id(stream_id))
        for scope_id, future in waiting.items():
            if not future.done():
                future.set_result(caught_up.get(scope_id, True))  # a mirror dropped meanwhile needs nothing

    async def _write_rows(self, catching: dict[str, tuple[_Mirror, str]], batch: list, ttls: dict[str, int],
                          operation: str) -> list:
        """`_write`'s commands with rows on `resp`, in one write: a `MULTI` when it catches mirrors up (the
        commands are queued together, so nothing else on the connection comes between `MULTI` and `EXEC`). Not
        retried (a write that may have been applied is not repeated); replies as redis-py's pipeline gives them."""
        self.link.client(operation)  # started, and the breaker allows it
        commands: list[tuple[object, ...]] = []
        for scope_id, (_, last_id) in catching.items():
            commands += self._catch_up_commands(self.key(scope_id), last_id)
        for scope_id, fields, ttl_ms in batch:
            key = self.key(scope_id)
            pairs = [part for field, value in fields.items() for part in (field, value)]
            commands.append(("XADD", key, "MAXLEN", "~", self.max_rows_per_scope, "*", *pairs))
            ttls[key] = max(ttl_ms, ttls.get(key, 0))
        for key, ttl_ms in ttls.items():
            commands += [("PEXPIRE", key, ttl_ms, "NX"), ("PEXPIRE", key, ttl_ms, "GT")]
        if catching:
            commands = [("MULTI",), *commands, ("EXEC",)]
        try:
            replies = await self.resp.execute_many(commands)
            if catching:
                replies = replies[-1]
                failed = next((r for r in replies or () if isinstance(r, ReplyError)), None)
                if replies is None or failed is not None:
                    raise failed or ReplyError("EXEC aborted")
        except (ReplyError, OSError) as exc:
            raise self.link.failed(operation, exc) from None
        self.link.ok()
        reads = 2 * len(catching)
        return [_entries(r) if i < reads and i % 2 else r for i, r in enumerate(replies)]

    def _caught_up(self, scope_id: str, mirror: _Mirror, exists: int, rows: list, batch: list, started: float) -> bool:
        """Apply one scope's `EXISTS` / `XRANGE` of `_write` to its mirror; whether it is now caught up."""
        if not exists:  # before this batch's rows: the stream vanished (purged, expired) since the last catch-up
            if mirror.added_at >= started:  # added here since: those rows are not written yet; look again next time
                return False
            if len(mirror.matrix) or mirror.last_id != "0-0":
                mirror.reset()
                for written, fields, _ in batch:  # this batch's own rows stay (their stream starts with them)
                    if written == scope_id:
                        self._mirror_row(mirror, fields)
        for stream_id, fields in rows:
            sid = _stream_id(stream_id)
            if sid in mirror.own:
                mirror.own.discard(sid)
            else:
                self._mirror_row(mirror, fields)
            mirror.last_id = _later(mirror.last_id, sid)
        self.builds.after_add(mirror.matrix)
        if len(rows) >= SYNC_BATCH:
            return False
        mirror.synced_at = max(mirror.synced_at, started)
        return True

    def _mirror_row(self, mirror: _Mirror, fields: dict) -> None:
        """One stream entry's row (fields as read, bytes keys, or as written, str keys) into the mirror."""
        get = fields.get
        vector = get(b"v", get("v", b""))
        vector = np.frombuffer(vector, dtype=np.float32)
        if vector.shape == (self.dim,):
            key = get(b"k", get("k"))
            expires = int(get(b"x", get("x", b"0"))) / 1000.0
            mirror.add(key.decode() if isinstance(key, bytes) else str(key), vector, get(b"g", get("g", b"")), expires)

    def served(self, scope_id: str, entry_key: str) -> None:
        mirror = self._mirrors.get(scope_id)
        if mirror is not None:
            mirror.matrix.served(entry_key)

    async def purge_tenant(self, tenant_ns: str) -> int:
        """Drop the tenant's mirrors here and its streams in Redis (other replicas reset on their next lookup)."""
        for scope_id in [s for s in self._mirrors if s.startswith(tenant_ns + ":")]:
            self._mirrors.pop(scope_id).drop()
        return await purge_keys(self.link.client("set"), f"{self.prefix}:{tenant_ns}:sem:")

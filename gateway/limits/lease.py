"""`LeasedLimitStore`: a replica's pre-reserved blocks of each busy scope's caps, so that in steady traffic a request
is admitted with no Redis round trip on its path.

It wraps a `RedisLimitStore` behind the same `LimitStore` contract. Per scope (a key, a team) the replica holds
one *block* in Redis: one hold (field `h:L<replica>`, `gateway.limits.lease_script`) of tokens, nano-dollars and
concurrency slots, plus requests of the current minute counted up front. Other replicas see it as held, exactly as
they see a request in flight, so the bound of docs/limits.md holds across replicas: a request is admitted from a
block only while, in every scope, the block still covers its estimate (a request, a slot, its tokens and its
nano-dollars beside what the block's other requests hold or used), and a block is granted only while Redis'
settled + held + the block fits under every cap; so spend exceeds a cap only by what requests use beyond their
estimate.

- What requests admitted from a block use is summed here and settled in Redis by the next refresh (every
  `lease_refresh_seconds`, sooner when a block runs low), in the same atomic call that gives back what the block
  no longer needs and grants its next part (`LEASE`): one script call per refresh for every scope of the replica.
- A block is sized from the replica's recent demand (`lease_demand_seconds` of it, in requests of the largest
  recent estimate) and the script grants at most `lease_headroom_fraction` of any cap's headroom, none when the
  headroom is under `lease_min_headroom` estimates: near a cap every request is reserved alone, as without blocks.
  A request the block cannot cover (none yet, too big, run out) is reserved alone (`RedisLimitStore.reserve`),
  and refused with the 429 it would have had.
- Blocks never span a UTC minute (so neither a day nor a month): nothing is admitted from a block of an earlier
  minute, and the first refresh of a minute gives back all of its free part before granting anew.
- A key or team change (the store's version, polled by `KeyDirectory`) stops admission from every block at once;
  the next refresh gives back their free part. A block Redis has not confirmed for `lease_stale_seconds` admits
  nothing (Redis down: requests are reserved alone, so the fail-open / fail-closed switches decide as before).
- The block's hold has its own lease (`lease_hold_seconds`, renewed by every refresh): a dead replica's block is
  dropped by the first reserve after it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from typing import Any

from gateway.limits.lease_script import PER_SCOPE
from gateway.limits.metrics import LimitMetrics
from gateway.limits.records import NANO, KeyRecord, Limits
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.store import Denied, Granted, LimitStore, Scope, ScopeUsage, StoreUnavailable, WindowClock
from gateway.settings import LimitSettings

log = logging.getLogger("slm_gateway.limits")
HALF = 0.5
"""Demand is counted in half-second buckets (this one and the one before)."""


class Block:
    """This replica's block of one scope: what Redis holds for it, what its requests hold and used, and the scope's
    recent demand on this replica."""

    __slots__ = (
        "name", "key", "caps", "generation", "minute", "valid_until", "near", "seen",
        "held_t", "held_u", "held_s", "free_r", "inflight_t", "inflight_u", "inflight_n", "pend_t", "pend_u",
        "low_r", "low_t", "low_u",
        "half", "cur_n", "prev_n", "cur_t", "prev_t", "cur_u", "prev_u", "open", "cur_peak", "prev_peak",
    )

    def __init__(self, name: str, key: str, caps: list[float]) -> None:
        self.name = name
        self.key = key
        self.caps = caps
        self.generation = -1  # the store generation its grant was made in (-1: none yet, or caps changed)
        self.minute = -1  # the UTC minute its requests were granted in
        self.valid_until = 0.0
        self.near = False  # the last grant was refused: a cap's headroom is small
        self.seen = ScopeUsage(name, 0, 0, 0, 0)  # the scope's counters in the last refresh's answer
        self.held_t = self.held_u = self.held_s = 0  # what Redis holds for the block
        self.free_r = 0  # requests of `minute` granted and not used yet
        self.inflight_t = self.inflight_u = self.inflight_n = 0  # estimates of its requests in flight
        self.pend_t = self.pend_u = 0  # what its ended requests used, not settled in Redis yet
        self.low_r = self.low_t = self.low_u = 0  # below these the block is refilled at once
        self.half = 0
        self.cur_n = self.prev_n = 0  # requests asked for, this half-second and the one before
        self.cur_t = self.prev_t = 0  # the largest estimates (tokens, nano-dollars) in them
        self.cur_u = self.prev_u = 0
        self.open = 0  # requests of this scope in flight on this replica (from the block or reserved alone)
        self.cur_peak = self.prev_peak = 0

    def free_t(self) -> int:
        return self.held_t - self.inflight_t - self.pend_t

    def free_u(self) -> int:
        return self.held_u - self.inflight_u - self.pend_u

    def roll(self, now: float) -> None:
        """Move the demand buckets on to `now`."""
        half = int(now / HALF)
        if half != self.half:
            if half == self.half + 1:
                self.prev_n, self.prev_t, self.prev_u, self.prev_peak = self.cur_n, self.cur_t, self.cur_u, self.cur_peak
            else:
                self.prev_n = self.prev_t = self.prev_u = self.prev_peak = 0
            self.cur_n = self.cur_t = self.cur_u = 0
            self.cur_peak = self.open
            self.half = half

    def asked(self, now: float, tokens: int, nano: int) -> None:
        """Count one request asking to be admitted (its estimate)."""
        self.roll(now)
        self.cur_n += 1
        if tokens > self.cur_t:
            self.cur_t = tokens
        if nano > self.cur_u:
            self.cur_u = nano

    def opened(self) -> None:
        self.open += 1
        if self.open > self.cur_peak:
            self.cur_peak = self.open

    def target(self, now: float, seconds: float, minimum: int) -> int:
        """Requests the block should cover: `seconds` of the recent demand (0: fewer than `minimum`)."""
        self.roll(now)
        rate = (self.prev_n + self.cur_n) / (HALF + now - self.half * HALF)
        n = math.ceil(rate * seconds)
        return n if n >= minimum else 0

    def usage(self) -> ScopeUsage:
        """The scope's counters as this replica knows them: the last refresh's, with the block's own use since."""
        seen = self.seen
        return ScopeUsage(self.name, seen.requests - self.free_r, seen.tokens - self.free_t(),
                          seen.day_nano + self.pend_u, seen.month_nano + self.pend_u)


class _Sent:
    """One scope's part of a refresh in flight: what it settles and the base it keeps."""

    __slots__ = ("block", "pend_t", "pend_u", "base_t", "base_u", "base_s")

    def __init__(self, block: Block, pend_t: int, pend_u: int, base_t: int, base_u: int, base_s: int) -> None:
        self.block = block
        self.pend_t = pend_t
        self.pend_u = pend_u
        self.base_t = base_t
        self.base_u = base_u
        self.base_s = base_s


class LeasedLimitStore(LimitStore):
    """`inner`'s keys and counters, with this replica's requests admitted from blocks where they can be."""

    shared = True

    def __init__(
        self, inner: RedisLimitStore, settings: LimitSettings, metrics: LimitMetrics | None = None,
        *, clock: Any = time.time,
    ) -> None:
        self.inner = inner
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.field = "h:L" + os.urandom(6).hex()  # this replica's blocks' hold field, in every scope
        self._blocks: dict[str, Block] = {}
        self._local: dict[str, list[Block]] = {}  # request admitted from blocks -> them
        self._alone: dict[str, list[Block]] = {}  # request reserved alone -> its scopes' blocks (demand)
        self._estimates: dict[str, tuple[int, int]] = {}  # request admitted from blocks -> its estimate
        self._generation = 0
        self._version: int | None = None
        self._windows = WindowClock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._closing = False
        self.refreshes = 0
        """`LEASE` calls made (tests and benches)."""

    def __repr__(self) -> str:
        return "LeasedLimitStore()"

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        if self._runner is not None and self._loop is asyncio.get_running_loop():
            self._closing = True
            assert self._wake is not None
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
            await self._refresh(release=True)
        await self.inner.close()

    async def flush(self) -> None:
        """Settle what the blocks' requests used and give back every block's free part (one call)."""
        if self._loop is asyncio.get_running_loop() and self._blocks:
            await self._refresh(release=True)
        await self.inner.flush()

    # -- keys and teams: the inner store's; a change stops admission from every block -----------------------
    async def put_key(self, record: KeyRecord) -> None:
        self._generation += 1
        await self.inner.put_key(record)

    async def put_team(self, team: str, limits: Limits) -> None:
        self._generation += 1
        await self.inner.put_team(team, limits)

    async def keys(self) -> list[KeyRecord]:
        return await self.inner.keys()

    async def teams(self) -> dict[str, Limits]:
        return await self.inner.teams()

    async def version(self) -> int:
        version = await self.inner.version()
        if version != self._version:
            if self._version is not None:
                self._generation += 1
            self._version = version
        return version

    async def usage(self, scope: str, now: float) -> ScopeUsage:
        return await self.inner.usage(scope, now)

    # -- counters ---------------------------------------------------------------------------------------------
    def _blocks_of(self, scopes: list[Scope]) -> list[Block]:
        blocks = []
        for scope in scopes:
            block = self._blocks.get(scope.name)
            if block is None:
                block = self._blocks[scope.name] = Block(scope.name, self.inner.counters_key(scope.name), scope.caps)
            elif block.caps != scope.caps:  # the caps changed: nothing more from this block until re-granted
                block.caps = scope.caps
                block.generation = -1
            blocks.append(block)
        return blocks

    async def reserve(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, lease: float
    ) -> Granted | Denied:
        blocks = self._blocks_of(scopes)
        for block in blocks:
            block.asked(now, tokens, nano)
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop():
            minute = int(now // 60)
            generation = self._generation
            for block in blocks:
                if (block.generation != generation or block.minute != minute or block.valid_until <= now
                        or block.free_r < 1 or block.held_s - block.inflight_n < 1
                        or block.free_t() < tokens or block.free_u() < nano):
                    break
            else:
                return self._admit(blocks, request_id, tokens, nano)
            settings = self.settings
            if any(b.target(now, settings.lease_demand_seconds, settings.lease_min_requests) for b in blocks):
                self._kick()
        result = await self.inner.reserve(scopes, request_id, tokens, nano, now, lease)
        if isinstance(result, Granted):
            self._alone[request_id] = blocks
            for block in blocks:
                block.opened()
        return result

    def _admit(self, blocks: list[Block], request_id: str, tokens: int, nano: int) -> Granted:
        """Admit from the blocks (they cover the estimate in every scope): no Redis call."""
        low = False
        for block in blocks:
            block.free_r -= 1
            block.inflight_t += tokens
            block.inflight_u += nano
            block.inflight_n += 1
            block.opened()
            if (block.free_r < block.low_r or block.free_t() < block.low_t or block.free_u() < block.low_u
                    or block.held_s - block.inflight_n < 1):
                low = True
        self._local[request_id] = blocks
        self._estimates[request_id] = (tokens, nano)
        if low:
            self._kick()
        return Granted([block.usage() for block in blocks])

    async def settle(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, *, held: tuple[int, int]
    ) -> list[ScopeUsage]:
        blocks = self._local.pop(request_id, None)
        if blocks is None:
            alone = self._alone.pop(request_id, None)
            if alone is not None:
                for block in alone:
                    block.open -= 1
            return await self.inner.settle(scopes, request_id, tokens, nano, now, held=held)
        est_t, est_u = self._estimates.pop(request_id)
        for block in blocks:
            block.inflight_t -= est_t
            block.inflight_u -= est_u
            block.inflight_n -= 1
            block.open -= 1
            block.pend_t += tokens
            block.pend_u += nano
        return [block.usage() for block in blocks]

    # -- refreshes --------------------------------------------------------------------------------------------
    def _kick(self) -> None:
        """Refresh soon (a block runs low, or a busy scope has none): starts the refresher on first use."""
        if self._closing:
            return
        if self._runner is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._lock = asyncio.Lock()
            self._runner = self._loop.create_task(self._run(), name="limits-lease-blocks")
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        timeout: float | None = 0.0
        while not self._closing:
            if timeout is None:
                await wake.wait()
            elif timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
            wake.clear()
            if self._closing:
                break
            try:
                active = await self._refresh(release=False)
            except Exception:  # never let the refresher die: requests fall back to reserving alone
                log.exception("limits: refreshing the blocks failed")
                active = True
            now = self.clock()
            timeout = min(self.settings.lease_refresh_seconds, 60.0 - now % 60.0 + 0.002) if active else None

    async def _refresh(self, *, release: bool) -> bool:
        """One `LEASE` call for every block with something to do; False when no block is left to look after."""
        assert self._lock is not None
        async with self._lock:
            return await self._refresh_locked(release)

    async def _refresh_locked(self, release: bool) -> bool:
        s = self.settings
        now = self.clock()
        minute = int(now // 60)
        generation = self._generation
        keys: list[str] = []
        args: list[Any] = []
        sent: list[_Sent] = []
        for name, b in list(self._blocks.items()):
            # keep a free part only within the minute it was granted in, under the same caps, away from a cap
            fresh = b.generation == generation and b.minute == minute and not release and not b.near
            target = b.target(now, s.lease_demand_seconds, s.lease_min_requests) if not release else 0
            if b.generation != generation and (b.held_t or b.held_u or b.held_s or b.free_r):
                target = 0  # give the old grant back first; the next refresh grants under the new caps
            if (target == 0 and b.held_t == 0 and b.held_u == 0 and b.held_s == 0 and b.free_r == 0
                    and b.pend_t == 0 and b.pend_u == 0):
                if b.open == 0 and b.inflight_n == 0 and b.prev_n == 0 and b.cur_n == 0:
                    del self._blocks[name]
                continue
            est_t, est_u = max(b.cur_t, b.prev_t), max(b.cur_u, b.prev_u)
            target_s = max(2, math.ceil(1.5 * max(b.cur_peak, b.prev_peak)) + 1) if target else 0
            free_t, free_u, free_s = b.free_t(), b.free_u(), b.held_s - b.inflight_n
            if target and fresh:
                keep_r = min(b.free_r, target)
                keep_t = min(max(0, free_t), target * est_t)
                keep_u = min(max(0, free_u), target * est_u)
                keep_s = min(max(0, free_s), target_s)
                kept = min(keep_r, keep_t // est_t if est_t > 0 else keep_r, keep_u // est_u if est_u > 0 else keep_r)
                want, want_s = max(0, target - kept), max(0, target_s - keep_s)
            else:  # releasing, or a new minute: the whole free part goes back
                keep_r = keep_t = keep_u = keep_s = want = want_s = 0
            part = _Sent(b, b.pend_t, b.pend_u, b.inflight_t + keep_t, b.inflight_u + keep_u, b.inflight_n + keep_s)
            keys.append(b.key)
            args += [self.field, part.base_t, part.base_u, part.base_s, b.free_r - keep_r, b.minute,
                     part.pend_t, part.pend_u, want, est_t, est_u, want_s, *b.caps]
            # from now on the block is its base: admissions while the call travels use the kept part only
            b.held_t, b.held_u, b.held_s, b.free_r = part.base_t, part.base_u, part.base_s, keep_r
            b.pend_t = b.pend_u = 0
            b.low_r = b.low_t = b.low_u = 0
            sent.append(part)
        assert len(args) == PER_SCOPE * len(keys)
        if not sent:
            return bool(self._blocks)
        w = self._windows.at(now)
        now_ms = int(now * 1000)
        head = [now_ms, w.minute, w.day, w.month, now_ms + int(s.lease_hold_seconds * 1000),
                s.lease_headroom_fraction, s.lease_min_headroom]
        self.refreshes += 1
        try:
            out = await self.inner.lease(keys, head + args)
        except StoreUnavailable as exc:
            lost = [p for p in sent if p.pend_t or p.pend_u]
            if lost:
                if self.metrics is not None:
                    self.metrics.store_errors.labels("settle", "lost").inc(len(lost))
                log.warning("limits: a blocks' settle was lost (%s): $%.6f not counted", exc,
                            sum(p.pend_u for p in lost) / NANO)
            return True
        for i, part in enumerate(sent):
            b = part.block
            n, ht, hu, hs, near, requests, tokens, day, month = (int(x) for x in out[i * 9:(i + 1) * 9])
            b.held_t, b.held_u, b.held_s = ht, hu, hs
            b.free_r += n
            b.minute = minute
            b.valid_until = now + s.lease_stale_seconds
            b.generation = generation
            b.near = near == 1
            b.seen = ScopeUsage(b.name, requests, tokens, day, month)
            b.low_r, b.low_t, b.low_u = b.free_r // 2, max(0, b.free_t()) // 2, max(0, b.free_u()) // 2
        return True


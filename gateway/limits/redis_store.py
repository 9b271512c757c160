"""`RedisLimitStore`: keys, teams and counters in Redis, shared by every replica (one Lua script per check).

Keys: hash `<prefix>:keys` (key id -> JSON record, with the key's sha256, never the key), hash `<prefix>:teams`
(team -> JSON caps), counter `<prefix>:version` (bumped by the same script as every change). Counters: one hash
per scope, `<prefix>:c:<scope>` (its fields: `gateway.limits.scripts`). Commands go through one pipelined connection (`gateway.resp`); connection failures and
timeouts open a breaker (calls are skipped for a short, growing pause) and surface as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
from typing import Any

import msgspec

from gateway.cache.breaker import Breaker
from gateway.limits.lease_script import LEASE
from gateway.limits.records import KeyRecord, Limits
from gateway.limits.scripts import CHECK, HOLD, USAGE
from gateway.limits.store import (
    Denied,
    Granted,
    LimitStore,
    Scope,
    ScopeUsage,
    StoreUnavailable,
    WindowClock,
    Windows,
)
from gateway.resp import PipelinedRedis, ReplyError

_record = msgspec.json.Decoder(KeyRecord)
_limits = msgspec.json.Decoder(Limits)
_hold = struct.Struct(HOLD)
_PUT = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return redis.call('INCR', KEYS[2])"
SCRIPTS = {"check": CHECK, "usage": USAGE, "put": _PUT, "lease": LEASE}


class _Settle:
    """A settle waiting to ride along with the next reserve (or to leave alone `settle_delay` s later)."""

    __slots__ = ("scopes", "keys", "args", "now", "future")

    def __init__(
        self, scopes: list[Scope], keys: list[str], args: list[Any], now: float, future: asyncio.Future[list[ScopeUsage]]
    ) -> None:
        self.scopes = scopes
        self.keys = keys
        self.args = args
        self.now = now
        self.future = future


class RedisLimitStore(LimitStore):
    """`settle_delay`: how long a settle waits for a reserve to ride along with (one script call, one round trip
    and one wake-up of this process fewer per request); it leaves alone after that."""

    shared = True

    def __init__(self, url: str, *, prefix: str, timeout_seconds: float = 0.5, settle_delay: float = 0.01) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        self.settle_delay = settle_delay
        self._settles: list[_Settle] = []
        self._settles_loop: asyncio.AbstractEventLoop | None = None
        self._settles_timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[Any]] = set()
        self.breaker = Breaker()
        self._redis: PipelinedRedis | None = None
        self._windows = WindowClock()
        self._names: dict[str, str] = {}  # scope -> its counters' key
        self._sha = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in SCRIPTS.items()}

    def __repr__(self) -> str:  # the URL may carry a password
        return "RedisLimitStore()"

    async def start(self) -> None:
        if self._redis is None:
            self._redis = PipelinedRedis(self.url, timeout=self.timeout_seconds)

    async def close(self) -> None:
        if self._settles and self._settles_loop is asyncio.get_running_loop():
            with contextlib.suppress(StoreUnavailable):  # the settles' futures carry it (counted as lost)
                await self._check(self._take_settles(), [], [])
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.close()

    async def _call(self, *command: Any, lazy: bool = False) -> Any:
        redis = self._redis
        if redis is None:
            raise StoreUnavailable("limit store not started")
        if not self.breaker.allow():
            raise StoreUnavailable("redis unavailable (backing off)")
        try:
            reply = await redis.execute(*command, lazy=lazy)
        except TimeoutError as exc:  # slow, not gone (a stuck connection is aborted: ConnectionError next time)
            raise StoreUnavailable(f"TimeoutError: {exc}") from None
        except (ConnectionError, OSError) as exc:
            self.breaker.failure()
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        except ReplyError as exc:
            raise StoreUnavailable(f"redis error: {exc}") from None
        self.breaker.success()
        return reply

    async def _script(self, name: str, keys: list[str], args: list[Any], lazy: bool = False) -> Any:
        try:
            return await self._call("EVALSHA", self._sha[name], len(keys), *keys, *args, lazy=lazy)
        except StoreUnavailable as exc:
            if "NOSCRIPT" not in str(exc):
                raise
        await self._call("SCRIPT", "LOAD", SCRIPTS[name])  # a restarted or flushed Redis: load it once more
        return await self._call("EVALSHA", self._sha[name], len(keys), *keys, *args)

    # -- keys and teams -------------------------------------------------------------------------------------
    async def put_key(self, record: KeyRecord) -> None:
        await self._script("put", [f"{self.prefix}:keys", f"{self.prefix}:version"],
                           [record.id, msgspec.json.encode(record)])

    async def put_team(self, team: str, limits: Limits) -> None:
        await self._script("put", [f"{self.prefix}:teams", f"{self.prefix}:version"],
                           [team, msgspec.json.encode(limits)])

    async def keys(self) -> list[KeyRecord]:
        rows = await self._call("HVALS", f"{self.prefix}:keys")
        return sorted((_record.decode(v) for v in rows), key=lambda k: (k.team, k.created, k.id))

    async def teams(self) -> dict[str, Limits]:
        flat = await self._call("HGETALL", f"{self.prefix}:teams")
        return {flat[i].decode(): _limits.decode(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def version(self) -> int:
        return int(await self._call("GET", f"{self.prefix}:version") or 0)

    # -- counters -------------------------------------------------------------------------------------------
    def _key(self, scope: str) -> str:
        name = self._names.get(scope)
        if name is None:
            name = self._names[scope] = f"{self.prefix}:c:{scope}"
        return name

    async def reserve(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, lease: float
    ) -> Granted | Denied:
        w = self._windows.at(now)
        now_ms = int(now * 1000)
        ends = now_ms + int(lease * 1000)
        args: list[Any] = ["h:" + request_id, _hold.pack(ends, tokens, nano), tokens, nano, ends]
        for s in scopes:
            args += s.caps
        keys = [self._key(s.name) for s in scopes]
        settles = self._take_settles() if self._settles and self._settles_loop is asyncio.get_running_loop() else []
        out = await self._check(settles, keys, args, now_ms, w)  # the settles ride along
        if out[0] == 0:
            reason = out[2].decode() if isinstance(out[2], bytes) else out[2]
            return Denied(scopes[int(out[1])].name, reason, float(out[3]), float(out[4]))
        return Granted(_usage_rows(scopes, out[1:]))

    async def settle(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, *, held: tuple[int, int]
    ) -> list[ScopeUsage]:
        loop = asyncio.get_running_loop()
        args = [len(scopes), "h:" + request_id, tokens, nano, *held, 0]
        settle = _Settle(scopes, [self._key(s.name) for s in scopes], args, now, loop.create_future())
        if self._settles and self._settles_loop is not loop:  # another loop's wait there (tests): this one leaves now
            self._spawn(self._check([settle], [], []))
            return await settle.future
        self._settles.append(settle)
        self._settles_loop = loop
        if self._settles_timer is None:
            self._settles_timer = loop.call_later(self.settle_delay, self._send_settles)
        return await settle.future

    def _take_settles(self) -> list[_Settle]:
        settles, self._settles = self._settles, []
        if self._settles_timer is not None:
            self._settles_timer.cancel()
            self._settles_timer = None
        return settles

    def _send_settles(self) -> None:
        """No reserve came in time: the waiting settles leave on their own."""
        settles = self._take_settles()
        if settles:
            self._spawn(self._check(settles, [], []))

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._sending.add(task)
        task.add_done_callback(self._sent)
        return task

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._sending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: the settles' futures carry it to whoever waits for them

    async def _check(
        self, settles: list[_Settle], keys: list[str], args: list[Any], now_ms: int | None = None,
        w: Windows | None = None,
    ) -> list[Any]:
        """One `CHECK` call: `settles`, then the reserve of `keys` / `args` (none when empty); the reserve's reply.
        Each settle's future gets its scopes' counters, or the `StoreUnavailable`."""
        if w is None or now_ms is None:  # settles alone: the windows of the latest one
            now = max(settle.now for settle in settles)
            w, now_ms = self._windows.at(now), int(now * 1000)
        head: list[Any] = [now_ms, w.minute, w.day, w.month, len(settles)]
        all_keys: list[str] = []
        for settle in settles:
            head += settle.args
            all_keys += settle.keys
        try:
            settled, out = await self._script("check", all_keys + keys, head + args)
        except asyncio.CancelledError as exc:
            # the reserve's caller left (its client hung up): the call may have run, so the settles riding in it go
            # again, counted only where their hold is still there, i.e. exactly once either way
            again = [settle for settle in settles if not settle.args[-1]]
            for settle in again:
                settle.args[-1] = 1
            if again:
                self._spawn(self._check(again, [], []))
            _lost([settle for settle in settles if settle not in again], exc)
            raise
        except BaseException as exc:  # whoever waits for a settle learns it was lost
            _lost(settles, exc)
            raise
        i = 0
        for settle in settles:
            n = len(settle.scopes)
            if not settle.future.done():
                settle.future.set_result(_usage_rows(settle.scopes, settled[i * 4:(i + n) * 4]))
            i += n
        return out

    def counters_key(self, scope: str) -> str:
        """The Redis key of `scope`'s counters."""
        return self._key(scope)

    async def lease(self, keys: list[str], args: list[Any]) -> list[int]:
        """One `LEASE` call (`gateway.limits.lease_script`): refresh this replica's blocks of `keys`."""
        return await self._script("lease", keys, args)

    async def usage(self, scope: str, now: float) -> ScopeUsage:
        w = self._windows.at(now)
        out = await self._script("usage", [self._key(scope)], [w.minute, w.day, w.month])
        return ScopeUsage(scope, int(out[0]), int(out[1]), int(out[2]), int(out[3]))


def _lost(settles: list[_Settle], exc: BaseException) -> None:
    """Tell whoever waits for `settles` that they were not counted."""
    lost = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"settle not sent: {exc!r}")
    for settle in settles:
        if not settle.future.done():
            settle.future.set_exception(lost)


def _usage_rows(scopes: list[Scope], flat: list[int]) -> list[ScopeUsage]:
    return [
        ScopeUsage(s.name, int(flat[i * 4]), int(flat[i * 4 + 1]), int(flat[i * 4 + 2]), int(flat[i * 4 + 3]))
        for i, s in enumerate(scopes)
    ]

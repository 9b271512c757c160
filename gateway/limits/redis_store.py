"""`RedisLimitStore`: keys, teams and counters in Redis, shared by every replica (one Lua script per check).

Keys: hash `<prefix>:keys` (key id -> JSON record, with the key's sha256, never the key), hash `<prefix>:teams`
(team -> JSON caps), counter `<prefix>:version` (bumped by the same script as every change). Counters: one hash
per scope, `<prefix>:c:<scope>` (its fields: `gateway.limits.scripts`). Commands go through one pipelined connection (`gateway.resp`); connection failures and
timeouts open a breaker (calls are skipped for a short, growing pause) and surface as `StoreUnavailable`.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import msgspec

from gateway.cache.breaker import Breaker
from gateway.limits.records import KeyRecord, Limits
from gateway.resp import PipelinedRedis, ReplyError
from gateway.limits.scripts import HOLD, RESERVE, SETTLE, USAGE
from gateway.limits.store import (
    Denied,
    Granted,
    LimitStore,
    Scope,
    ScopeUsage,
    StoreUnavailable,
    WindowClock,
)

_record = msgspec.json.Decoder(KeyRecord)
_limits = msgspec.json.Decoder(Limits)
_hold = struct.Struct(HOLD)
_PUT = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return redis.call('INCR', KEYS[2])"
SCRIPTS = {"reserve": RESERVE, "settle": SETTLE, "usage": USAGE, "put": _PUT}


class RedisLimitStore(LimitStore):
    shared = True

    def __init__(self, url: str, *, prefix: str, timeout_seconds: float = 0.5) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
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
        args: list[Any] = [now_ms, "h:" + request_id, _hold.pack(ends, tokens, nano), tokens, nano, ends, w.minute,
                           w.day, w.month]
        for s in scopes:
            args += s.caps
        out = await self._script("reserve", [self._key(s.name) for s in scopes], args)
        if out[0] == 0:
            reason = out[2].decode() if isinstance(out[2], bytes) else out[2]
            return Denied(scopes[int(out[1])].name, reason, float(out[3]), float(out[4]))
        return Granted(_usage_rows(scopes, out[1:]))

    async def settle(self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float) -> list[ScopeUsage]:
        w = self._windows.at(now)
        out = await self._script("settle", [self._key(s.name) for s in scopes],
                                 ["h:" + request_id, tokens, nano, w.minute, w.day, w.month], lazy=True)
        return _usage_rows(scopes, out)

    async def usage(self, scope: str, now: float) -> ScopeUsage:
        w = self._windows.at(now)
        out = await self._script("usage", [self._key(scope)], [w.minute, w.day, w.month])
        return ScopeUsage(scope, int(out[0]), int(out[1]), int(out[2]), int(out[3]))


def _usage_rows(scopes: list[Scope], flat: list[int]) -> list[ScopeUsage]:
    return [
        ScopeUsage(s.name, int(flat[i * 4]), int(flat[i * 4 + 1]), int(flat[i * 4 + 2]), int(flat[i * 4 + 3]))
        for i, s in enumerate(scopes)
    ]

"""`RedisLimitStore`: keys, teams and counters in Redis, shared by every replica (one Lua script per check).

Keys: hash `<prefix>:keys` (key id -> JSON record, with the key's sha256, never the key), hash `<prefix>:teams`
(team -> JSON caps), counter `<prefix>:version` (bumped in the same transaction as every change). Counters:
`store.scope_keys`. Connection failures and timeouts open a breaker (calls are skipped for a short, growing
pause) and surface as `StoreUnavailable`.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.cache.breaker import Breaker
from gateway.limits.records import KeyRecord, Limits
from gateway.limits.scripts import RESERVE, SETTLE, USAGE
from gateway.limits.store import (
    Denied,
    Granted,
    LimitStore,
    Scope,
    ScopeUsage,
    StoreUnavailable,
    Windows,
    caps,
    scope_keys,
)

_record = msgspec.json.Decoder(KeyRecord)
_limits = msgspec.json.Decoder(Limits)


class RedisLimitStore(LimitStore):
    shared = True

    def __init__(self, url: str, *, prefix: str, timeout_seconds: float = 0.5, max_connections: int = 64) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        self.max_connections = max_connections
        self.breaker = Breaker()
        self._redis: Redis | None = None

    def __repr__(self) -> str:  # the URL may carry a password
        return "RedisLimitStore()"

    async def start(self) -> None:
        if self._redis is not None:
            return
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.timeout_seconds,
            socket_timeout=self.timeout_seconds,
            socket_connect_timeout=self.timeout_seconds,
            socket_keepalive=True,
            health_check_interval=15,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = Redis(connection_pool=pool)
        self._reserve = self._redis.register_script(RESERVE)
        self._settle = self._redis.register_script(SETTLE)
        self._usage = self._redis.register_script(USAGE)

    async def close(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            try:
                await redis.aclose(close_connection_pool=True)
            except (RedisError, OSError):
                pass

    def _client(self) -> Redis:
        if self._redis is None:
            raise StoreUnavailable("limit store not started")
        if not self.breaker.allow():
            raise StoreUnavailable("redis unavailable (backing off)")
        return self._redis

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
            self.breaker.failure()
        return StoreUnavailable(f"{type(exc).__name__}: {exc}")

    # -- keys and teams -------------------------------------------------------------------------------------
    async def _change(self, hash_name: str, field: str, value: bytes) -> None:
        redis = self._client()
        try:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hset(f"{self.prefix}:{hash_name}", field, value)
                pipe.incr(f"{self.prefix}:version")
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None
        self.breaker.success()

    async def put_key(self, record: KeyRecord) -> None:
        await self._change("keys", record.id, msgspec.json.encode(record))

    async def put_team(self, team: str, limits: Limits) -> None:
        await self._change("teams", team, msgspec.json.encode(limits))

    async def keys(self) -> list[KeyRecord]:
        rows = await self._call(lambda r: r.hvals(f"{self.prefix}:keys"))
        return sorted((_record.decode(v) for v in rows), key=lambda k: (k.team, k.created, k.id))

    async def teams(self) -> dict[str, Limits]:
        rows = await self._call(lambda r: r.hgetall(f"{self.prefix}:teams"))
        return {k.decode(): _limits.decode(v) for k, v in rows.items()}

    async def version(self) -> int:
        return int(await self._call(lambda r: r.get(f"{self.prefix}:version")) or 0)

    async def _call(self, op):  # type: ignore[no-untyped-def]
        redis = self._client()
        try:
            result = await op(redis)
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None
        self.breaker.success()
        return result

    # -- counters -------------------------------------------------------------------------------------------
    def _keys(self, scopes: list[Scope], now: float) -> list[str]:
        w = Windows.at(now)
        return [k for s in scopes for k in scope_keys(self.prefix, s.name, w)]

    async def reserve(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, lease: float
    ) -> Granted | Denied:
        args: list[float | str | int] = [int(now * 1000), request_id, int(lease * 1000), tokens, nano, len(scopes)]
        for s in scopes:
            args += caps(s.limits)
        out = await self._call(lambda r: self._reserve(keys=self._keys(scopes, now), args=args, client=r))
        if out[0] == 0:
            scope = scopes[int(out[1])].name
            return Denied(scope, out[2].decode() if isinstance(out[2], bytes) else out[2], float(out[3]), float(out[4]))
        return Granted(_usage_rows(scopes, out[1:]))

    async def settle(self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float) -> list[ScopeUsage]:
        args = [request_id, tokens, nano, len(scopes)]
        out = await self._call(lambda r: self._settle(keys=self._keys(scopes, now), args=args, client=r))
        return _usage_rows(scopes, out)

    async def usage(self, scope: str, now: float) -> ScopeUsage:
        keys = scope_keys(self.prefix, scope, Windows.at(now))
        out = await self._call(lambda r: self._usage(keys=keys, args=[], client=r))
        return ScopeUsage(scope, int(out[0]), int(out[1]), int(out[2]), int(out[3]))


def _usage_rows(scopes: list[Scope], flat: list[int]) -> list[ScopeUsage]:
    return [
        ScopeUsage(s.name, int(flat[i * 4]), int(flat[i * 4 + 1]), int(flat[i * 4 + 2]), int(flat[i * 4 + 3]))
        for i, s in enumerate(scopes)
    ]

"""The shared store: Redis through one redis-py asyncio connection pool, with short timeouts and a breaker.

Redis trouble never reaches the caller as anything but `StoreError`: connection failures and timeouts open a
circuit breaker (calls are skipped, without touching the network, for a short, growing pause), the pool
reconnects by itself, and one immediate retry covers a pooled connection that died with a Redis restart.

Health signals: the store pings Redis at start and tracks whether it is reachable from every operation's outcome.
Each change is logged once (a warning when Redis becomes unreachable, at start or later; an info line when it
is back) and reported to `on_state` (the gateway sets its `cache_backend_up` gauge from it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.cache.breaker import Breaker
from gateway.cache.semantic.purge import purge_keys
from gateway.cache.store import StoreError

log = logging.getLogger("slm_gateway.cache")

_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisStore:
    """Entries as plain strings set with `SET key value PX ttl` (one atomic write); locks with `SET NX PX`."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 0.05,
        max_connections: int = 64,
        breaker: Breaker | None = None,
    ) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.max_connections = max_connections
        self.breaker = breaker or Breaker()
        self.on_state: Callable[[bool], None] | None = None
        """Called with True / False each time Redis becomes reachable / unreachable (and at start)."""
        self.up: bool | None = None
        self._redis: Redis | None = None
        self._unlock = None

    def __repr__(self) -> str:  # the URL may carry a password
        return "RedisStore()"

    async def start(self) -> None:
        """Create the pool (connections open on first use, so a Redis that is down does not stop startup)."""
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
        self._unlock = self._redis.register_script(_UNLOCK)
        await self.ping()

    async def ping(self) -> bool:
        """Whether Redis answers a PING now (skipped, and False, while the breaker is open)."""
        try:
            redis = self._client("ping")
            await redis.ping()
        except StoreError as exc:
            self._set_up(False, str(exc))
            return False
        except (RedisError, OSError) as exc:
            self._failed("ping", exc)
            return False
        self._ok()
        return True

    def _set_up(self, up: bool, detail: str = "") -> None:
        if up == self.up:
            return
        first = self.up is None
        self.up = up
        if not up:
            log.warning("cache: Redis is unreachable (%s); answering without the cache until it is back", detail)
        elif not first:
            log.info("cache: Redis is reachable again")
        if self.on_state is not None:
            self.on_state(up)

    def _ok(self) -> None:
        self.breaker.success()
        if self.up is not True:
            self._set_up(True)

    async def close(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            try:
                await redis.aclose(close_connection_pool=True)
            except (RedisError, OSError):
                pass

    def _client(self, operation: str) -> Redis:
        if self._redis is None:
            raise StoreError(operation, "store not started")
        if not self.breaker.allow():
            raise StoreError("connect", "redis unavailable (backing off)")
        return self._redis

    def _failed(self, operation: str, exc: BaseException) -> StoreError:
        error = StoreError(operation, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
            self.breaker.failure()
            self._set_up(False, f"{type(exc).__name__}: {exc}")
        return error

    async def get(self, key: str) -> bytes | None:
        redis = self._client("get")
        try:
            value = await redis.get(key)
        except (RedisError, OSError) as exc:
            raise self._failed("get", exc) from None
        self._ok()
        return value

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        redis = self._client("set")
        try:
            await redis.set(key, value, px=max(1, ttl_ms))
        except (RedisError, OSError) as exc:
            raise self._failed("set", exc) from None
        self._ok()

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        redis = self._client("lock")
        try:
            taken = await redis.set(key, token, nx=True, px=max(1, ttl_ms))
        except (RedisError, OSError) as exc:
            raise self._failed("lock", exc) from None
        self._ok()
        return bool(taken)

    async def unlock(self, key: str, token: str) -> None:
        redis = self._client("lock")
        assert self._unlock is not None
        try:
            await self._unlock(keys=[key], args=[token], client=redis)
        except (RedisError, OSError) as exc:
            raise self._failed("lock", exc) from None
        self._ok()

    async def peek(self, key: str, lock: str) -> tuple[bytes | None, bool]:
        redis = self._client("get")
        try:
            value, holder = await redis.mget(key, lock)
        except (RedisError, OSError) as exc:
            raise self._failed("get", exc) from None
        self._ok()
        return value, holder is not None

    async def purge_prefix(self, prefix: str) -> int:
        """UNLINK every key starting with `prefix` (SCAN in batches); how many were removed."""
        return await purge_keys(self._client("purge"), prefix)

"""The shared store: Redis through one redis-py asyncio connection pool, with short timeouts and a breaker.

Redis trouble never reaches the caller as anything but `StoreError`: connection failures and timeouts open a
circuit breaker (calls are skipped, without touching the network, for a short, growing pause), the pool
reconnects by itself, and one immediate retry covers a pooled connection that died with a Redis restart.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.cache.breaker import Breaker
from gateway.cache.store import StoreError

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
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
            self.breaker.failure()
        return StoreError(operation, f"{type(exc).__name__}: {exc}")

    async def get(self, key: str) -> bytes | None:
        redis = self._client("get")
        try:
            value = await redis.get(key)
        except (RedisError, OSError) as exc:
            raise self._failed("get", exc) from None
        self.breaker.success()
        return value

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        redis = self._client("set")
        try:
            await redis.set(key, value, px=max(1, ttl_ms))
        except (RedisError, OSError) as exc:
            raise self._failed("set", exc) from None
        self.breaker.success()

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        redis = self._client("lock")
        try:
            taken = await redis.set(key, token, nx=True, px=max(1, ttl_ms))
        except (RedisError, OSError) as exc:
            raise self._failed("lock", exc) from None
        self.breaker.success()
        return bool(taken)

    async def unlock(self, key: str, token: str) -> None:
        redis = self._client("lock")
        assert self._unlock is not None
        try:
            await self._unlock(keys=[key], args=[token], client=redis)
        except (RedisError, OSError) as exc:
            raise self._failed("lock", exc) from None
        self.breaker.success()

    async def peek(self, key: str, lock: str) -> tuple[bytes | None, bool]:
        redis = self._client("get")
        try:
            value, holder = await redis.mget(key, lock)
        except (RedisError, OSError) as exc:
            raise self._failed("get", exc) from None
        self.breaker.success()
        return value, holder is not None

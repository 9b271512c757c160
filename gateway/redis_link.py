"""A link to Redis: a redis-py asyncio client over a bounded pool, built on `open()`, guarded by a circuit
breaker, closed with its pool.

The response store (`gateway.cache.redis_store`), the semantic index (`gateway.cache.semantic.redis_index`), the
learning side and the CLIs build their clients here. `RedisLink` turns Redis trouble into the caller's own error
type: `client(op)` refuses without touching the network while the breaker is open, `failed(op, exc)` counts a
connection failure or timeout against the breaker (other Redis errors, e.g. a wrong type, do not open it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.redis_url import redis_target

TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
"""Failures that say Redis is unreachable or too slow (they open the breaker)."""
E = TypeVar("E", bound=Exception)


class Breaker(Protocol):
    """What `RedisLink` needs of a circuit breaker (`gateway.cache.breaker.Breaker` is one)."""

    def allow(self) -> bool: ...
    def success(self) -> None: ...
    def failure(self) -> None: ...


def redis_client(url: str, *, timeout_seconds: float, max_connections: int, **pool_options: Any) -> Redis:
    """A client for `url` over a pool of at most `max_connections` (a caller waits up to `timeout_seconds` for
    one); connections open on first use, so a Redis that is down does not stop startup. `aclose()` closes the
    pool too. `url` is checked first (`gateway.redis_url`: `RedisUrlError` for an option `gateway.resp` would not
    honour alike, or a TLS file that cannot be loaded), then given to redis-py's `from_url` as it is."""
    redis_target(url)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        **pool_options,
    )
    return Redis.from_pool(pool)


async def close_client(redis: Redis) -> None:
    """Close a client of `redis_client` and its pool; errors while closing are ignored (Redis may be down)."""
    try:
        await redis.aclose()
    except (RedisError, OSError):
        pass


class RedisLink(Generic[E]):
    """One lazily built client, its breaker, and the errors the owner raises (`error(operation, detail)`)."""

    __slots__ = ("url", "timeout_seconds", "max_connections", "breaker", "_error", "_on_down", "_options",
                 "_what", "redis")

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        max_connections: int,
        breaker: Breaker,
        error: Callable[[str, str], E],
        what: str = "redis client",
        on_down: Callable[[str], None] | None = None,
        **pool_options: Any,
    ) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.max_connections = max_connections
        self.breaker = breaker
        self._error = error
        self._what = what
        self._on_down = on_down
        """Called with the failure's text each time a connection failure or timeout is counted."""
        self._options = pool_options
        self.redis: Redis | None = None

    def __repr__(self) -> str:  # the URL may carry a password
        return "RedisLink()"

    def open(self) -> Redis:
        """The client, built on first call (no connection is made here)."""
        if self.redis is None:
            self.redis = redis_client(
                self.url, timeout_seconds=self.timeout_seconds, max_connections=self.max_connections, **self._options
            )
        return self.redis

    def client(self, operation: str) -> Redis:
        """The client for one operation; the owner's error, without a network call, when not opened or backing off."""
        if self.redis is None:
            raise self._error(operation, f"{self._what} not started")
        if not self.breaker.allow():
            raise self._error("connect", "redis unavailable (backing off)")
        return self.redis

    def failed(self, operation: str, exc: BaseException) -> E:
        """The owner's error for a failed operation (to raise); a transient failure is counted by the breaker."""
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TRANSIENT):
            self.breaker.failure()
            if self._on_down is not None:
                self._on_down(detail)
        return self._error(operation, detail)

    def ok(self) -> None:
        """An operation succeeded: the breaker closes."""
        self.breaker.success()

    async def close(self) -> None:
        """Close the client and its pool (errors while closing are ignored); `open()` builds a new one."""
        if self.redis is not None:
            redis, self.redis = self.redis, None
            await close_client(redis)

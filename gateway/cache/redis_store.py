"""The shared store: Redis through one pipelined connection of the gateway's own (`gateway.resp.PipelinedRedis`) for
every entry and lock command (`get`, `peek`, `set`, `try_lock`, `unlock`: what each lookup, miss and store does),
and a redis-py asyncio pool for the rest (`ping`, `purge_prefix`), with short timeouts and a breaker.

Redis trouble never reaches the caller as anything but `StoreError`: connection failures and timeouts open a
circuit breaker (calls are skipped, without touching the network, for a short, growing pause), the connections
reconnect by themselves, and one immediate retry covers a connection that died with a Redis restart.

Why the entry and lock commands have their own connection: redis-py's asyncio client costs ~0.13-0.16 ms of the
gateway's CPU per command on this machine (its layers, a pooled connection per command in flight;
`bench/redis_client.py`), against ~0.01-0.04 ms for `PipelinedRedis` (hiredis packs and parses; commands in flight
share one socket, those of one event-loop turn leave in one write). An exact miss's lock, store and unlock through
redis-py were a third of its CPU (py-spy, 2026-12-03).

Health signals: the store pings Redis at start and tracks whether it is reachable from every operation's outcome.
Each change is logged once (a warning when Redis becomes unreachable, at start or later; an info line when it
is back) and reported to `on_state` (the gateway sets its `cache_backend_up` gauge from it).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.cache.breaker import Breaker
from gateway.cache.semantic.purge import purge_keys
from gateway.cache.store import StoreError
from gateway.redis_link import RedisLink
from gateway.resp import PipelinedRedis, ReplyError

log = logging.getLogger("slm_gateway.cache")

_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
UNLOCK_SHA = hashlib.sha1(_UNLOCK.encode()).hexdigest()


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
        self.link: RedisLink[StoreError] = RedisLink(
            url,
            timeout_seconds=timeout_seconds,
            max_connections=max_connections,
            breaker=breaker or Breaker(),
            error=StoreError,
            what="store",
            on_down=lambda detail: self._set_up(False, detail),
            socket_keepalive=True,
            health_check_interval=15,
            retry=Retry(NoBackoff(), 1),
        )
        self.breaker = self.link.breaker
        self.on_state: Callable[[bool], None] | None = None
        """Called with True / False each time Redis becomes reachable / unreachable (and at start)."""
        self.up: bool | None = None
        self.resp = PipelinedRedis(url, timeout=timeout_seconds)
        """The connection entries and locks go through (opened on first use, reopened after a loss)."""

    def __repr__(self) -> str:  # the URL may carry a password
        return "RedisStore()"

    async def start(self) -> None:
        """Create the pool (connections open on first use, so a Redis that is down does not stop startup)."""
        if self.link.redis is not None:
            return
        self.link.open()
        await self.ping()

    async def ping(self) -> bool:
        """Whether Redis answers a PING now (skipped, and False, while the breaker is open)."""
        try:
            redis = self.link.client("ping")
            await redis.ping()
        except StoreError as exc:
            self._set_up(False, str(exc))
            return False
        except (RedisError, OSError) as exc:
            self.link.failed("ping", exc)
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
        self.link.ok()
        if self.up is not True:
            self._set_up(True)

    async def close(self) -> None:
        await self.resp.close()
        await self.link.close()

    async def _command(self, operation: str, *command: object) -> object:
        """One command on `resp` (`StoreError` when it fails; refused without a network call while the breaker is
        open); retried once at once when the connection was lost (a Redis restart whose loss had not been seen
        yet), never after a timeout. A write whose reply was lost may then run twice: each caller's is harmless
        twice (`SET` of the same value, an unlock) or checks (`try_lock`)."""
        self.link.client(operation)  # started, and the breaker allows it
        try:
            try:
                reply = await self.resp.execute(*command)
            except TimeoutError:
                raise
            except ConnectionError:
                reply = await self.resp.execute(*command)
        except (ReplyError, OSError) as exc:  # ConnectionError and TimeoutError are OSErrors: they open the breaker
            raise self.link.failed(operation, exc) from None
        self._ok()
        return reply

    async def get(self, key: str) -> bytes | None:
        return await self._command("get", "GET", key)  # type: ignore[return-value]

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._command("set", "SET", key, value, "PX", max(1, ttl_ms))

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        if await self._command("lock", "SET", key, token, "NX", "PX", max(1, ttl_ms)) is not None:
            return True
        # not taken, or taken by a first attempt whose reply was lost with its connection: the holder says which
        return await self._command("get", "GET", key) == token.encode()

    async def unlock(self, key: str, token: str) -> None:
        try:
            await self._command("lock", "EVALSHA", UNLOCK_SHA, 1, key, token)
        except StoreError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            # a restarted or flushed Redis: EVAL loads the script again (for the next EVALSHA) and runs it
            await self._command("lock", "EVAL", _UNLOCK, 1, key, token)

    async def peek(self, key: str, lock: str) -> tuple[bytes | None, bool]:
        value, holder = await self._command("get", "MGET", key, lock)  # type: ignore[misc]
        return value, holder is not None

    async def purge_prefix(self, prefix: str) -> int:
        """UNLINK every key starting with `prefix` (SCAN in batches); how many were removed."""
        return await purge_keys(self.link.client("purge"), prefix)

"""The Redis client learning uses (its own small pool; off the request path, so timeouts may be longer)."""

from __future__ import annotations

from redis.asyncio import Redis

LEARNING_REDIS_TIMEOUT = 1.0


def learning_redis(url: str, timeout: float = LEARNING_REDIS_TIMEOUT) -> Redis:
    """A client for `url`; connections open on first use (a Redis that is down does not stop startup)."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=8,
        decode_responses=False,
    )

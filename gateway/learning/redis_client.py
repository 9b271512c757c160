"""The Redis client learning uses (its own small pool; off the request path, so timeouts may be longer)."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.redis_link import redis_client

LEARNING_REDIS_TIMEOUT = 1.0


def learning_redis(url: str, timeout: float = LEARNING_REDIS_TIMEOUT) -> Redis:
    """A client for `url`; connections open on first use (a Redis that is down does not stop startup)."""
    return redis_client(url, timeout_seconds=timeout, max_connections=8)

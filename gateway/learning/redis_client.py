"""The Redis client learning uses (its own small pool; off the request path, so timeouts may be longer).

Built and closed through `gateway.redis_link` (`redis_client`, `close_client`). Its connections carry the client
name `LEARNING_CLIENT_NAME` (`CLIENT LIST` shows which connections are learning's).
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.redis_link import close_client, redis_client

__all__ = ["LEARNING_CLIENT_NAME", "LEARNING_REDIS_TIMEOUT", "close_client", "learning_redis"]

LEARNING_REDIS_TIMEOUT = 1.0
LEARNING_CLIENT_NAME = "slm-gateway-learning"


def learning_redis(url: str, timeout: float = LEARNING_REDIS_TIMEOUT) -> Redis:
    """A client for `url`; connections open on first use (a Redis that is down does not stop startup)."""
    return redis_client(url, timeout_seconds=timeout, max_connections=8, client_name=LEARNING_CLIENT_NAME)

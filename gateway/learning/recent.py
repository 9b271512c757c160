"""Recent requests remembered for feedback: request id -> tenant, served tier, prompt, models, router score.

Each process keeps the last `capacity` in memory. With Redis, records are also written (by a background task,
never on the request path) under `<prefix>:req:<id>` with a TTL, so that any replica can take the feedback.
A request is rated once: `<prefix>:rated:<id>` (SET NX) in Redis, a flag in memory otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.tasks import cancel_and_wait

log = logging.getLogger("slm_gateway.learning")

WRITE_QUEUE = 1000


class Remembered(msgspec.Struct, kw_only=True):
    """What feedback needs to know about a request."""

    request_id: str
    tenant: str
    served_tier: str
    prompt: str
    local_model: str | None
    upstream_model: str | None
    router_score: float | None
    private: bool = False


class RecentRequests:
    """The bounded memory of recent requests (in Redis too when configured)."""

    def __init__(self, capacity: int, *, redis: Redis | None = None, key_prefix: str = "slmgw:labels:v1",
                 ttl_seconds: int = 86_400, on_drop: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.redis = redis
        self.key_prefix = key_prefix
        self.ttl_seconds = ttl_seconds
        self._on_drop = on_drop or (lambda: None)
        self._items: OrderedDict[str, Remembered] = OrderedDict()
        self._rated: set[str] = set()
        self._writes: asyncio.Queue[Remembered] | None = None
        self._writer: asyncio.Task[None] | None = None

    def _key(self, kind: str, request_id: str) -> str:
        return f"{self.key_prefix}:{kind}:{request_id}"

    async def start(self) -> None:
        if self.redis is not None:
            self._writes = asyncio.Queue(WRITE_QUEUE)
            self._writer = asyncio.create_task(self._write_loop(), name="learning-recent-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            await cancel_and_wait(self._writer)
            self._writer = None

    def remember(self, item: Remembered) -> None:
        """Remember one request (request path: a dict insert and a non-blocking put)."""
        items = self._items
        items[item.request_id] = item
        if len(items) > self.capacity:
            old, _ = items.popitem(last=False)
            self._rated.discard(old)
        if self._writes is not None:
            try:
                self._writes.put_nowait(item)
            except asyncio.QueueFull:
                self._on_drop()

    async def _write_loop(self) -> None:
        assert self._writes is not None and self.redis is not None
        while True:
            item = await self._writes.get()
            try:
                await self.redis.set(self._key("req", item.request_id), msgspec.json.encode(item), ex=self.ttl_seconds)
            except (RedisError, OSError) as exc:
                log.warning("recent request write failed (%s): %s", type(exc).__name__, exc)

    async def lookup(self, request_id: str) -> Remembered | None:
        """The remembered request (this process first, then Redis), or None."""
        found = self._items.get(request_id)
        if found is not None or self.redis is None:
            return found
        try:
            raw = await self.redis.get(self._key("req", request_id))
        except (RedisError, OSError):
            return None
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=Remembered)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def mark_rated(self, request_id: str) -> bool:
        """True the first time a request is rated (across replicas with Redis), False afterwards."""
        if self.redis is not None:
            try:
                first = await self.redis.set(self._key("rated", request_id), b"1", nx=True, ex=self.ttl_seconds)
                return bool(first)
            except (RedisError, OSError):
                pass  # fall back to this process's memory
        if request_id in self._rated:
            return False
        self._rated.add(request_id)
        return True

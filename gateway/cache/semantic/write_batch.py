"""`WriteBatches`: writes issued close together, sent as one batch.

The Redis index's writes (one `XADD` and two `PEXPIRE`s per indexed prompt) cost a round trip each: on this
machine ~0.3 ms of the gateway's CPU, most of it redis-py's layers and the socket's system calls (py-spy under
bench/cache.py). Under load several semantic misses finish within a few milliseconds of each other, so each write
waits up to `linger_seconds` (by default only to the end of the event loop's turn) for others to ride along in
the same pipeline, and a stream's TTL is pushed out once per batch; each caller awaits its batch. One batch is in
flight at a time: what is queued meanwhile goes as the next batch once it is back (group commit: no wait when
idle, larger batches under load, and the index's catch-ups never overlap each other). The index's own replica
sees a row at once (its mirror is written before the batch); other replicas up to `linger_seconds` plus the
batch ahead later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.cache.store import StoreError

T = TypeVar("T")

WRITE_LINGER = 0.0
"""Seconds a write waits for others to share its round trip; 0: those issued in the same event-loop turn (no
later for other replicas than an unbatched write; a linger of 2 ms made tests that read Redis right after an
answer see the row late)."""


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a batch's failure as seen (every waiter, if any, got it already)."""
    if not future.cancelled():
        future.exception()


class WriteBatches(Generic[T]):
    """Items queued within `linger_seconds` of the first go to `write` together; `queue` returns their batch's
    outcome (the exception `write` raised, for every item of the batch)."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]], *, linger_seconds: float = WRITE_LINGER) -> None:
        self._write = write
        self.linger_seconds = linger_seconds
        self._items: list[T] = []
        self._done: asyncio.Future[None] | None = None
        self._timer: asyncio.Handle | None = None
        self._running: set[asyncio.Task[None]] = set()

    def queue(self, item: T) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._done is None:
            self._done = loop.create_future()
            self._done.add_done_callback(_retrieve)
            self._timer = (loop.call_later(self.linger_seconds, self._flush) if self.linger_seconds > 0
                           else loop.call_soon(self._flush))
        self._items.append(item)
        return self._done

    def _flush(self) -> None:
        self._timer = None
        if self._running:  # one batch at a time: this one goes when the batch in flight is back (`_sent`)
            return
        items, done = self._items, self._done
        self._items, self._done = [], None
        if done is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(items, done))
        self._running.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._done is not None and self._timer is None and not task.cancelled():
            self._flush()

    async def _send(self, items: list[T], done: asyncio.Future[None]) -> None:
        try:
            await self._write(items)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter of the batch
            if not done.done():
                done.set_exception(exc if isinstance(exc, Exception) else StoreError("set", "cancelled"))
            if not isinstance(exc, Exception):
                raise
        else:
            if not done.done():
                done.set_result(None)

    async def close(self) -> None:
        """Send what is queued now, and wait for the batches under way."""
        if self._timer is not None:
            self._timer.cancel()
            self._flush()
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
            if self._done is not None and not self._running:
                self._flush()

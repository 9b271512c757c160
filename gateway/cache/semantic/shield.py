"""`unless_late`: a Redis operation that a deadline may stop waiting for, but never cancels.

redis-py drops a connection whose command was cancelled (its reply is unread), so every lookup or index write
that ran over the semantic cache's deadline cost a new connection (connect, handshake, and `importlib.metadata`
for the client's name). Under overload (bench/cache.py at load 8) that was ~15 % of the gateway's CPU, which made
the overload worse. Run to its end in a task of its own, the operation gives its connection back to the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


def _retrieve(task: asyncio.Future[object]) -> None:
    """Mark an abandoned operation's outcome as seen (the caller already turned it into a miss)."""
    if not task.cancelled():
        task.exception()


async def unless_late(operation: Awaitable[T]) -> T:
    """Await `operation` in a task of its own: a cancellation of the caller (its deadline) leaves it running."""
    task = asyncio.ensure_future(operation)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)

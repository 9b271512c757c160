"""Stop work for a client that has gone: uvicorn does not cancel a handler when its client disconnects, it only
reports `http.disconnect` to whoever calls `receive()` next."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from litestar.types import Receive

T = TypeVar("T")
WATCHER_NAME = "slm-gateway-disconnect-watcher"


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T | None:
    """Await `work` (after the request body was read) in this task; if the client disconnects first, cancel it and
    return None. One watcher task is the whole cost (the work is not wrapped in a task of its own)."""
    handler = asyncio.current_task()
    assert handler is not None
    gone = over = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        if not over:
            gone = True
            handler.cancel()  # `work` sees CancelledError at its current await

    watcher = asyncio.get_running_loop().create_task(watch(), name=WATCHER_NAME)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        handler.uncancel()  # our own cancellation: the client left, the request is over
        return None
    finally:
        over = True
        watcher.cancel()

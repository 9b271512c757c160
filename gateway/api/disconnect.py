"""Stop work for a client that has gone: uvicorn does not cancel a handler when its client disconnects, it only
reports `http.disconnect` to whoever calls `receive()` next."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from litestar.types import Receive

T = TypeVar("T")


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T | None:
    """Await `work` (after the request body was read); cancel it and return None if the client disconnects first."""
    task = asyncio.ensure_future(work)
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not gone:
            raise
        return None
    finally:
        watcher.cancel()

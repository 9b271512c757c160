"""`cancel_and_wait`: stop background tasks at shutdown (bottom floor: imports nothing of the gateway)."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and wait until every one is done, dropping what each ended with (result, exception or
    cancellation), as `asyncio.gather(..., return_exceptions=True)` does; a task already done is only waited for.
    Cancelling the caller while it waits cancels the tasks' wait too (and the caller sees CancelledError)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

"""In-process collapsing of identical misses: the first request computes, the others await its result."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Flights(Generic[T]):
    """One future per key while a leader computes it. Followers wait (bounded) for the leader's result.

    A leader must always `land` its flight (with a result, or None when it produced nothing cacheable);
    a flight that is never landed only costs its followers their timeout, after which it is dropped.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T | None]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def take_off(self, key: str) -> asyncio.Future[T | None] | None:
        """Become the leader for `key` (returns its future), or None when a flight is already in the air."""
        if key in self._flights:
            return None
        future: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        return future

    async def wait(self, key: str, timeout: float) -> T | None:
        """The result of the flight for `key` (None if it landed empty, timed out, or there is none)."""
        future = self._flights.get(key)
        if future is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not future.cancelled():
                raise  # this follower was cancelled (its client went away), not the flight
            if self._flights.get(key) is future:  # a stuck leader: let the next request lead
                del self._flights[key]
            return None

    def land(self, key: str, future: asyncio.Future[T | None], result: T | None) -> None:
        """Publish the leader's result to its followers and clear the key. Safe to call more than once."""
        if self._flights.get(key) is future:
            del self._flights[key]
        if not future.done():
            future.set_result(result)

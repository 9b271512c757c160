"""WriteBatches: writes queued in one event-loop turn (or within the linger) go out together."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cache.semantic.write_batch import WriteBatches
from gateway.cache.store import StoreError


async def test_writes_of_one_turn_share_a_batch_and_its_outcome() -> None:
    sent: list[list[int]] = []

    async def write(items: list[int]) -> None:
        sent.append(items)
        if 99 in items:
            raise StoreError("set", "redis down")

    batches: WriteBatches[int] = WriteBatches(write)
    first, second = batches.queue(1), batches.queue(2)
    assert first is second
    await first
    third = batches.queue(3)  # a later turn: a batch of its own
    await third
    assert sent == [[1, 2], [3]]
    failing = [batches.queue(99), batches.queue(4)]
    for waiter in failing:
        with pytest.raises(StoreError):
            await waiter
    assert sent[-1] == [99, 4]


async def test_close_sends_what_is_queued() -> None:
    sent: list[list[str]] = []

    async def write(items: list[str]) -> None:
        await asyncio.sleep(0)
        sent.append(items)

    batches: WriteBatches[str] = WriteBatches(write, linger_seconds=60.0)
    waiter = batches.queue("a")
    await batches.close()
    await waiter
    assert sent == [["a"]]

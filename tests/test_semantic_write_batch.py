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


async def test_one_batch_in_flight_what_comes_meanwhile_goes_next_together() -> None:
    sent: list[list[int]] = []
    gate = asyncio.Event()

    async def write(items: list[int]) -> None:
        sent.append(items)
        if items == [1]:
            await gate.wait()  # the first batch's round trip

    batches: WriteBatches[int] = WriteBatches(write)
    first = batches.queue(1)
    await asyncio.sleep(0.01)
    later = [batches.queue(2)]
    await asyncio.sleep(0.01)  # several turns while the first batch is in flight
    later.append(batches.queue(3))
    await asyncio.sleep(0.01)
    assert sent == [[1]] and later[0] is later[1]
    gate.set()
    await first
    await later[0]
    assert sent == [[1], [2, 3]]
    waiter = batches.queue(4)
    await batches.close()
    await waiter
    assert sent == [[1], [2, 3], [4]]

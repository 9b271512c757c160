"""`gateway.tasks.cancel_and_wait`: cancel background tasks and wait until they are done, whatever they end with."""

from __future__ import annotations

import asyncio

import pytest

from gateway.tasks import cancel_and_wait


async def test_running_tasks_are_cancelled_and_waited_for_through_their_cleanup() -> None:
    log: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits: still waited for
            log.append(name)

    tasks = [asyncio.create_task(worker(n)) for n in ("a", "b")]
    await asyncio.sleep(0)
    assert await cancel_and_wait(*tasks) is None
    assert sorted(log) == ["a", "b"]
    assert [t.cancelled() for t in tasks] == [True, True]


async def test_what_the_tasks_end_with_is_dropped() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("cleanup failed") from None

    async def value() -> int:
        return 7

    async def broken() -> None:
        raise KeyError("x")

    failing, done, failed = (asyncio.create_task(c()) for c in (fails_on_cancel, value, broken))
    await asyncio.sleep(0)
    await cancel_and_wait(failing, done, failed)  # nothing raised
    assert (type(failing.exception()), str(failing.exception())) == (ValueError, "cleanup failed")
    assert (done.result(), type(failed.exception())) == (7, KeyError)  # tasks already done are left as they were
    await cancel_and_wait()  # no task: nothing to do


async def test_cancelling_the_caller_cancels_the_wait() -> None:
    stopped = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(60)  # ignores the first cancel for a while
        finally:
            stopped.set()

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(stopped.wait(), 1.0)  # the caller's cancel reached the task's cleanup too
    assert task.cancelled()

"""Settles that ride along with the next reserve (gateway/limits/redis_store.py, the `CHECK` script), on the REAL
Redis (`SLM_TEST_REDIS_URL`): a settle waits up to `settle_delay` for a reserve and is applied before it in the same
script call (so a request that ended never counts against the next one); with no reserve in time it leaves alone;
a refused reserve still applies the settles it carried; no hold is left and the counters expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.limits.records import Limits
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.store import MONTH_TTL, Denied, Granted, Scope, ScopeUsage
from tests.test_limits import REDIS_URL, prefix  # noqa: F401

NOW = 1_764_633_600.0 + 3_600.0  # 2025-12-02 01:00 UTC: far from a minute, day or month boundary


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisLimitStore]:  # noqa: F811
    s = RedisLimitStore(REDIS_URL, prefix=prefix, settle_delay=5.0)  # long: a settle can only leave with a reserve
    await s.start()
    yield s
    await s.close()


def fields(prefix: str, scope: str) -> list[bytes]:
    return sorted(redis.Redis.from_url(REDIS_URL).hkeys(f"{prefix}:c:{scope}"))


async def test_a_settle_rides_along_with_the_next_reserve_and_is_applied_first(
        store: RedisLimitStore, prefix: str) -> None:  # noqa: F811
    scope = Scope("k:key-a", Limits(concurrency=1, tpm=1_000))
    assert isinstance(await store.reserve([scope], "r1", 300, 5_000, NOW, 600.0), Granted)
    settle = asyncio.ensure_future(store.settle([scope], "r1", 120, 2_000, NOW, held=(300, 5_000)))
    await asyncio.sleep(0.05)
    assert not settle.done()  # waiting for a reserve (settle_delay 5 s)
    second = await store.reserve([scope], "r2", 300, 5_000, NOW + 1, 600.0)
    # concurrency 1: admitted only because r1's settle ran first, in the same call
    assert second == Granted([ScopeUsage("k:key-a", 2, 120 + 300, 2_000, 2_000)])
    # answered by that call: well before its own delay (5 s) would have sent it
    assert await asyncio.wait_for(settle, 1.0) == [ScopeUsage("k:key-a", 1, 120, 2_000, 2_000)]
    assert fields(prefix, "k:key-a") == [b"h:r2", b"s"]


async def test_a_refused_reserve_still_applies_the_settles_it_carries(store: RedisLimitStore, prefix: str) -> None:  # noqa: F811
    scope = Scope("t:eng", Limits(rpm=1))
    assert isinstance(await store.reserve([scope], "r1", 10, 100, NOW, 600.0), Granted)
    settle = asyncio.ensure_future(store.settle([scope], "r1", 7, 70, NOW, held=(10, 100)))
    await asyncio.sleep(0)
    assert await store.reserve([scope], "r2", 10, 100, NOW, 600.0) == Denied("t:eng", "requests", 1.0, 1.0)
    assert await settle == [ScopeUsage("t:eng", 1, 7, 70, 70)]
    assert fields(prefix, "t:eng") == [b"s"]  # no hold left
    assert await store.usage("t:eng", NOW) == ScopeUsage("t:eng", 1, 7, 70, 70)


async def test_with_no_reserve_in_time_a_settle_leaves_alone(prefix: str) -> None:  # noqa: F811
    store = RedisLimitStore(REDIS_URL, prefix=prefix, settle_delay=0.05)
    await store.start()
    try:
        scopes = [Scope("k:key-b", Limits(usd_per_day=1.0)), Scope("t:ops", Limits(usd_per_month=2.0))]
        assert isinstance(await store.reserve(scopes, "r1", 50, 900, NOW, 600.0), Granted)
        started = time.monotonic()
        used = await store.settle(scopes, "r1", 40, 800, NOW, held=(50, 900))
        assert 0.05 <= time.monotonic() - started < 2.0
        assert used == [ScopeUsage("k:key-b", 1, 40, 800, 800), ScopeUsage("t:ops", 1, 40, 800, 800)]
        client = redis.Redis.from_url(REDIS_URL)
        for scope in ("k:key-b", "t:ops"):
            assert fields(prefix, scope) == [b"s"]
            assert MONTH_TTL - 5 <= client.ttl(f"{prefix}:c:{scope}") <= MONTH_TTL
    finally:
        await store.close()


async def test_close_sends_the_settles_still_waiting(prefix: str) -> None:  # noqa: F811
    store = RedisLimitStore(REDIS_URL, prefix=prefix, settle_delay=60.0)
    await store.start()
    scope = Scope("k:key-c", Limits(rpm=10))
    assert isinstance(await store.reserve([scope], "r1", 5, 0, NOW, 600.0), Granted)
    settle = asyncio.ensure_future(store.settle([scope], "r1", 3, 0, NOW, held=(5, 0)))
    await asyncio.sleep(0)
    await store.close()
    assert await settle == [ScopeUsage("k:key-c", 1, 3, 0, 0)]
    assert fields(prefix, "k:key-c") == [b"s"]


async def test_settles_riding_with_a_reserve_whose_caller_leaves_are_counted_exactly_once(
        store: RedisLimitStore, prefix: str) -> None:  # noqa: F811
    scope = Scope("k:key-d", Limits(tpm=10_000))
    assert isinstance(await store.reserve([scope], "r1", 300, 5_000, NOW, 600.0), Granted)
    settle = asyncio.ensure_future(store.settle([scope], "r1", 120, 2_000, NOW, held=(300, 5_000)))
    await asyncio.sleep(0)
    reserve = asyncio.ensure_future(store.reserve([scope], "r2", 300, 5_000, NOW, 600.0))
    await asyncio.sleep(0)  # its call (with r1's settle) is written
    reserve.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reserve
    # r2's call ran in Redis; r1's settle, sent again, finds no hold and adds nothing more
    assert await settle == [ScopeUsage("k:key-d", 2, 120 + 300, 2_000, 2_000)]
    assert await store.usage("k:key-d", NOW) == ScopeUsage("k:key-d", 2, 120 + 300, 2_000, 2_000)
    assert fields(prefix, "k:key-d") == [b"h:r2", b"s"]


async def test_a_settle_sent_again_counts_when_its_first_call_never_ran(store: RedisLimitStore) -> None:
    scope = Scope("t:qa", Limits(rpm=10))
    assert isinstance(await store.reserve([scope], "r1", 30, 400, NOW, 600.0), Granted)
    settle = asyncio.ensure_future(store.settle([scope], "r1", 20, 300, NOW, held=(30, 400)))
    await asyncio.sleep(0)
    reserve = asyncio.ensure_future(store.reserve([scope], "r2", 30, 400, NOW, 600.0))
    reserve.cancel()  # before its first step: nothing was sent
    with pytest.raises(asyncio.CancelledError):
        await reserve
    assert await asyncio.wait_for(asyncio.shield(settle), 10) == [ScopeUsage("t:qa", 1, 20, 300, 300)]

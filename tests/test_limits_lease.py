"""Per-replica blocks (`gateway.limits.lease`) on real Redis: no script call on the request path once a block is
held, flushed spend exact, a dead replica's block expiring with its lease, a new minute not using an old block."""

from __future__ import annotations

import asyncio
import os
import struct
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.limits.lease import LeasedLimitStore
from gateway.limits.records import Limits
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.scripts import FORMAT
from gateway.limits.store import Granted, Scope
from gateway.settings import LimitSettings

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
NOW = 1_800_000_001.0  # one second into a UTC minute
pytestmark = pytest.mark.asyncio


@pytest.fixture
def prefix() -> str:
    return f"slmgw:test-lease:{uuid.uuid4().hex[:8]}"


def counters(prefix: str, scope: str) -> tuple[list[float], list[bytes]]:
    """A scope's packed counters and its hold fields."""
    h = redis.Redis.from_url(REDIS_URL).hgetall(f"{prefix}:c:{scope}")
    return list(struct.unpack(FORMAT, h[b"s"])), sorted(f for f in h if f.startswith(b"h:"))


async def leased(prefix: str, clock: list[float], **changes: float) -> LeasedLimitStore:
    settings = LimitSettings(**{"lease_demand_seconds": 10.0, "lease_refresh_seconds": 60.0, **changes})
    store = LeasedLimitStore(RedisLimitStore(REDIS_URL, prefix=prefix), settings, clock=lambda: clock[0])
    await store.start()
    return store


SCOPES = [Scope("k:a", Limits(rpm=1_000_000, tpm=10**9, concurrency=100_000, usd_per_day=1000.0)),
          Scope("t:x", Limits(usd_per_month=1000.0))]


async def test_a_steady_stream_makes_no_script_call_and_flushes_its_exact_spend(prefix: str) -> None:
    clock = [NOW]
    store = await leased(prefix, clock)
    calls: list[str] = []
    inner_reserve = store.inner.reserve

    async def counted(*args: object, **kw: object) -> object:
        calls.append("reserve")
        return await inner_reserve(*args, **kw)  # type: ignore[arg-type]

    store.inner.reserve = counted  # type: ignore[method-assign]
    spent = 0
    for i in range(30):  # until a block is held (the refresher is kicked at once): reserved alone, one call each
        assert isinstance(await store.reserve(SCOPES, f"r{i}", 100, 5_000, NOW, 600), Granted)
        await store.settle(SCOPES, f"r{i}", 60, 3_000 + i, NOW, held=(100, 5_000))
        spent += 3_000 + i
    assert 1 <= len(calls) <= 30
    await store._refresh(release=False)  # the block (what the refresher does in the background)
    refreshes, before = store.refreshes, len(calls)
    for i in range(200):
        got = await store.reserve(SCOPES, f"s{i}", 100, 5_000, NOW, 600)
        assert isinstance(got, Granted)
        assert got.usage[0].requests == 31 + i  # the last counters seen, with this replica's use since
        await store.settle(SCOPES, f"s{i}", 70, 4_000 + i, NOW, held=(100, 5_000))
        spent += 4_000 + i
    assert len(calls) == before and store.refreshes == refreshes  # no Redis call on the request path
    _, fields = counters(prefix, "k:a")
    assert fields == [store.field.encode()]  # the block's one hold, no request's
    await store.flush()
    for scope in ("k:a", "t:x"):
        s, fields = counters(prefix, scope)
        assert fields == []
        assert s[1:3] == [230.0, 30 * 60 + 200 * 70]  # requests and tokens of the minute, unused requests back
        assert s[4] == spent and s[6] == spent  # nano-dollars of the day and month: exactly what was settled
        assert s[7:10] == [0.0, 0.0, 0.0]  # nothing held
    await store.close()


async def test_a_dead_replicas_block_expires_with_its_lease(prefix: str) -> None:
    clock = [NOW]
    dead = await leased(prefix, clock, lease_hold_seconds=2.0)
    for i in range(30):
        await dead.reserve(SCOPES, f"r{i}", 100, 5_000, NOW, 600)
        await dead.settle(SCOPES, f"r{i}", 100, 5_000, NOW, held=(100, 5_000))
    await dead._refresh(release=False)
    s, fields = counters(prefix, "t:x")
    assert fields == [dead.field.encode()] and s[9] >= 1 and s[8] > 0  # held by the block
    await dead.inner.close()  # the replica dies: its block is never given back
    other = RedisLimitStore(REDIS_URL, prefix=prefix)
    await other.start()
    assert isinstance(await other.reserve(SCOPES[1:], "late", 10, 20, NOW + 2.001, 600), Granted)
    s, fields = counters(prefix, "t:x")
    assert fields == [b"h:late"] and s[7:10] == [10.0, 20.0, 1.0]  # the dead block dropped, only this hold
    await other.close()


async def test_a_block_of_the_last_minute_admits_nothing_in_the_next(prefix: str) -> None:
    clock = [NOW + 58.0]
    store = await leased(prefix, clock)
    for i in range(30):
        await store.reserve(SCOPES, f"r{i}", 100, 5_000, NOW + 58.0, 600)
        await store.settle(SCOPES, f"r{i}", 100, 5_000, NOW + 58.0, held=(100, 5_000))
    await store._refresh(release=False)
    assert isinstance(await store.reserve(SCOPES, "in", 100, 5_000, NOW + 58.5, 600), Granted)
    assert counters(prefix, "k:a")[1] == [store.field.encode()]  # from the block
    assert isinstance(await store.reserve(SCOPES, "next", 100, 5_000, NOW + 60.0, 600), Granted)
    assert counters(prefix, "k:a")[1] == sorted([b"h:next", store.field.encode()])  # a new minute: reserved alone
    clock[0] = NOW + 60.0
    await store.settle(SCOPES, "in", 100, 5_000, NOW + 60.0, held=(100, 5_000))
    await store.settle(SCOPES, "next", 100, 5_000, NOW + 60.0, held=(100, 5_000))
    await store.flush()
    s, fields = counters(prefix, "k:a")
    assert fields == [] and s[0] == (NOW + 60.0) // 60 and s[1] == 1.0  # the new minute: its one request
    assert s[4] == 32 * 5_000 and s[7:10] == [0.0, 0.0, 0.0]
    await store.close()


async def test_near_a_cap_no_block_is_granted(prefix: str) -> None:
    clock = [NOW]
    store = await leased(prefix, clock)
    small = [Scope("t:small", Limits(usd_per_day=40 * 5_000 / 1e9))]  # 40 estimates: 10% of it is 4
    admitted = 0
    for i in range(30):
        if isinstance(await store.reserve(small, f"r{i}", 100, 5_000, NOW, 600), Granted):
            admitted += 1
            await store.settle(small, f"r{i}", 100, 5_000, NOW, held=(100, 5_000))
    await store._refresh(release=False)  # headroom 10 estimates, under lease_min_headroom (20): no grant
    assert admitted == 30 and counters(prefix, "t:small")[1] == []
    for i in range(30, 45):
        if isinstance(await store.reserve(small, f"r{i}", 100, 5_000, NOW, 600), Granted):
            admitted += 1
            await store.settle(small, f"r{i}", 100, 5_000, NOW, held=(100, 5_000))
    await store.flush()
    s, fields = counters(prefix, "t:small")
    assert admitted == 40 and fields == [] and s[4] == 40 * 5_000  # exactly the cap, as without blocks
    await store.close()


async def test_two_replicas_with_blocks_never_overshoot_a_dollar_cap(prefix: str) -> None:
    """Two replicas admitting concurrently from blocks they hold (granted: the cap is 1,000 estimates), each
    request using exactly its estimate: together they admit exactly the cap's 1,000 requests, never one more."""
    clock = [NOW]
    replicas = [await leased(prefix, clock), await leased(prefix, clock)]
    cap = [Scope("t:shared", Limits(usd_per_day=1000 * 5_000 / 1e9))]
    alone = [0, 0]
    for n, store in enumerate(replicas):
        inner_reserve = store.inner.reserve

        async def counted(*args: object, _n: int = n, _inner: object = inner_reserve, **kw: object) -> object:
            alone[_n] += 1
            return await _inner(*args, **kw)  # type: ignore[operator]

        store.inner.reserve = counted  # type: ignore[method-assign]
    admitted = 0
    sequence = iter(range(10**6))

    async def one(store: LeasedLimitStore) -> bool:
        rid = f"q{next(sequence)}"
        if not isinstance(await store.reserve(cap, rid, 100, 5_000, NOW, 600), Granted):
            return False
        await store.settle(cap, rid, 100, 5_000, NOW, held=(100, 5_000))
        return True

    for _ in range(200):  # rounds of 20 concurrent requests on each replica, blocks refreshed in between
        results = await asyncio.gather(*(one(store) for store in replicas for _ in range(20)))
        admitted += sum(results)
        if not any(results):
            break
        for store in replicas:
            await store._refresh(release=False)
    for store in replicas:
        await store.flush()  # the blocks' free parts back: the last estimates are reserved alone
    while await one(replicas[0]):
        admitted += 1
    assert not await one(replicas[1])
    for store in replicas:
        await store.flush()
    s, fields = counters(prefix, "t:shared")
    assert admitted == 1000 and s[4] == 1000 * 5_000 and fields == [] and s[7:10] == [0.0, 0.0, 0.0]
    assert sum(alone) <= 500  # most were (162 of 1,000 in one run) admitted from blocks, not reserved alone
    for store in replicas:
        await store.close()

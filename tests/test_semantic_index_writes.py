"""The Redis vector index's write path: a write carries its warm mirror's catch-up (own rows never read back),
catch-ups of warm mirrors share round trips, and a write notices a purged stream. Round trips are counted with
`INFO commandstats` of a redis-server of this test's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from gateway.cache.semantic.redis_index import SYNC_LINGER, RedisVectorIndex
from gateway.cache.store import StoreError
from gateway.devtools.process import free_port
from tests.test_cache_redis_outage import OwnRedis

PREFIX = "slmgw:test:semw"
TTL_MS = 60_000
DIM = 8


@pytest.fixture(scope="module")
def server() -> Iterator[OwnRedis]:
    own = OwnRedis(free_port())
    own.start()
    yield own
    own.kill()


@pytest.fixture
async def r(server: OwnRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=server.port)
    await client.flushall()
    yield client
    await client.aclose()


def unit(i: int) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[i % DIM] = 1.0
    return vector


async def calls(r: aioredis.Redis) -> dict[str, int]:
    stats = await r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
            if name.removeprefix("cmdstat_") in ("multi", "exec", "exists", "xrange", "xadd", "pexpire")}


async def replicas(server: OwnRedis) -> tuple[RedisVectorIndex, RedisVectorIndex]:
    url = f"redis://127.0.0.1:{server.port}/0"
    one, two = (RedisVectorIndex(url, DIM, prefix=PREFIX, timeout_seconds=1, sync_interval_seconds=0.1)
                for _ in range(2))
    await one.start()
    await two.start()
    return one, two


async def keys(index: RedisVectorIndex, scope: str) -> list[str]:
    return sorted(c.entry_key for c in index._mirrors[scope].matrix.search(unit(0), 10, 0.0))


async def test_a_write_catches_its_warm_mirror_up_without_reading_its_own_rows(
    server: OwnRedis, r: aioredis.Redis
) -> None:
    one, two = await replicas(server)
    key = f"{PREFIX}:tA:sem:1"
    try:
        assert await one.search("tA:sem:1", unit(0), 4) == []  # a cold mirror: caught up (empty) before the scan
        await two.add("tA:sem:1", "foreign", unit(1), b"g", TTL_MS)  # another replica's row
        await r.config_resetstat()
        await one.add("tA:sem:1", "own-1", unit(2), b"g", TTL_MS)  # caught up within the interval: a plain write
        assert await calls(r) == {"xadd": 1, "pexpire": 2}
        ((own_1, _),) = await r.xrevrange(key, count=1)
        assert one._mirrors["tA:sem:1"].own == {own_1.decode()}  # to be skipped when a catch-up reads it
        await asyncio.sleep(0.11)  # due for a catch-up: the next write carries it
        await r.config_resetstat()
        await one.add("tA:sem:1", "own-2", unit(3), b"g", TTL_MS)
        assert await calls(r) == {"multi": 1, "exec": 1, "exists": 1, "xrange": 1, "xadd": 1, "pexpire": 2}
        mirror = one._mirrors["tA:sem:1"]
        assert await keys(one, "tA:sem:1") == ["foreign", "own-1", "own-2"] and mirror.own == set()
        ((last_id, _),) = await r.xrevrange(key, count=1)
        assert mirror.last_id == last_id.decode()  # past its own new row: never read back
        await one.search("tA:sem:1", unit(0), 4)  # caught up by the write: no round trip for an interval
        assert (await calls(r))["xrange"] == 1
    finally:
        await one.close()
        await two.close()


async def test_catch_ups_of_warm_mirrors_share_one_round_trip(server: OwnRedis, r: aioredis.Redis) -> None:
    one, two = await replicas(server)
    try:
        for scope in ("tA:sem:1", "tA:sem:2"):
            assert await one.search(scope, unit(0), 4) == []  # warm, empty
        await two.add("tA:sem:1", "f1", unit(1), b"g", TTL_MS)
        await two.add("tA:sem:2", "f2", unit(2), b"g", TTL_MS)
        await asyncio.sleep(0.11)  # both mirrors due for a catch-up
        await r.config_resetstat()
        assert await one.search("tA:sem:1", unit(1), 4) == []  # scanned as it is; the catch-up waits for company
        assert await one.search("tA:sem:2", unit(2), 4) == []
        assert await calls(r) == {}
        await asyncio.gather(*(one._mirrors[s].syncing for s in ("tA:sem:1", "tA:sem:2")))  # within SYNC_LINGER
        assert await calls(r) == {"exists": 2, "xrange": 2}  # one write on the cheap connection, no MULTI
        assert [c.entry_key for c in await one.search("tA:sem:1", unit(1), 4)] == ["f1"]
        assert [c.entry_key for c in await one.search("tA:sem:2", unit(2), 4)] == ["f2"]
        assert SYNC_LINGER == 0.02
    finally:
        await one.close()
        await two.close()


async def test_a_write_to_a_purged_scope_drops_the_purged_rows_of_its_mirror(
    server: OwnRedis, r: aioredis.Redis
) -> None:
    one, two = await replicas(server)
    try:
        await one.add("tA:sem:1", "before-purge", unit(0), b"g", TTL_MS)
        assert [c.entry_key for c in await two.search("tA:sem:1", unit(0), 4)] == ["before-purge"]
        assert await one.purge_tenant("tA") == 1  # the stream is gone; `two` has not looked since
        await asyncio.sleep(0.11)  # `two`'s mirror due for a catch-up: its write carries it
        await two.add("tA:sem:1", "after-purge", unit(0), b"g", TTL_MS)
        assert await keys(two, "tA:sem:1") == ["after-purge"]
        assert [k[b"k"] for _, k in await r.xrange(f"{PREFIX}:tA:sem:1")] == [b"after-purge"]
    finally:
        await one.close()
        await two.close()


async def test_a_catch_up_on_the_cheap_connection_fails_open_and_reconnects() -> None:
    own = OwnRedis(free_port())
    own.start()
    one, two = await replicas(own)
    try:
        assert await one.search("tA:sem:1", unit(0), 4) == []  # warm, empty
        await two.add("tA:sem:1", "f1", unit(1), b"g", TTL_MS)
        await asyncio.sleep(0.11)
        assert [c.entry_key for c in await one.search("tA:sem:1", unit(1), 4)] == []  # scanned as it is
        await one._mirrors["tA:sem:1"].syncing
        assert [c.entry_key for c in await one.search("tA:sem:1", unit(1), 4)] == ["f1"]  # caught up on `resp`
        own.kill()
        await asyncio.sleep(0.11)
        assert [c.entry_key for c in await one.search("tA:sem:1", unit(1), 4)] == ["f1"]  # the mirror, no error
        with pytest.raises(StoreError):
            await one._mirrors["tA:sem:1"].syncing
        assert one.breaker.is_open
        own.start()  # empty: the stream is gone
        await asyncio.sleep(0.25)  # past the breaker's pause
        await two.add("tA:sem:1", "f2", unit(2), b"g", TTL_MS)  # its lost connection noticed: a new one
        await asyncio.sleep(0.11)
        await one.search("tA:sem:1", unit(2), 4)
        await one._mirrors["tA:sem:1"].syncing  # a new connection (the lost one is retried once at once)
        assert [c.entry_key for c in await one.search("tA:sem:1", unit(2), 4)] == ["f2", "f1"]  # (re-created: not a reset)
    finally:
        await one.close()
        await two.close()
        own.kill()


async def test_an_error_inside_the_write_s_multi_fails_the_write(server: OwnRedis, r: aioredis.Redis) -> None:
    one, two = await replicas(server)
    try:
        assert await one.search("tA:sem:1", unit(0), 4) == []  # warm, empty
        await asyncio.sleep(0.11)  # due: the next write carries its catch-up (a MULTI)
        await r.set(one.key("tA:sem:1"), b"not a stream")
        await r.config_resetstat()
        with pytest.raises(StoreError, match="WRONGTYPE"):
            await one.add("tA:sem:1", "f1", unit(1), b"g", TTL_MS)
        assert await calls(r) == {"multi": 1, "exec": 1, "exists": 1, "xrange": 1, "xadd": 1, "pexpire": 2}  # one MULTI
        assert one.breaker.is_open is False  # an error reply is not an outage
    finally:
        await one.close()
        await two.close()

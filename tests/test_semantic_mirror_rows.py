"""The Redis index's count of mirrored rows (what `max_mirrored_vectors` bounds) is kept by the mirrors as rows come
and go: adds, catch-ups, a vanished stream's reset, eviction, purge. It must equal the sum a new mirror used to
compute over every mirror (~11 ms a new scope with 100,000 small ones)."""

from __future__ import annotations

import numpy as np
import redis.asyncio as aioredis

from gateway.cache.semantic.redis_index import RedisVectorIndex
from tests.test_semantic_cache import REDIS_URL

PREFIX = "slmgw:test:semrows"
DIM = 8
TTL_MS = 60_000


def unit(i: int) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[i % DIM] = 1.0
    return vector


def counted(index: RedisVectorIndex) -> tuple[int, int]:
    return index._rows.total, sum(len(m.matrix) for m in index._mirrors.values())


async def test_the_mirrored_row_count_follows_adds_catch_ups_resets_evictions_and_purges() -> None:
    r = aioredis.Redis.from_url(REDIS_URL)
    async for key in r.scan_iter(f"{PREFIX}:*"):
        await r.delete(key)
    writer = RedisVectorIndex(REDIS_URL, DIM, prefix=PREFIX, timeout_seconds=1)
    reader = RedisVectorIndex(REDIS_URL, DIM, prefix=PREFIX, timeout_seconds=1, max_mirrored_vectors=12)
    await writer.start()
    await reader.start()
    try:
        for i in range(5):
            await writer.add("t-a:sem:one", f"a{i}", unit(i), b"", TTL_MS)
            await writer.add("t-b:sem:two", f"b{i}", unit(i), b"", TTL_MS)
        assert counted(writer) == (0, 0)  # a replica mirrors the scopes it looks up, not those it writes
        assert len(await reader.search("t-a:sem:one", unit(0), 4)) == 4  # a cold mirror's catch-up: 5 rows
        await reader.search("t-b:sem:two", unit(0), 4)
        assert counted(reader) == (10, 10)
        await reader.add("t-b:sem:two", "b9", unit(1), b"", TTL_MS)
        assert counted(reader) == (11, 11)
        await reader.add("t-b:sem:two", "b0", unit(3), b"", TTL_MS)  # the same key again: replaced, not added
        assert counted(reader) == (11, 11)
        await r.delete(reader.key("t-a:sem:one"))  # the stream vanished: the mirror starts over, empty
        await reader.search("t-a:sem:one", unit(0), 4)
        assert counted(reader) == (6, 6)
        for i in range(7):
            await writer.add("t-c:sem:three", f"c{i}", unit(i), b"", TTL_MS)
        await reader.search("t-c:sem:three", unit(0), 4)  # 6 + 7 > 12: the next new mirror evicts first
        assert counted(reader) == (13, 13)
        await reader.search("t-d:sem:four", unit(0), 4)  # evicts t-b (least recently looked up: 6 rows), then is made
        assert sorted(reader._mirrors) == ["t-a:sem:one", "t-c:sem:three", "t-d:sem:four"]
        assert counted(reader) == (7, 7)
        assert await reader.purge_tenant("t-c") == 1
        assert counted(reader) == (0, 0)
    finally:
        for tenant in ("t-a", "t-b", "t-c"):
            await writer.purge_tenant(tenant)
        await writer.close()
        await reader.close()
        assert reader._rows.total == 0
        await r.aclose()

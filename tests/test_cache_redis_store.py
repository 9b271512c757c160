"""`RedisStore` against a real Redis: entries, locks and their failure paths on the pipelined connection."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.cache.breaker import Breaker
from gateway.cache.redis_store import UNLOCK_SHA, RedisStore
from gateway.cache.store import StoreError

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    s = RedisStore(REDIS_URL, timeout_seconds=0.5)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(REDIS_URL)
    yield c
    await c.aclose()


def fresh(name: str) -> str:
    return f"test-store:{uuid.uuid4().hex}:{name}"


async def test_set_stores_the_bytes_with_their_ttl(store: RedisStore, client: aioredis.Redis) -> None:
    key = fresh("entry")
    await store.set(key, b"\x00answer\xff", 60_000)
    assert await client.get(key) == b"\x00answer\xff"
    assert 59_000 <= await client.pttl(key) <= 60_000
    assert await store.get(key) == b"\x00answer\xff"
    await store.set(key, b"again", 0)  # a TTL below 1 ms is 1 ms, never "no expiry"
    assert await client.pttl(key) in (-2, 0, 1)
    await client.delete(key)


async def test_a_lock_is_held_by_one_token_and_released_only_by_it(
    store: RedisStore, client: aioredis.Redis
) -> None:
    lock = fresh("lock")
    assert await store.try_lock(lock, "me", 5_000) is True
    assert await store.try_lock(lock, "you", 5_000) is False
    assert 4_000 <= await client.pttl(lock) <= 5_000
    await store.unlock(lock, "you")  # not the holder: nothing happens
    assert await client.get(lock) == b"me"
    assert await store.peek(fresh("absent"), lock) == (None, True)
    await store.unlock(lock, "me")
    assert await client.exists(lock) == 0
    assert await store.try_lock(lock, "you", 5_000) is True
    await client.delete(lock)


async def test_a_lock_taken_by_a_lost_first_attempt_is_ours(store: RedisStore, client: aioredis.Redis) -> None:
    """A `SET NX` applied whose reply was lost with its connection is retried: the retry finds our own token."""
    lock = fresh("lock")
    await client.set(lock, "me", px=5_000)  # as the first attempt left it
    assert await store.try_lock(lock, "me", 5_000) is True
    assert await store.try_lock(lock, "you", 5_000) is False
    await client.delete(lock)


async def test_unlock_after_a_script_flush_loads_the_script_again(store: RedisStore, client: aioredis.Redis) -> None:
    lock = fresh("lock")
    assert await store.try_lock(lock, "me", 5_000) is True
    await client.script_flush()  # as a restarted Redis: EVALSHA answers NOSCRIPT
    assert await client.script_exists(UNLOCK_SHA) == [False]
    await store.unlock(lock, "me")
    assert await client.exists(lock) == 0
    assert await client.script_exists(UNLOCK_SHA) == [True]  # EVAL cached it for the next EVALSHA


async def test_a_killed_connection_is_reopened_for_the_next_write(store: RedisStore, client: aioredis.Redis) -> None:
    key = fresh("entry")
    await store.set(key, b"one", 60_000)
    killed = await client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # the store's connections (and any other test client's) are gone
    await store.set(key, b"two", 60_000)
    assert await client.get(key) == b"two"
    assert store.breaker.is_open is False
    await client.delete(key)


async def test_an_unreachable_redis_is_a_store_error_and_opens_the_breaker() -> None:
    clock = Clock()
    s = RedisStore("redis://127.0.0.1:1/0", timeout_seconds=0.2, breaker=Breaker(base=1.0, clock=clock))
    await s.start()  # its ping fails: the breaker opens
    try:
        assert s.up is False and s.breaker.is_open is True
        with pytest.raises(StoreError) as skipped:  # backing off: no network call
            await s.set(fresh("entry"), b"x", 1_000)
        assert skipped.value.operation == "connect" and "backing off" in str(skipped.value)
        clock.now += 1.5  # half-open: the next write tries the network
        for write in (lambda: s.try_lock(fresh("lock"), "me", 1_000), lambda: s.unlock(fresh("lock"), "me")):
            with pytest.raises(StoreError) as failed:
                await write()
            assert str(failed.value) == "cache store lock failed: ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
            assert s.breaker.is_open is True
            clock.now += 10
    finally:
        await s.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

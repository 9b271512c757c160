"""The pipelined Redis connection (gateway/resp.py), as the limit store uses it: on the REAL Redis
(`SLM_TEST_REDIS_URL`), concurrent commands share one connection and each gets its own reply; against a server
that never answers, a command fails with TimeoutError and the stuck connection is dropped."""

from __future__ import annotations

import asyncio

import pytest

from gateway.resp import PipelinedRedis, ReplyError
from tests.test_limits import REDIS_URL


async def test_concurrent_commands_get_their_own_replies_over_one_connection() -> None:
    redis = PipelinedRedis(REDIS_URL)
    try:
        replies = await asyncio.gather(*(redis.execute("ECHO", f"m{i}") for i in range(300)))
        assert replies == [f"m{i}".encode() for i in range(300)]
        first = redis._conn
        with pytest.raises(ReplyError, match="unknown command"):
            await redis.execute("NO-SUCH-COMMAND")
        assert await redis.execute("ECHO", "after") == b"after"  # an error reply keeps the connection
        assert redis._conn is first
    finally:
        await redis.close()


async def test_a_silent_server_times_out_and_the_connection_is_dropped() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        results = await asyncio.gather(redis.execute("PING"), redis.execute("PING"), return_exceptions=True)
        assert type(results[0]) is TimeoutError
        assert type(results[1]) in (TimeoutError, ConnectionError)  # timed out too, or failed with the connection
        assert redis._conn is not None and redis._conn.closed
        with pytest.raises(TimeoutError):
            await redis.execute("PING")  # a new connection, just as silent
        assert len(accepted) == 2
    finally:
        await redis.close()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()

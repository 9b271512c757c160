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


def test_a_reply_read_late_by_a_busy_uvloop_is_not_a_timeout() -> None:
    """The gateway serves on uvloop, which runs due timers before it polls the sockets: a command whose reply sat
    in the socket while the loop was busy past the deadline gets that reply (the watchdog looks once more after
    the loop has read the socket), not a `TimeoutError`. The busy spell is a socket callback (as a request's
    handling is): after it, the next loop iteration starts with the due timers, the replies still unread."""
    import socket
    import time

    import uvloop

    async def main() -> list[object]:
        redis = PipelinedRedis(REDIS_URL, timeout=0.05)
        wake, trigger = socket.socketpair()
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[object]] = []

        def busy() -> None:  # written from the callback, so the replies come while it is busy, not before it
            wake.recv(1)
            conn = redis._conn
            assert conn is not None
            pending.extend(redis._send(conn, ("ECHO", f"late{i}")) for i in range(3))
            conn.flush()
            time.sleep(0.15)

        try:
            await redis.execute("PING")  # connected
            loop.add_reader(wake.fileno(), busy)
            trigger.send(b"x")
            while not pending:
                await asyncio.sleep(0.001)
            return list(await asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.remove_reader(wake.fileno())
            wake.close()
            trigger.close()
            await redis.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == [b"late0", b"late1", b"late2"]

"""`PipelinedRedis`: one Redis connection on which every caller's command is written at once and answered in order.

Used where a command's own CPU cost matters: the limit store (`gateway.limits.redis_store`, every command) and the
cache store's entry reads (`gateway.cache.redis_store`, the `GET` of every exact lookup and semantic hit).
Why not redis-py's asyncio client there: `bench/redis_client.py` (redis-py 8.1.0 with hiredis, the pool
`gateway/redis_link.py` builds; 2 shared cores at load ~7) measured 130-160 µs of this process' CPU per EVALSHA
(its layers, a pooled connection per command in flight), against 12-36 µs here: redis-py alone would be half
the whole budget of a limit check (0.3 ms). The protocol itself is hiredis' (C): `pack_command` writes a
command, `Reader` parses replies. What is left here is a FIFO of futures over one asyncio connection, so
concurrent checks share one socket (pipelined).

A command on an idle connection (nothing in flight) is written at once: Redis runs it while the connection is
idle (for a settle: rather than just before, in the same batch as, the next request's reserve, which would then
wait for it). Else writes are coalesced, because on this machine a loopback `send` costs far more than packing
a command: commands issued in one event-loop turn leave in one write, and a `lazy` command (a settle, which
nobody waits for) waits up to `linger` seconds for the next command to ride along with.

A command not answered within `timeout` seconds fails with `TimeoutError` (checked by one watchdog timer per
connection, not a timer per command; a command may time out up to `linger` late, and a millisecond later than its
deadline, after one more read of the socket). If nothing at all came back
on the connection for that long (Redis hung, or the network gone without a reset), the connection is aborted:
every command waiting on it fails with `ConnectionError`, and the next command reconnects. A reply that arrives
after its command timed out is read and dropped, so the order of the others is kept.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import hiredis

from gateway.redis_url import RedisTarget, redis_target


SECOND_LOOK = 0.001
"""How long after a command's deadline the watchdog looks again before failing it (see `_Connection.check`)."""


class ReplyError(Exception):
    """Redis answered the command with an error (`-ERR ...`, `-NOSCRIPT ...`)."""


class RedisAuthError(ConnectionError):
    """Redis refused the connection's set-up (`AUTH`: `WRONGPASS`; a command before it: `NOAUTH`): like redis-py's
    `AuthenticationError`, a connection failure (it opens the callers' breakers); its text is Redis', never the
    password."""


AUTH_REFUSALS = ("NOAUTH", "WRONGPASS")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ReplyError)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (reply, deadline) in sending order
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.out: list[bytes] = []
        self.flush_at: asyncio.Handle | None = None
        self.soon = False
        self.last_reply = 0.0
        self.watch: asyncio.TimerHandle | None = None

    def flush(self) -> None:
        if self.flush_at is not None:
            self.flush_at.cancel()
            self.flush_at = None
        self.soon = False
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last_reply = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        self.last_reply = asyncio.get_running_loop().time()
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()[0]
            if future.done():
                continue
            if isinstance(reply, ReplyError):
                future.set_exception(RedisAuthError(f"redis refused: {reply}") if str(reply).startswith(AUTH_REFUSALS)
                                     else reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = ConnectionError(f"redis connection lost: {exc}" if exc else "redis connection closed")
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)

    def check(self, timeout: float, second_look: bool = False) -> None:
        """The watchdog: fail the commands past their deadline (and abort a connection that has been silent for
        `timeout`); run again at the next deadline while commands wait.

        A command past its deadline is failed only on a second look, after the event loop has read the socket
        once more (`SECOND_LOOK` later): on a busy loop the watchdog's timer can be due before the reply that is
        already in the socket has been read (uvloop runs timers before polling), which made commands answered
        in microseconds fail as timeouts (and open the cache's breaker) under overload."""
        self.watch = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not second_look and any(deadline <= now and not f.done() for f, deadline in self.waiting):
            self.watch = loop.call_later(SECOND_LOOK, self.check, timeout, True)
            return
        expired = False
        next_deadline = 0.0
        for future, deadline in self.waiting:
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(TimeoutError("redis did not answer in time"))
                expired = True
            elif next_deadline == 0.0 or deadline < next_deadline:
                next_deadline = deadline
        if expired and now - self.last_reply >= timeout:  # nothing came back: the connection is stuck
            self.abort()
        elif next_deadline:
            self.watch = loop.call_at(next_deadline, self.check, timeout)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class PipelinedRedis:
    """Commands over one connection to `url` (redis://, rediss://, unix://, read as redis-py reads it:
    `gateway.redis_url`), reconnecting when it is lost. `RedisUrlError` here for a URL it cannot honour."""

    def __init__(self, url: str, *, timeout: float = 0.5, linger: float = 0.01) -> None:
        self.target: RedisTarget = redis_target(url)
        self.timeout = timeout
        self.linger = linger
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    def __repr__(self) -> str:  # the URL may carry a password
        return "PipelinedRedis()"

    async def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None

    async def _open(self) -> _Connection:
        """A connection, set up as redis-py's would be: TLS (its context), AUTH, CLIENT SETNAME, SELECT."""
        loop = asyncio.get_running_loop()
        target = self.target
        if target.path is not None:
            connect = loop.create_unix_connection(_Connection, target.path)
        else:
            connect = loop.create_connection(_Connection, target.host, target.port, ssl=target.tls,
                                             server_hostname=target.server_hostname if target.tls else None)
        _, conn = await asyncio.wait_for(connect, self.timeout)
        setup: list[tuple[Any, ...]] = []
        if target.username is not None:
            setup.append(("AUTH", target.username, target.password or ""))
        elif target.password:
            setup.append(("AUTH", target.password))
        if target.client_name:
            setup.append(("CLIENT", "SETNAME", target.client_name))
        if target.db:
            setup.append(("SELECT", target.db))
        try:
            for command in setup:
                await self._send(conn, command)
        except ReplyError as exc:
            conn.abort()
            raise RedisAuthError(f"redis refused the connection set-up: {exc}") from None
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:  # one connect at a time; the others wait for it
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            conn = await asyncio.shield(connecting)
        except BaseException:
            if self._connecting is connecting:
                self._connecting = None
            raise
        self._connecting = None
        self._conn = conn
        return conn

    def _send(self, conn: _Connection, command: tuple[Any, ...], lazy: bool = False) -> asyncio.Future[Any]:
        """Queue `command` on `conn`; its reply's future."""
        assert conn.transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        idle = not conn.waiting  # nothing in flight: Redis would run this now, before any command to come
        deadline = loop.time() + self.timeout + (self.linger if lazy else 0.0)
        conn.waiting.append((future, deadline))
        conn.out.append(hiredis.pack_command(command))
        if idle:  # nothing in flight (nor queued): it leaves now, without waiting for the end of the loop turn
            conn.flush()
        elif not lazy:
            if not conn.soon:  # everything issued in this loop turn leaves in one write
                conn.soon = True
                loop.call_soon(conn.flush)
        elif conn.flush_at is None and not conn.soon:
            conn.flush_at = loop.call_later(self.linger, conn.flush)
        if conn.watch is None:
            conn.watch = loop.call_at(deadline, conn.check, self.timeout)
        return future

    async def execute(self, *command: Any, lazy: bool = False) -> Any:
        """Send one command and return its reply (`ReplyError` for an error reply, `ConnectionError` /
        `TimeoutError` when Redis cannot be reached in time). `lazy`: it may wait `linger` s to be sent."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        return await self._send(conn, command, lazy)

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """`execute` of several commands, sent at once in one write (with whatever else was queued), their replies
        in order; the first failure is raised (the others' are read and dropped)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        assert conn.transport is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        futures: list[asyncio.Future[Any]] = []
        for command in commands:
            future: asyncio.Future[Any] = loop.create_future()
            conn.waiting.append((future, deadline))
            conn.out.append(hiredis.pack_command(command))
            futures.append(future)
        conn.flush()
        if conn.watch is None:
            conn.watch = loop.call_at(deadline, conn.check, self.timeout)
        return await asyncio.gather(*futures)

"""A lean asyncio HTTP/1.1 client for load generation: keep-alive connections, httptools parsing.

Requests are pre-encoded bytes, so a request costs one `write` and one parse; the time of the
first body byte and of the last byte are taken in `data_received`, before any Python-level
buffering. Only loopback targets are expected; no TLS, no redirects, no decompression.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools


@dataclass(slots=True)
class Reply:
    """What came back for one request (times from time.perf_counter())."""

    status: int
    sent: float
    first_byte: float
    done: float
    body_bytes: int


class ConnectionClosed(Exception):
    """The server closed the connection before the response was complete."""


def encode_request(url: str, body: bytes, headers: Mapping[str, str] | None = None, method: str = "POST") -> bytes:
    """The exact bytes of one HTTP/1.1 request to `url`."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    lines = [f"{method} {target} HTTP/1.1", f"host: {parts.netloc}", f"content-length: {len(body)}"]
    if body:
        lines.append("content-type: application/json")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self.reusable = True
        self._sent = 0.0
        self._first = 0.0
        self._bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionClosed(str(exc) if exc else "connection closed by server"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionClosed(f"bad response: {exc}"))
            self.close()

    def on_body(self, body: bytes) -> None:
        if not self._first:
            self._first = time.perf_counter()
        self._bytes += len(body)

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        self.reusable = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            status = self.parser.get_status_code()
            self.waiter.set_result(Reply(status, self._sent, self._first or now, now, self._bytes))

    def send(self, raw: bytes) -> asyncio.Future[Reply]:
        """Write a request; the future resolves with its Reply."""
        assert self.transport is not None
        self._sent = time.perf_counter()
        self._first = 0.0
        self._bytes = 0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()


@dataclass
class Pool:
    """Keep-alive connections to one host:port, at most `limit` open; waiters are served FIFO."""

    host: str
    port: int
    limit: int = 256
    idle: deque[_Conn] = field(default_factory=deque)
    open_count: int = 0
    opened_total: int = 0
    _waiters: deque[asyncio.Future[_Conn]] = field(default_factory=deque)

    @classmethod
    def for_url(cls, url: str, limit: int = 256) -> Pool:
        """A pool for the host:port of `url`."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, limit)

    async def _open(self) -> _Conn:
        self.open_count += 1
        self.opened_total += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Conn, self.host, self.port)
        except BaseException:
            self.open_count -= 1
            raise
        return conn

    async def warm(self, n: int) -> None:
        """Open `n` connections ahead of time (capped by the limit)."""
        n = max(0, min(n, self.limit - self.open_count))
        conns = await asyncio.gather(*(self._open() for _ in range(n)))
        self.idle.extend(conns)

    async def acquire(self) -> _Conn:
        """An idle connection, a new one, or the next one released."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
            self.open_count -= 1
        if self.open_count < self.limit:
            return await self._open()
        waiter: asyncio.Future[_Conn] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def release(self, conn: _Conn) -> None:
        """Give a connection back after its response (closes it if it is not reusable)."""
        if conn.closed or not conn.reusable:
            conn.close()
            self.open_count -= 1
            if self._waiters and self.open_count < self.limit:
                self._hand_new(self._waiters.popleft())
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def _hand_new(self, waiter: asyncio.Future[_Conn]) -> None:
        async def opener() -> None:
            try:
                conn = await self._open()
            except Exception as exc:  # noqa: BLE001 - passed on to the waiting request
                if not waiter.done():
                    waiter.set_exception(exc)
                return
            if waiter.done():
                self.release(conn)
            else:
                waiter.set_result(conn)

        asyncio.ensure_future(opener())

    def close(self) -> None:
        """Close every idle connection."""
        while self.idle:
            self.idle.pop().close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()


async def fetch(pool: Pool, raw: bytes) -> Reply:
    """Send one pre-encoded request on a pooled connection and wait for the full response."""
    conn = await pool.acquire()
    try:
        return await conn.send(raw)
    except BaseException:
        conn.close()
        raise
    finally:
        pool.release(conn)

"""A minimal asyncio HTTP/1.1 server (httptools parser, keep-alive, chunked streaming).

Only what the fake upstream needs, built for speed: a handler that answers at once runs
synchronously inside the protocol, so a trivial request costs no task, no future and no copy
beyond the response bytes. A handler that needs to wait returns an awaitable; the connection
then pauses reading and queues pipelined requests until it is done, so responses stay in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

Headers = Iterable[tuple[str, str]]


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool
    path: str = ""
    query: str = ""

    def __post_init__(self) -> None:
        path, _, query = self.target.partition("?")
        self.path = path
        self.query = query

    def header(self, name: str, default: str | None = None) -> str | None:
        """Value of the first header called `name` (lower-case), or `default`."""
        for key, value in self.headers:
            if key == name:
                return value
        return default


Handler = Callable[[Request, "Responder"], Awaitable[None] | None]


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode()


def _head(status: int, headers: Headers, extra: str) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return _status_line(status) + (lines + extra + "\r\n").encode("latin-1")


@dataclass(slots=True)
class Responder:
    """Writes the response to one request: either `send()` once, or `start()`, `write()`*, `end()`."""

    conn: _Connection
    keep_alive: bool
    done: bool = False
    streaming: bool = False

    def send(self, status: int, body: bytes, headers: Headers = ()) -> None:
        """Send a complete response with a content-length."""
        extra = f"content-length: {len(body)}\r\n"
        if not self.keep_alive:
            extra += "connection: close\r\n"
        self.conn.write(_head(status, headers, extra) + body)
        self._finish()

    def start(self, status: int, headers: Headers = ()) -> None:
        """Send the head of a chunked (streamed) response."""
        extra = "transfer-encoding: chunked\r\n"
        if not self.keep_alive:
            extra += "connection: close\r\n"
        self.conn.write(_head(status, headers, extra))
        self.streaming = True

    def write(self, data: bytes) -> None:
        """Send one chunk of a streamed response."""
        if data:
            self.conn.write(b"%x\r\n%b\r\n" % (len(data), data))

    async def drain(self) -> None:
        """Wait until the transport's write buffer has room again."""
        await self.conn.drain()

    def end(self) -> None:
        """Finish a streamed response."""
        self.conn.write(b"0\r\n\r\n")
        self._finish()

    def abort(self) -> None:
        """Close the connection at once, mid-response (simulates a dropped upstream)."""
        self.done = True
        self.conn.close()

    @property
    def closed(self) -> bool:
        """True once the client has gone away."""
        return self.conn.closed

    def _finish(self) -> None:
        self.done = True
        if not self.keep_alive:
            self.conn.close()


@dataclass(eq=False)
class _Connection(asyncio.Protocol):
    """One client connection: parses requests and dispatches them in order."""

    handler: Handler
    on_lost: Callable[[_Connection], None]
    transport: asyncio.Transport | None = None
    closed: bool = False
    _parser: httptools.HttpRequestParser | None = None
    _url: bytes = b""
    _headers: list[tuple[str, str]] = field(default_factory=list)
    _body: list[bytes] = field(default_factory=list)
    _pending: deque[Request] = field(default_factory=deque)
    _task: asyncio.Task[None] | None = None
    _drain_waiter: asyncio.Future[None] | None = None
    _paused_writing: bool = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self._parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.write(_head(501, (), "content-length: 0\r\nconnection: close\r\n"))
            self.close()
        except httptools.HttpParserError:
            self.write(_head(400, (), "content-length: 0\r\nconnection: close\r\n"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self.on_lost(self)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        request = Request(
            method=self._parser.get_method().decode("ascii"),
            target=self._url.decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
        )
        if self._task is not None or self._pending:
            self._pending.append(request)
        else:
            self._dispatch(request)

    # plumbing
    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    async def drain(self) -> None:
        if self._paused_writing and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def abort_idle(self) -> None:
        """Close the connection if no request is in progress (used at shutdown)."""
        if self._task is None and not self._pending:
            self.close()

    def _dispatch(self, request: Request) -> None:
        while True:
            responder = Responder(self, request.keep_alive)
            pending = self.handler(request, responder)
            if pending is not None:
                assert self.transport is not None
                self.transport.pause_reading()
                self._task = asyncio.ensure_future(self._run(pending, responder))
                return
            if self.closed or not self._pending:
                return
            request = self._pending.popleft()

    async def _run(self, pending: Awaitable[None], responder: Responder) -> None:
        try:
            await pending
        except asyncio.CancelledError:
            self.close()
            raise
        except Exception:  # noqa: BLE001 - a handler bug must not kill the server
            if responder.streaming or responder.done:
                self.close()
            else:
                responder.keep_alive = False
                responder.send(500, b'{"error":{"message":"internal error","type":"server_error"}}')
        else:
            if not responder.done:
                self.close()
        self._task = None
        if self.closed:
            return
        assert self.transport is not None
        self.transport.resume_reading()
        if self._pending:
            self._dispatch(self._pending.popleft())


@dataclass
class HTTPServer:
    """Serves `handler` on host:port until `close()`."""

    handler: Handler
    connections: set[_Connection] = field(default_factory=set)
    server: asyncio.Server | None = None
    total_connections: int = 0

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._new_connection, host, port, backlog=backlog, reuse_address=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting and close every connection."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()

    def _new_connection(self) -> _Connection:
        self.total_connections += 1
        conn = _Connection(self.handler, self.connections.discard)
        self.connections.add(conn)
        return conn

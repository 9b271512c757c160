"""A chat answer as a plain ASGI app, so litestar sends it as it is (the generic ASGI path of a route handler).

A `litestar.Response` costs a `Response`, an `ASGIResponse` and a `MutableScopeHeaders` per request, and encodes
every header through them (about 20 µs per request on the chat path, `bench/request_cpu.py`). The chat answer's
headers are a small dict of ASCII strings and its body is bytes already, so `JSONAnswer` and `EventStreamAnswer`
encode the head once and send it, with exactly what litestar sends for the same response: the answer's headers
in order (names lower-cased), then `content-type` (for a stream `text/event-stream; charset=utf-8`) and, for a
complete body, `content-length`; the background callback runs after the last byte, as a `BackgroundTask` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from litestar.types import HTTPResponseBodyEvent, Receive, Scope, Send

from gateway.api.disconnect import unless_disconnected
from gateway.openai.wire import FinalChunk

JSON_TYPE = b"application/json"
EVENT_STREAM_TYPE = b"text/event-stream; charset=utf-8"
After = Callable[[], Awaitable[None]]


def encode_head(headers: Mapping[str, str], content_type: bytes, length: int | None) -> list[tuple[bytes, bytes]]:
    """The raw header list litestar builds for these headers (`content-type` / `content-length` unless given)."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    if "content-type" not in headers:
        raw.append((b"content-type", content_type))
    if length is not None and "content-length" not in headers:
        raw.append((b"content-length", b"%d" % length))
    return raw


class JSONAnswer:
    """A complete JSON answer: status, headers and body bytes."""

    __slots__ = ("status", "headers", "body", "after")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes, after: After | None = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.body
        await send({"type": "http.response.start", "status": self.status,
                    "headers": encode_head(self.headers, JSON_TYPE, len(body))})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        if self.after is not None:
            await self.after()


async def send_events(chunks: AsyncIterator[bytes], send: Send) -> None:
    """Send SSE bytes as they come; a `FinalChunk` ends the body in the same write (no empty last message)."""
    async for chunk in chunks:
        final = isinstance(chunk, FinalChunk)
        event: HTTPResponseBodyEvent = {"type": "http.response.body", "body": chunk, "more_body": not final}
        await send(event)
        if final:
            return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class EventStreamAnswer:
    """A streamed answer (status 200): SSE-framed chunks; a client that leaves cancels the producer quietly."""

    __slots__ = ("chunks", "headers", "after")

    def __init__(self, chunks: AsyncIterator[bytes], headers: Mapping[str, str], after: After | None = None) -> None:
        self.chunks = chunks
        self.headers = headers
        self.after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": encode_head(self.headers, EVENT_STREAM_TYPE, None)})
        await unless_disconnected(receive, send_events(self.chunks, send))
        if self.after is not None:
            await self.after()

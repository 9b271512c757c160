"""uvicorn's httptools protocol with the limits it lacks: request head size, head and body arrival time.

httptools (llhttp) has no header size limit and uvicorn sets no timer while a request arrives, so one client can
make a worker buffer a 200 MB header, or hold connections open by trickling bytes. `GuardedHttpToolsProtocol`:

- answers 431 and closes when a request's line and headers exceed `max_header_bytes` (counted per read, so a
  worker holds at most the limit plus one read, about 256 KiB, of a head);
- answers 408 and closes when a head has not arrived `header_timeout` seconds after the connection opened (or
  after its first byte, on a kept-alive connection), or a body `body_timeout` seconds after its head;
- answers uvicorn's own 400 (a request llhttp cannot parse) OpenAI-shaped instead of in plain text.

Per request it adds two timer arms and cancels (uvloop `call_later`) and one comparison per read. And it writes a
response's head with its first body bytes (`CoalescingCycle`): one socket write per complete answer instead of two.
"""

from __future__ import annotations

import asyncio
from functools import partial
from http import HTTPStatus
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.errors import error_json


class GuardLimits(msgspec.Struct, frozen=True):
    """The limits one worker enforces (picklable: multi-worker uvicorn sends its config to each worker)."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0


def raw_error(status: int, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 response carrying an OpenAI-shaped error; the connection closes after it."""
    body = error_json(message, "invalid_request_error", None, code)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_INVALID = raw_error(400, "Invalid HTTP request received.", "invalid_http_request")
_TIMEOUT = raw_error(408, "The request did not arrive in time.", "request_timeout")


class _HeldHead:
    """Stands in for the transport while uvicorn writes a response head: keeps the bytes."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class _HeadFirst:
    """Stands in for the transport while uvicorn writes the first body bytes: the held head goes with them."""

    __slots__ = ("transport", "head")

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        self.transport.writelines((self.head, data))  # one socket write (uvloop: writev)

    def close(self) -> None:
        self.transport.close()


class CoalescingCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, writing a response's head together with its first body bytes: a complete
    answer leaves in one socket write instead of two (each a system call that wakes the client). Not for HEAD
    requests (uvicorn writes no body for them)."""

    _head: bytes | None = None

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.response_started and self.scope["method"] != "HEAD":
            transport, held = self.transport, _HeldHead()
            self.transport = held  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            self._head = held.data or None
            return
        head = self._head
        if head is not None and kind == "http.response.body":
            self._head = None
            transport = self.transport
            self.transport = _HeadFirst(transport, head)  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            return
        await super().send(message)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; `limits` comes in through `protocol_factory`."""

    def __init__(self, *args: Any, limits: GuardLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._too_large = raw_error(
            431, f"The request head is larger than this gateway accepts ({limits.max_header_bytes} bytes).",
            "request_header_too_large",
        )
        self._in_head = True
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    # -- timers ------------------------------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            if cycle.response_complete:
                self.transport.close()
            else:
                cycle.keep_alive = False  # a response is on its way: close after it
            return
        self._reject(_TIMEOUT)

    def _reject(self, response: bytes) -> None:
        """Write `response` and close; an app waiting for the body sees a disconnect."""
        self._disarm()
        self._unset_keepalive_if_required()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(response)
        self.transport.close()

    # -- protocol ----------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        was_in_head = self._in_head
        super().data_received(data)
        if was_in_head and self._in_head:  # the whole read was head
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes and not self.transport.is_closing():
                self._reject(self._too_large)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._timer is None:
            self._arm(self._limits.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._arm(self._limits.body_timeout)
        super().on_headers_complete()
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle:  # its task has not run yet
            cycle.__class__ = CoalescingCycle

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:  # uvicorn: a request llhttp could not parse
        if not self.transport.is_closing():
            self._reject(_INVALID)


def protocol_factory(limits: GuardLimits) -> partial[GuardedHttpToolsProtocol]:
    """What to pass as uvicorn's `http` option."""
    return partial(GuardedHttpToolsProtocol, limits=limits)

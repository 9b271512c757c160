"""HTTP transports for OpenAI-compatible backends: one small protocol, two implementations.

`AiohttpTransport` (the default) and `HttpxTransport` both keep one pooled client for the life of the
backend. They raise `TransportError` with a `kind` (connect | timeout | protocol), so the backend above
them never sees a library's exception types. Measured on the overhead benchmark (bench/README.md), the
aiohttp pool costs about a third less CPU per proxied request than httpx's; httpx stays available
(`upstream.client: httpx`) for what it does better (HTTP/2, its proxy and TLS settings).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Literal, Protocol

import aiohttp
import httpx
import msgspec
from aiohttp.streams import EofStream
from yarl import URL

FailureKind = Literal["connect", "timeout", "protocol"]
_URL_CACHE_SIZE = 256


class TransportError(Exception):
    """The exchange failed below HTTP: no connection, no answer in time, or a broken connection."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: FailureKind = kind


class Timeouts(msgspec.Struct, frozen=True):
    connect: float = 5.0
    read: float = 120.0


class TransportResponse(Protocol):
    """A response whose head has arrived; the body is read (or streamed) once, then `close` releases it."""

    status: int
    content_length: int | None
    """The declared `content-length`, if any."""

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The response headers as received (names as sent, repeats kept)."""
        ...

    def header(self, name: str) -> str | None:
        """One response header (lower-case name)."""
        ...

    async def read(self, limit: int | None = None) -> bytes:
        """The body, or its first `limit` bytes."""
        ...

    def receive(self) -> AsyncIterator[bytes]:
        """The body as it arrives: each item is whatever one read delivered (never empty)."""
        ...

    async def close(self) -> None: ...


class Transport(Protocol):
    """Sends one request over a pooled client."""

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeouts: Timeouts
    ) -> TransportResponse: ...

    async def aclose(self) -> None: ...


# -- aiohttp ---------------------------------------------------------------------------------------------------
class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.content_length = response.content_length

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return list(self._response.headers.items())

    async def read(self, limit: int | None = None) -> bytes:
        try:
            if limit is None:
                return await self._response.read()
            chunks: list[bytes] = []
            size = 0
            while size < limit and (chunk := await self._response.content.read(limit - size)):
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportError("timeout", str(exc) or "read timed out") from None
        except aiohttp.ClientError as exc:
            raise TransportError("protocol", type(exc).__name__) from None

    def receive(self) -> AsyncIterator[bytes]:
        return _AiohttpChunks(self._response.content)

    async def close(self) -> None:
        self._response.release()


class _AiohttpChunks:
    """The body as it arrives (aiohttp's `iter_any`, failures as `TransportError`).

    A plain iterator, not an async generator: one left unfinished (a stream ends at `[DONE]`, before the
    body's end) needs no finalizer scheduled through the event loop's self-pipe.
    """

    __slots__ = ("_content",)

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content

    def __aiter__(self) -> _AiohttpChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            data = await self._content.readany()
        except EofStream:
            raise StopAsyncIteration from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportError("timeout", str(exc) or "read timed out") from None
        except aiohttp.ClientError as exc:
            raise TransportError("protocol", type(exc).__name__) from None
        if not data:
            raise StopAsyncIteration
        return data


class _LeanRequest(aiohttp.ClientRequest):
    """aiohttp's request with only `accept: */*` as an automatic header (no user-agent, no accept-encoding).

    The same headers as `skip_auto_headers=("User-Agent", "Accept-Encoding")`, without the per-request copy
    of the headers and the sorted skip list aiohttp builds for it.
    """

    def update_auto_headers(self, skip_auto_headers: object) -> None:
        if "accept" not in self.headers:
            self.headers["Accept"] = "*/*"


class AiohttpTransport:
    """One aiohttp connection pool (created lazily, inside the running event loop).

    Per request it builds only what changes: the timeouts and parsed URLs are kept (the URLs in a small
    bounded map), the session keeps no cookies (an upstream's `set-cookie` is relayed, never replayed to it on
    another client's request).
    """

    def __init__(self, max_connections: int = 256, keepalive_seconds: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections, keepalive_timeout=self._keepalive
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, request_class=_LeanRequest,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _timeout(self, timeouts: Timeouts) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(timeouts)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.read)
            self._timeouts[timeouts] = timeout
        return timeout

    def _url(self, url: str) -> URL:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            parsed = self._urls[url] = URL(url)
        return parsed

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeouts: Timeouts
    ) -> TransportResponse:
        try:
            target = self._url(url)
        except ValueError:  # what aiohttp raises for an URL it cannot parse
            raise TransportError("protocol", aiohttp.InvalidUrlClientError.__name__) from None
        try:
            response = await self._client().request(
                method, target, data=body, headers=headers, timeout=self._timeout(timeouts), allow_redirects=False
            )
        except aiohttp.ClientConnectorError as exc:
            raise TransportError("connect", type(exc).__name__) from None
        except aiohttp.ConnectionTimeoutError as exc:
            raise TransportError("connect", str(exc) or "connect timed out") from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportError("timeout", str(exc) or "read timed out") from None
        except aiohttp.ClientError as exc:
            raise TransportError("protocol", type(exc).__name__) from None
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


# -- httpx ------------------------------------------------------------------------------------------------------
class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        declared = response.headers.get("content-length")
        self.content_length = int(declared) if declared is not None and declared.isdigit() else None

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return list(self._response.headers.multi_items())

    async def read(self, limit: int | None = None) -> bytes:
        """The body as sent (still content-encoded, like aiohttp's with `auto_decompress=False`)."""
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in self._response.aiter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if limit is not None and size >= limit:
                    break
            body = b"".join(chunks)
            return body if limit is None else body[:limit]
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None

    async def receive(self) -> AsyncIterator[bytes]:
        """The body's chunks as sent: a passthrough relays them under the upstream's own `content-encoding`."""
        try:
            async for data in self._response.aiter_raw():
                yield data
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None

    async def close(self) -> None:
        await self._response.aclose()


class HttpxTransport:
    """One `httpx.AsyncClient` pool."""

    def __init__(self, max_connections: int = 256) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(limits=limits, follow_redirects=False)

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeouts: Timeouts
    ) -> TransportResponse:
        timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.connect)
        request = self._client.build_request(method, url, content=body, headers=headers, timeout=timeout)
        try:
            return _HttpxResponse(await self._client.send(request, stream=True))
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _httpx_failure(exc: httpx.HTTPError) -> TransportError:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return TransportError("connect", type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return TransportError("timeout", type(exc).__name__)
    return TransportError("protocol", type(exc).__name__)


def make_transport(kind: str, max_connections: int) -> Transport:
    """The transport named in the settings (`aiohttp` or `httpx`)."""
    if kind == "httpx":
        return HttpxTransport(max_connections)
    if kind == "aiohttp":
        return AiohttpTransport(max_connections)
    raise ValueError(f"unknown upstream client {kind!r} (aiohttp or httpx)")

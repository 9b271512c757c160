"""Forward any request to the upstream as it came, with the gateway's upstream key swapped in (framework-free).

Bodies stream both ways: the request body is sent as it is read from the client, the answer is relayed as it
arrives (uploads, downloads, audio and server-sent events alike). Nothing is decoded or re-encoded; hop-by-hop
headers and the client's credentials are dropped. The upstream base URL may be any OpenAI-compatible base
(`https://api.openai.com/v1`, `https://generativelanguage.googleapis.com/v1beta/openai`, Azure's
`https://NAME.openai.azure.com/openai/v1?api-version=preview`, ...): paths are joined under it and a query
string in it is added to every request.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec

from gateway.errors import GatewayError
from gateway.tiers.transport import Timeouts, Transport, TransportError, TransportResponse
from gateway.upstream_usage import READABLE_ENCODINGS, UsageScan

# RFC 9110 §7.6.1 hop-by-hop headers, plus what the proxy itself sets.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host"}
)
_CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key", "cookie", "openai-organization",
                                 "openai-project"})
_GATEWAY_HEADERS = ("x-gateway-",)


class UpstreamURL(msgspec.Struct, frozen=True):
    """An upstream base URL split into the part paths are joined to and the query added to each request."""

    base: str
    query: str = ""

    @classmethod
    def parse(cls, url: str) -> UpstreamURL:
        parts = urlsplit(url)
        return cls(f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}", parts.query)

    def join(self, path: str, query: str = "") -> str:
        """The URL of `path` (relative to the base, e.g. `chat/completions`), with both query strings."""
        url = f"{self.base}/{path.lstrip('/')}"
        both = "&".join(q for q in (self.query, query) if q)
        return f"{url}?{both}" if both else url


def upstream_auth_headers(api_key: str | None, header: str = "authorization") -> dict[str, str]:
    """The header that carries the gateway's upstream key: a bearer token, or Azure's `api-key`."""
    if not api_key:
        return {}
    return {"api-key": api_key} if header == "api-key" else {"authorization": f"Bearer {api_key}"}


def forwarded_request_headers(headers: Iterable[tuple[str, str]], extra: Mapping[str, str]) -> dict[str, str]:
    """The client's headers minus hop-by-hop ones, its credentials and gateway control headers, plus `extra`."""
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in _CLIENT_CREDENTIALS or lower.startswith(_GATEWAY_HEADERS):
            continue
        out[lower] = f"{out[lower]}, {value}" if lower in out else value
    if "accept-encoding" in out:
        readable = scannable_encodings(out.pop("accept-encoding"))
        if readable:
            out["accept-encoding"] = readable
    out.update(extra)
    return out


def scannable_encodings(accept_encoding: str) -> str:
    """The client's `accept-encoding` cut to the codings whose bodies the gateway can read for usage."""
    kept = []
    for item in accept_encoding.split(","):
        coding = item.split(";", 1)[0].strip().lower()
        if coding in READABLE_ENCODINGS or coding == "identity":
            kept.append(item.strip())
    return ", ".join(kept)


def relayed_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's response headers minus hop-by-hop ones (content-length and -encoding stay: bytes pass as-is)."""
    return [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]


OnEnd = Callable[["ProxiedResponse", UsageScan], None]
"""Called once the relayed body is over (complete, broken off, or the client left), with what was read of it."""


class ProxiedResponse(msgspec.Struct):
    """The upstream's answer: status, headers, and its body as it arrives (`close` releases the connection)."""

    status: int
    headers: list[tuple[str, str]]
    response: Any
    on_end: OnEnd | None = None
    complete: bool = False
    """The whole body was relayed (False while it is, and when the client left or the upstream broke off)."""

    def header(self, name: str) -> str:
        return next((v for n, v in self.headers if n.lower() == name), "")

    async def body(self) -> AsyncIterator[bytes]:
        scan = UsageScan(self.header("content-type"), self.header("content-encoding"))
        try:
            async for data in self.response.receive():
                scan.feed(data)
                yield data
            self.complete = True
        except TransportError:
            return  # the upstream broke off mid-body: the client sees a truncated body, as it would direct
        finally:
            await self.response.close()
            on_end, self.on_end = self.on_end, None
            if on_end is not None:
                scan.finish()
                on_end(self, scan)

    async def read(self) -> bytes:
        try:
            return bytes(await self.response.read())
        finally:
            await self.response.close()


def unreachable(exc: TransportError) -> GatewayError:
    """The OpenAI-shaped error for an upstream exchange that failed below HTTP."""
    if exc.kind == "timeout":
        return GatewayError("The upstream did not answer in time.", status_code=504, error_type="timeout",
                            code="upstream_timeout")
    if exc.kind == "connect":
        return GatewayError("The upstream could not be reached.", status_code=502, error_type="upstream_error",
                            code="upstream_unreachable")
    return GatewayError("The upstream connection failed.", status_code=502, error_type="upstream_error",
                        code="upstream_protocol_error")


class UpstreamProxy:
    """Sends requests to paths under the upstream base URL over the upstream tier's pooled transport."""

    def __init__(
        self,
        url: UpstreamURL,
        auth: Mapping[str, str],
        transport: Transport,
        timeouts: Timeouts,
    ) -> None:
        self.url = url
        self._auth = dict(auth)
        self._transport = transport
        self._timeouts = timeouts

    def __repr__(self) -> str:  # never show the key
        return f"UpstreamProxy(base={self.url.base!r})"

    async def send(
        self,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        request_id: str | None = None,
    ) -> ProxiedResponse:
        """Forward one request; `GatewayError` (502/504) when the upstream cannot be reached or times out."""
        extra = dict(self._auth)
        if request_id:
            extra["x-request-id"] = request_id
        out_headers = forwarded_request_headers(headers, extra)
        try:
            # both transports accept an async iterable body and send it as it is produced
            response: TransportResponse = await self._transport.send(
                method, self.url.join(path, query), out_headers, cast(bytes | None, body), self._timeouts
            )
        except TransportError as exc:
            raise unreachable(exc) from None
        return ProxiedResponse(response.status, relayed_response_headers(response.headers), response)

    async def fetch_models(self) -> bytes | None:
        """The upstream's `GET /models` body; None when it cannot be had (down, error status, too slow)."""
        try:
            proxied = await self.send("GET", "models", "", [("accept", "application/json")], None)
            body = await proxied.read()
        except (GatewayError, TransportError):
            return None
        return body if proxied.status == 200 else None

    async def aclose(self) -> None:
        await self._transport.aclose()

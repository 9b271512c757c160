"""A tier behind any OpenAI-compatible HTTP server: the upstream LLM, or a remote SLM (llama.cpp server, vLLM, Ollama)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import msgspec
from httpx_aiohttp import AiohttpTransport

from gateway import __version__
from gateway.api.schemas import ParsedRequest
from gateway.errors import TierUnavailable, UpstreamStatusError, error_json
from gateway.tiers.base import Completion, Usage

_MAX_ERROR_BODY = 64 * 1024
_PROBE_TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """One aiohttp connection pool behind httpx's transport interface."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections, keepalive_timeout=30)
    return AiohttpTransport(client=aiohttp.ClientSession(connector=connector, auto_decompress=False))


class _UsageIn(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Summary(msgspec.Struct):
    """The two fields of an upstream answer the gateway reads; everything else passes through as bytes."""

    model: str = ""
    usage: _UsageIn | None = None


_summary_decoder = msgspec.json.Decoder(_Summary)


class OpenAIHTTPBackend:
    """Talks to an OpenAI-compatible `/v1` base URL over one pooled httpx transport.

    The transport is any `httpx.AsyncBaseTransport`; the default is httpx-aiohttp's `AiohttpTransport` (one
    aiohttp connection pool), which costs about a seventh of the CPU of httpx's default transport per request
    (see bench/README.md). Requests go to the transport directly: the gateway needs none of the client layer's
    redirects, cookies or auth flows. The API key is sent as a bearer token and never logged or returned.
    A connection failure is retried once; a read timeout is not.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_connections: int = 256,
        request_stream_usage: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",  # bodies pass through as received: never compressed
            "user-agent": f"slm-gateway/{__version__}",
        }
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._headers = httpx.Headers(headers)
        self._request_stream_usage = request_stream_usage
        self._max_connections = max_connections
        self._transport = transport
        self._timeouts = {"connect": connect_timeout, "read": read_timeout, "write": read_timeout, "pool": connect_timeout}
        self._completions_url = httpx.URL(f"{self.base_url}/chat/completions")
        self._models_url = httpx.URL(f"{self.base_url}/models")

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIHTTPBackend(name={self.name!r}, base_url={self.base_url!r})"

    async def start(self) -> None:
        """Create the connection pool (inside the running event loop)."""
        if self._transport is None:
            self._transport = default_transport(self._max_connections)

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()

    async def ready(self) -> bool:
        """Reachable: the server answers `GET /models` (any HTTP status counts as reachable)."""
        request = httpx.Request("GET", self._models_url, headers=self._headers, extensions={"timeout": _PROBE_TIMEOUTS})
        try:
            response = await self._send(request)
            await response.aclose()
        except httpx.HTTPError:
            return False
        return True

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send through the pool; retry once when the connection could not be made (nothing was sent)."""
        assert self._transport is not None, "backend not started"
        try:
            return await self._transport.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return await self._transport.handle_async_request(request)

    def _request(self, body: bytes, request_id: str | None) -> httpx.Request:
        headers = self._headers if request_id is None else httpx.Headers({**self._headers, "x-request-id": request_id})
        return httpx.Request(
            "POST", self._completions_url, content=body, headers=headers, extensions={"timeout": self._timeouts}
        )

    async def complete(self, request: ParsedRequest, model: str, request_id: str | None = None) -> Completion:
        body = msgspec.json.encode(_body(request, model, stream=False, want_usage=False))
        try:
            response = await self._send(self._request(body, request_id))
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise _unavailable(exc) from None
        if response.status_code >= 400:
            raise _status_error(response.status_code, content[:_MAX_ERROR_BODY])
        try:
            summary = _summary_decoder.decode(content)
        except msgspec.DecodeError:
            raise TierUnavailable(
                f"{self.name} returned a body that is not a chat completion", kind="protocol"
            ) from None
        usage = summary.usage or _UsageIn()
        return Completion(
            body=content,
            model=summary.model or model,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens),
        )

    async def stream(
        self, request: ParsedRequest, model: str, request_id: str | None = None
    ) -> AsyncIterator[bytes]:
        body = msgspec.json.encode(_body(request, model, stream=True, want_usage=self._request_stream_usage))
        try:
            response = await self._send(self._request(body, request_id))
        except httpx.HTTPError as exc:
            raise _unavailable(exc) from None
        try:
            if response.status_code >= 400:
                content = await _read_bounded(response)
                raise _status_error(response.status_code, content)
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    if payload:
                        yield payload.encode()
            except httpx.HTTPError as exc:
                raise _unavailable(exc) from None
            raise TierUnavailable(f"{self.name} closed the stream before [DONE]", kind="protocol")
        finally:
            await response.aclose()


def _body(request: ParsedRequest, model: str, *, stream: bool, want_usage: bool) -> dict[str, Any]:
    body = request.with_model(model)
    if stream and want_usage and not request.include_usage:
        body = dict(body)
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


async def _read_bounded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_ERROR_BODY:
            break
    return b"".join(chunks)[:_MAX_ERROR_BODY]


def _unavailable(exc: httpx.HTTPError) -> TierUnavailable:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return TierUnavailable(
            "The upstream did not answer in time.", kind="timeout", status_code=504, error_type="timeout", code="upstream_timeout"
        )
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return TierUnavailable(
            "The upstream could not be reached.", kind="connect", code="upstream_unreachable"
        )
    return TierUnavailable(
        f"The upstream connection failed: {type(exc).__name__}.", kind="protocol", code="upstream_protocol_error"
    )


def _status_error(status: int, content: bytes) -> UpstreamStatusError:
    """Pass an upstream error through: its status, and its body if OpenAI-shaped, else a wrapped one."""
    message = f"The upstream answered HTTP {status}."
    try:
        parsed = msgspec.json.decode(content)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            message = str(parsed["error"].get("message") or message)
            return UpstreamStatusError(status, content, message)
    except msgspec.DecodeError:
        pass
    return UpstreamStatusError(status, error_json(message, "upstream_error", None, f"upstream_{status}"), message)

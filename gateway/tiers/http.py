"""A tier behind any OpenAI-compatible HTTP server: the upstream LLM, or a remote SLM (llama.cpp server, vLLM, Ollama)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from gateway import __version__
from gateway.openai.request import ParsedRequest
from gateway.errors import TierUnavailable, UpstreamStatusError, error_json
from gateway.passthrough import UpstreamURL, upstream_auth_headers
from gateway.tiers.base import Completion, Usage
from gateway.tiers.sse import SSEDecoder, SSEProtocolError
from gateway.tiers.transport import Timeouts, Transport, TransportError, TransportResponse, make_transport

_MAX_ERROR_BODY = 64 * 1024
_PROBE_TIMEOUTS = Timeouts(connect=2.0, read=2.0)


class _UsageIn(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Summary(msgspec.Struct):
    """The two fields of an upstream answer the gateway reads; everything else passes through as bytes."""

    model: str = ""
    usage: _UsageIn | None = None


_summary_decoder = msgspec.json.Decoder(_Summary)


class OpenAIHTTPBackend:
    """Talks to an OpenAI-compatible `/v1` base URL through one pooled `Transport` (aiohttp or httpx).

    The API key is sent as a bearer token and never logged or returned. A connection that cannot be made is
    retried once (nothing was sent); a read timeout or a broken connection is not retried.
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
        client: str = "aiohttp",
        transport: Transport | None = None,
        auth_header: str = "authorization",
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",  # bodies pass through as received: never compressed
            "user-agent": f"slm-gateway/{__version__}",
            **upstream_auth_headers(api_key, auth_header),
        }
        self._request_stream_usage = request_stream_usage
        self._transport = transport or make_transport(client, max_connections)
        self._timeouts = Timeouts(connect=connect_timeout, read=read_timeout)
        url = UpstreamURL.parse(self.base_url)  # a base may carry a query (Azure's api-version)
        self._completions_url = url.join("chat/completions")
        self._models_url = url.join("models")

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIHTTPBackend(name={self.name!r}, base_url={self.base_url!r})"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._transport.aclose()

    async def ready(self) -> bool:
        """Reachable: the server answers `GET /models` (any HTTP status counts as reachable)."""
        try:
            response = await self._transport.send("GET", self._models_url, self._headers, None, _PROBE_TIMEOUTS)
            await response.close()
        except TransportError:
            return False
        return True

    async def _post(self, body: bytes, request_id: str | None) -> TransportResponse:
        """POST to /chat/completions; retry once when the connection could not be made (nothing was sent)."""
        headers = self._headers if request_id is None else {**self._headers, "x-request-id": request_id}
        try:
            try:
                return await self._transport.send("POST", self._completions_url, headers, body, self._timeouts)
            except TransportError as exc:
                if exc.kind != "connect":
                    raise
                return await self._transport.send("POST", self._completions_url, headers, body, self._timeouts)
        except TransportError as exc:
            raise _unavailable(exc) from None

    async def complete(self, request: ParsedRequest, model: str, request_id: str | None = None) -> Completion:
        body = msgspec.json.encode(_body(request, model, stream=False, want_usage=False))
        response = await self._post(body, request_id)
        try:
            content = await response.read(_MAX_ERROR_BODY if response.status >= 400 else None)
        except TransportError as exc:
            raise _unavailable(exc) from None
        finally:
            await response.close()
        if response.status >= 400:
            raise _status_error(response.status, content)
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
    ) -> AsyncIterator[list[bytes]]:
        body = msgspec.json.encode(_body(request, model, stream=True, want_usage=self._request_stream_usage))
        response = await self._post(body, request_id)
        try:
            if response.status >= 400:
                raise _status_error(response.status, await response.read(_MAX_ERROR_BODY))
            decoder = SSEDecoder()
            async for data in response.receive():
                batch, done = _before_done(decoder.feed(data))
                if batch:
                    yield batch
                if done:
                    return
            batch, done = _before_done(decoder.close())
            if batch:
                yield batch
            if done:
                return
            raise TierUnavailable(f"{self.name} closed the stream before [DONE]", kind="protocol")
        except TransportError as exc:
            raise _unavailable(exc) from None
        except SSEProtocolError as exc:
            raise TierUnavailable(f"{self.name} sent a malformed stream: {exc}", kind="protocol") from None
        finally:
            await response.close()


def _before_done(payloads: list[bytes]) -> tuple[list[bytes], bool]:
    """The payloads before a `[DONE]` sentinel, and whether it came."""
    for i, payload in enumerate(payloads):
        if payload.strip() == b"[DONE]":
            return payloads[:i], True
    return payloads, False


def _body(request: ParsedRequest, model: str, *, stream: bool, want_usage: bool) -> dict[str, Any]:
    body = request.with_model(model)
    if stream and want_usage and not request.include_usage:
        body = dict(body)
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


def _unavailable(exc: TransportError) -> TierUnavailable:
    if exc.kind == "timeout":
        return TierUnavailable(
            "The upstream did not answer in time.", kind="timeout", status_code=504, error_type="timeout",
            code="upstream_timeout",
        )
    if exc.kind == "connect":
        return TierUnavailable("The upstream could not be reached.", kind="connect", code="upstream_unreachable")
    return TierUnavailable("The upstream connection failed.", kind="protocol", code="upstream_protocol_error")


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

"""A tier behind any OpenAI-compatible HTTP server: the upstream LLM, or a remote SLM (llama.cpp server, vLLM, Ollama)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from multidict import CIMultiDict

from gateway import __version__
from gateway.errors import GatewayError, TierUnavailable
from gateway.openai.request import ParsedRequest
from gateway.openai.wire import token_count, usage_of
from gateway.passthrough import UpstreamURL, upstream_auth_headers
from gateway.tiers.base import ALL_FEATURES, Completion, Usage
from gateway.tiers.sse import SSEDecoder, SSEProtocolError
from gateway.tiers.transport import Timeouts, Transport, TransportError, TransportResponse, make_transport
from gateway.tiers.upstream_errors import (
    AUTH_STATUSES, KeyScrubber, is_error_event, status_error, stream_error, tier_subject,
)

_MAX_ERROR_BODY = 64 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_PROBE_TIMEOUTS = Timeouts(connect=2.0, read=2.0)
_COUNTS = ("prompt_tokens", "completion_tokens")


class _Summary(msgspec.Struct):
    """The two fields of an upstream answer the gateway reads; everything else passes through as bytes.

    `usage` is untrusted (any JSON): `usage_of` turns it into sane counts.
    """

    model: str = ""
    usage: Any = None


_summary_decoder = msgspec.json.Decoder(_Summary)


class OpenAIHTTPBackend:
    """Talks to an OpenAI-compatible `/v1` base URL through one pooled `Transport` (aiohttp or httpx).

    The API key is sent as a bearer token and never logged or returned. A connection that cannot be made is
    retried once (nothing was sent); a read timeout or a broken connection is not retried.
    """

    features: frozenset[str] = ALL_FEATURES  # the request passes through: the upstream honours what it supports

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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._headers: CIMultiDict[str] = CIMultiDict({  # built once: the transport takes it as it is
            "content-type": "application/json",
            "accept-encoding": "identity",  # bodies pass through as received: never compressed
            "user-agent": f"slm-gateway/{__version__}",
            **upstream_auth_headers(api_key, auth_header),
        })
        self._scrub = KeyScrubber([api_key])
        self._max_response_bytes = max_response_bytes
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
        return await self.probe() != "unreachable"

    async def probe(self) -> str:
        """One `GET /models`: "reachable", "unreachable", or "auth_failed" (it refused the upstream key)."""
        try:
            response = await self._transport.send("GET", self._models_url, self._headers, None, _PROBE_TIMEOUTS)
            await response.close()
        except TransportError:
            return "unreachable"
        return "auth_failed" if response.status in AUTH_STATUSES else "reachable"

    async def _post(self, body: bytes, request_id: str | None) -> TransportResponse:
        """POST to /chat/completions; retry once when the connection could not be made (nothing was sent)."""
        headers = self._headers
        if request_id is not None:
            headers = headers.copy()
            headers["x-request-id"] = request_id
        try:
            try:
                return await self._transport.send("POST", self._completions_url, headers, body, self._timeouts)
            except TransportError as exc:
                if exc.kind != "connect":
                    raise
                return await self._transport.send("POST", self._completions_url, headers, body, self._timeouts)
        except TransportError as exc:
            raise _unavailable(exc, self.name) from None

    async def complete(self, request: ParsedRequest, model: str, request_id: str | None = None) -> Completion:
        body = msgspec.json.encode(_body(request, model, stream=False, want_usage=False))
        response = await self._post(body, request_id)
        try:
            if response.status >= 400:
                raise await self._status_error(response)
            content = await self._read_answer(response)
        except TransportError as exc:
            raise _unavailable(exc, self.name) from None
        finally:
            await response.close()
        try:
            summary = _summary_decoder.decode(content)
        except msgspec.DecodeError:
            raise TierUnavailable(
                f"{self.name} returned a body that is not a chat completion", kind="protocol"
            ) from None
        return Completion(body=content, model=summary.model or model, usage=usage_of(summary.usage) or Usage())

    async def _read_answer(self, response: TransportResponse) -> bytes:
        """The success body, at most `max_response_bytes` (a declared length over it is refused unread)."""
        limit = self._max_response_bytes
        declared = response.content_length
        if declared is None or declared <= limit:
            content = await response.read(None if declared is not None else limit + 1)
            if len(content) <= limit:
                return content
        raise TierUnavailable(
            f"{tier_subject(self.name)} answer is larger than this gateway accepts ({limit} bytes).",
            kind="protocol",
            code="upstream_response_too_large",
        )

    async def _status_error(self, response: TransportResponse) -> GatewayError:
        content = await response.read(_MAX_ERROR_BODY)
        return status_error(response.status, content, self._scrub, response.header("retry-after"), self.name)

    async def stream(
        self, request: ParsedRequest, model: str, request_id: str | None = None
    ) -> AsyncIterator[list[bytes]]:
        body = msgspec.json.encode(_body(request, model, stream=True, want_usage=self._request_stream_usage))
        response = await self._post(body, request_id)
        try:
            if response.status >= 400:
                raise await self._status_error(response)
            decoder = SSEDecoder()
            async for data in response.receive():
                batch, done, failure = self._vetted(decoder.feed(data))
                if batch:
                    yield batch
                if failure is not None:
                    raise failure
                if done:
                    return
            batch, done, failure = self._vetted(decoder.close())
            if batch:
                yield batch
            if failure is not None:
                raise failure
            if done:
                return
            raise TierUnavailable(f"{self.name} closed the stream before [DONE]", kind="protocol")
        except TransportError as exc:
            raise _unavailable(exc, self.name) from None
        except SSEProtocolError as exc:
            raise TierUnavailable(f"{self.name} sent a malformed stream: {exc}", kind="protocol") from None
        finally:
            await response.close()

    def _vetted(self, payloads: list[bytes]) -> tuple[list[bytes], bool, GatewayError | None]:
        """The payloads to pass on, whether `[DONE]` came, and the failure that ends the stream after them.

        Upstream chunks are untrusted: an `{"error": ...}` event becomes a (scrubbed) failure, and a usage chunk
        leaves with sane counts. Two substring checks per payload; a usage chunk (one per stream), and a payload
        with the substring `"error"`, are decoded.
        """
        out: list[bytes] = []
        for payload in payloads:
            if b'"error"' in payload and is_error_event(payload):  # the substring alone: also `"content":"error"`
                return out, False, stream_error(payload, self._scrub, self.name)
            if b'"usage"' in payload and b'"usage":null' not in payload:
                try:
                    sane = _sane_usage_chunk(payload, self.name)
                except TierUnavailable as exc:
                    return out, False, exc
                if sane is None:
                    continue
                payload = sane
            elif payload.strip() == b"[DONE]":
                return out, True, None
            out.append(payload)
        return out, False, None


def _sane_usage_chunk(payload: bytes, tier: str) -> bytes | None:
    """A chunk that carries `usage`: unchanged when its counts are sane, else re-encoded with clamped counts; when
    `usage` is not an object, the chunk without it (None, dropped, if nothing else was in it). A chunk that is not
    a JSON object raises: the stream ends with an error event instead of being cut."""
    try:
        chunk = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        chunk = None
    if not isinstance(chunk, dict):
        raise TierUnavailable(
            f"{tier_subject(tier)} sent a malformed stream chunk.", kind="protocol", code="upstream_protocol_error"
        )
    usage = chunk.get("usage")
    if usage is None:
        return payload
    sane = usage_of(usage)
    if sane is None:
        if not chunk.get("choices"):
            return None
        chunk["usage"] = None
    elif all(type(usage.get(f)) is int and token_count(usage[f]) == usage[f] for f in _COUNTS):
        return payload
    else:
        chunk["usage"] = {
            **usage,
            "prompt_tokens": sane.prompt_tokens,
            "completion_tokens": sane.completion_tokens,
            "total_tokens": sane.total_tokens,
        }
    return msgspec.json.encode(chunk)


def _body(request: ParsedRequest, model: str, *, stream: bool, want_usage: bool) -> dict[str, Any]:
    body = request.with_model(model)
    if stream and want_usage and not request.include_usage:
        body = dict(body)
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


def _unavailable(exc: TransportError, tier: str) -> TierUnavailable:
    who = tier_subject(tier)
    if exc.kind == "timeout":
        return TierUnavailable(
            f"{who} did not answer in time.", kind="timeout", status_code=504, error_type="timeout",
            code="upstream_timeout",
        )
    if exc.kind == "connect":
        return TierUnavailable(f"{who} could not be reached.", kind="connect", code="upstream_unreachable")
    return TierUnavailable(f"{who} connection failed.", kind="protocol", code="upstream_protocol_error")

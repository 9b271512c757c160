"""The rest of OpenAI's API behind the gateway: Responses, legacy completions, embeddings, models, passthrough.

Framework-free: `gateway.api.dropin_routes` turns what these return into HTTP responses. Requests the local
tier can serve are routed by the same policy and classifier as chat (through a chat view of the request);
whatever goes upstream is sent there as received, to the same path, with the gateway's upstream key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.api.event_stream import FinalChunk
from gateway.api.schemas import ParsedRequest, parse_chat_request
from gateway.dispatch import PIN_MODEL_NAMES, Answer, StreamAnswer, is_tier_failure
from gateway.errors import GatewayError, InvalidRequest, error_json
from gateway.openai import completions as legacy
from gateway.openai.embeddings import Embedder, embedding_body, parse_embedding_request, texts_of
from gateway.openai.models import ModelCatalog
from gateway.openai.responses import ResponseEvents, to_chat, to_response
from gateway.passthrough import ProxiedResponse, UpstreamProxy
from gateway.routing.decision import RouteDecision
from gateway.tiers.sse import SSEDecoder

if TYPE_CHECKING:
    from gateway.components import Gateway

_decoder = msgspec.json.Decoder()
JSON_HEADERS = {"content-type": "application/json"}
LOCAL_EMBEDDING_ALIASES = frozenset({"local", "auto"})
_FEATURE_PARAMS = {"tools": "tools", "response_format": "text.format"}


def decode_json(body: bytes) -> Any:
    """A request body as JSON; `InvalidRequest` when it is not."""
    if not body:
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}", code="invalid_json") from None


def needs_upstream(field: str, what: str) -> InvalidRequest:
    """The 400 for a request only the upstream could serve, on a gateway without one."""
    return InvalidRequest(
        f"'{field}' cannot be served by the local tier and this gateway has no upstream: {what}",
        param=field.split("=")[0], code="unsupported_on_local",
    )


def required_features(parsed: ParsedRequest) -> frozenset[str]:
    """The optional features (gateway.tiers.base vocabulary) a chat request needs from the tier that serves it."""
    needed = set()
    if parsed.chat.tools:
        needed.add("tools")
    fmt = parsed.chat.response_format
    if fmt and fmt.get("type") not in (None, "text"):
        needed.add("response_format")
    return frozenset(needed)


class DropIn:
    """Serves the non-chat endpoints of one gateway."""

    def __init__(
        self,
        gateway: Gateway,
        proxy: UpstreamProxy | None,
        catalog: ModelCatalog,
        embedder: Embedder | None = None,
        decode_tokens: Callable[[list[int]], str] | None = None,
        count_tokens: Callable[[list[str]], int] | None = None,
        max_embedding_inputs: int = 2048,
    ) -> None:
        self.gateway = gateway
        self.proxy = proxy
        self.catalog = catalog
        self.embedder = embedder
        self._decode_tokens = decode_tokens
        self._count_tokens = count_tokens
        self._max_embedding_inputs = max_embedding_inputs

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.aclose()

    # -- shared ----------------------------------------------------------------------------------------------
    def _route(self, parsed: ParsedRequest, headers: Mapping[str, str]) -> RouteDecision:
        return self.gateway.dispatcher.route(parsed, headers)

    def _upstream_model(self, model: str) -> str:
        return self.gateway.tiers.model_for("upstream", model)

    def _route_headers(self, request_id: str, tier: str, model: str, decision: RouteDecision | None) -> dict[str, str]:
        return {
            "x-request-id": request_id,
            "x-gateway-route": tier,
            "x-gateway-model": model,
            "x-gateway-route-reason": decision.detail if decision is not None else "passthrough",
        }

    def _count(self, tier: str, status: int, reason: str) -> None:
        self.gateway.metrics.requests.labels(tier, str(status), reason).inc()

    async def forward_json(
        self, path: str, raw: dict[str, Any], headers: Iterable[tuple[str, str]], request_id: str,
        decision: RouteDecision | None,
    ) -> tuple[ProxiedResponse, dict[str, str]]:
        """POST `raw` (pin model names replaced by the upstream's default) to the upstream's `path`."""
        assert self.proxy is not None
        model = raw.get("model")
        if isinstance(model, str) and model in PIN_MODEL_NAMES:
            raw = {**raw, "model": self._upstream_model(model)}
        body = msgspec.json.encode(raw)
        forwarded = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-encoding")]
        proxied = await self.proxy.send("POST", path, "", forwarded, body, request_id)
        self._count("upstream", proxied.status, decision.reason if decision is not None else "passthrough")
        return proxied, self._route_headers(request_id, "upstream", str(raw.get("model", "")), decision)

    async def _chat_answer(
        self, parsed: ParsedRequest, decision: RouteDecision, headers: Mapping[str, str], request_id: str,
        tenant: str, started: float,
    ) -> Answer | StreamAnswer:
        """Answer a chat view through the response cache and the dispatcher, as the chat endpoint does."""
        gateway = self.gateway
        try:
            if gateway.cache is not None:
                return await gateway.cache.answer(parsed, decision, headers, request_id, tenant, started)
            if parsed.chat.stream:
                return await gateway.dispatcher.stream(parsed, decision, request_id, started)
            return await gateway.dispatcher.complete(parsed, decision, request_id, started)
        except GatewayError as exc:
            gateway.dispatcher.account_error(exc, decision.reason, decision.tier)
            raise

    def _local_lacks(self, parsed: ParsedRequest) -> str | None:
        """The first feature the request needs that the local tier does not honour (its Responses field name)."""
        local = self.gateway.tiers.local
        have = getattr(local, "features", frozenset())
        for feature in sorted(required_features(parsed) - have):
            return _FEATURE_PARAMS[feature]
        return None

    # -- POST /v1/responses ----------------------------------------------------------------------------------
    async def responses(
        self, raw: Any, headers: Mapping[str, str], header_items: Iterable[tuple[str, str]], request_id: str,
        tenant: str, started: float,
    ) -> Answer | StreamAnswer | tuple[ProxiedResponse, dict[str, str]]:
        if not isinstance(raw, dict):
            raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
        translation = to_chat(raw)
        parsed = parse_chat_request(msgspec.json.encode(translation.chat))
        decision = self._route(parsed, headers)
        blocker = translation.blockers[0] if translation.blockers else None
        lacking = self._local_lacks(parsed) if decision.tier == "local" else None
        if blocker is not None or lacking is not None or decision.tier == "upstream":
            if self.proxy is None:
                if blocker is not None:
                    raise needs_upstream(blocker, "stored state and built-in tools exist only upstream.")
                if lacking is not None:
                    raise needs_upstream(lacking, "the local model does not honour it.")
            else:
                return await self.forward_json("responses", raw, header_items, request_id, decision)
        answer = await self._chat_answer(parsed, decision, headers, request_id, tenant, started)
        if isinstance(answer, StreamAnswer):
            return StreamAnswer(self._response_events(answer.chunks, raw, answer.headers), answer.headers)
        completion = _decoder.decode(answer.body)
        body = msgspec.json.encode(to_response(completion, raw))
        return Answer(answer.status, body, answer.headers)

    async def _response_events(
        self, chunks: AsyncIterator[bytes], raw: dict[str, Any], headers: Mapping[str, str]
    ) -> AsyncIterator[bytes]:
        events = ResponseEvents(raw, headers.get("x-gateway-model", raw["model"]))
        decoder = SSEDecoder()
        yield b"".join(events.start())
        try:
            async for data in chunks:
                out: list[bytes] = []
                for payload in decoder.feed(data):
                    if payload == b"[DONE]":
                        out += events.finish()
                        yield FinalChunk(b"".join(out))
                        return
                    chunk = _decoder.decode(payload)
                    if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                        error = chunk["error"]
                        out += events.fail(str(error.get("message")), error.get("code"))
                        yield FinalChunk(b"".join(out))
                        return
                    out += events.feed(chunk)
                if out:
                    yield b"".join(out)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- POST /v1/completions (legacy) -----------------------------------------------------------------------
    async def completions(
        self, raw: Any, headers: Mapping[str, str], header_items: Iterable[tuple[str, str]], request_id: str,
        started: float,
    ) -> Answer | StreamAnswer | tuple[ProxiedResponse, dict[str, str]]:
        parsed = legacy.parse_completion(raw)
        request = parsed.request
        view = {"model": request.model, "messages": [{"role": "user", "content": parsed.text or ""}]}
        if request.max_tokens is not None:
            view["max_tokens"] = request.max_tokens
        decision = self._route(parse_chat_request(msgspec.json.encode(view)), headers)
        local = self.gateway.tiers.local
        if parsed.blockers or decision.tier == "upstream" or local is None:
            if self.proxy is None:
                field = parsed.blockers[0] if parsed.blockers else "model"
                raise needs_upstream(field, "the local tier runs one text prompt, without logprobs, echo or n.")
            return await self.forward_json("completions", raw, header_items, request_id, decision)
        from gateway.tiers.local_prompt import complete_prompt, stream_prompt

        assert parsed.text is not None
        model = getattr(local, "served_model_name", "local")
        route_headers = self._route_headers(request_id, "local", model, decision)
        max_tokens = request.max_tokens or legacy.LEGACY_DEFAULT_MAX_TOKENS
        try:
            if request.stream:
                opened = await stream_prompt(local, parsed.text, request, max_tokens)
                self._count("local", 200, decision.reason)
                return StreamAnswer(self._legacy_chunks(opened, model, request.include_usage), route_headers)
            result = await complete_prompt(local, parsed.text, request, max_tokens)
        except GatewayError as exc:
            if self.proxy is not None and decision.fallback == "upstream" and is_tier_failure(exc):
                return await self.forward_json("completions", raw, header_items, request_id, decision)
            self._count("local", exc.status_code, decision.reason)
            raise
        self._count("local", 200, decision.reason)
        body = legacy.completion_body(model, result.text, result.finish_reason, result.prompt_tokens,
                                      result.completion_tokens)
        return Answer(200, body, route_headers)

    async def _legacy_chunks(self, opened: Any, model: str, include_usage: bool) -> AsyncIterator[bytes]:
        chunks = legacy.CompletionChunks(model)
        try:
            async for piece in opened.pieces():
                yield b"data: " + chunks.text(piece) + b"\n\n"
            result = opened.result()
            tail = [b"data: " + chunks.text("", result.finish_reason) + b"\n\n"]
            if include_usage:
                tail.append(b"data: " + chunks.usage(result.prompt_tokens, result.completion_tokens) + b"\n\n")
            tail.append(b"data: [DONE]\n\n")
            yield FinalChunk(b"".join(tail))
        except GatewayError as exc:
            yield FinalChunk(b"data: " + error_json(exc.message, exc.error_type, exc.param, exc.code) + b"\n\n")
        finally:
            opened.cancel()

    # -- POST /v1/embeddings ---------------------------------------------------------------------------------
    def local_embedding_names(self) -> list[str]:
        """The model ids that pick the bundled embedder (its own name, and `local-embedding`)."""
        if self.embedder is None:
            return []
        return [self.embedder.name, "local-embedding"]

    def _is_local_embedding_model(self, model: str) -> bool:
        return model in LOCAL_EMBEDDING_ALIASES or model in self.local_embedding_names() or self.proxy is None

    async def embeddings(
        self, raw: Any, header_items: Iterable[tuple[str, str]], request_id: str
    ) -> Answer | tuple[ProxiedResponse, dict[str, str]]:
        request = parse_embedding_request(raw, max_inputs=self._max_embedding_inputs)
        if not self._is_local_embedding_model(request.model):
            return await self.forward_json("embeddings", raw, header_items, request_id, None)
        embedder = self.embedder
        if embedder is None:
            raise InvalidRequest("This gateway has no local embedding model.", param="model",
                                 code="model_not_found")
        texts = texts_of(request, self._decode_tokens)
        started = time.perf_counter()
        vectors = await asyncio.to_thread(embedder.embed, texts)
        tokens = self._count_tokens(texts) if self._count_tokens is not None else sum(len(t.split()) for t in texts)
        self.gateway.metrics.request_duration.labels("local", "false").observe(time.perf_counter() - started)
        self._count("local", 200, "embeddings")
        body = embedding_body(vectors, embedder.name, tokens, request.encoding_format, request.dimensions)
        return Answer(200, body, self._route_headers(request_id, "local", embedder.name, None))

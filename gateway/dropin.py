"""The rest of OpenAI's API behind the gateway: Responses, legacy completions, embeddings, models, passthrough.

Framework-free: `gateway.api.dropin_routes` turns what these return into HTTP responses. Requests the local
tier can serve are routed by the same policy and classifier as chat (through a chat view of the request);
whatever goes upstream is sent there as received, to the same path, with the gateway's upstream key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.dispatch import PIN_MODEL_NAMES, Answer, StreamAnswer
from gateway.errors import GatewayError, InvalidRequest, error_json
from gateway.exchange import Exchange
from gateway.limits.limiter import Hold
from gateway.openai import completions as legacy
from gateway.openai.embeddings import Embedder, embedding_body, parse_embedding_request, texts_of
from gateway.openai.models import ModelCatalog
from gateway.openai.request import ParsedRequest, parse_chat_request
from gateway.openai.responses import ResponseEvents, to_chat, to_response
from gateway.openai.wire import FinalChunk, Usage
from gateway.passthrough import ProxiedResponse, UpstreamProxy
from gateway.routing.capabilities import required_features
from gateway.routing.decision import RouteContext
from gateway.routing.static import pinned_tier
from gateway.tiers.sse import SSEDecoder
from gateway.upstream_usage import UsageScan

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline

_decoder = msgspec.json.Decoder()
JSON_HEADERS = {"content-type": "application/json"}
LOCAL_EMBEDDING_ALIASES = frozenset({"local", "auto"})
_RESPONSES_PARAMS = {"response_format": "text.format", "messages": "input", "max_tokens": "max_output_tokens"}
_FEATURE_PARAMS = {"tools": "tools", "response_format": "text.format", "images": "input"}  # Responses names


def decode_json(body: bytes) -> Any:
    """A request body as JSON; `InvalidRequest` when it is not."""
    if not body:
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}", code="invalid_json") from None


def _max_output(raw: dict[str, Any]) -> int | None:
    """The completion tokens a forwarded request asks for at most (None: it does not say)."""
    for name in ("max_output_tokens", "max_completion_tokens", "max_tokens"):
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            n = raw.get("n")
            return value * (n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1)
    return None


def needs_upstream(field: str, what: str) -> InvalidRequest:
    """The 400 for a request only the upstream could serve, on a gateway without one."""
    return InvalidRequest(
        f"'{field}' cannot be served by the local tier and this gateway has no upstream: {what}",
        param=field.split("=")[0], code="unsupported_on_local",
    )


Proxied = tuple[ProxiedResponse, dict[str, str]]


class DropIn:
    """Serves the non-chat endpoints of one gateway (its `Pipeline` routes, caches and records them)."""

    def __init__(
        self,
        pipeline: Pipeline,
        proxy: UpstreamProxy | None,
        catalog: ModelCatalog,
        embedder: Embedder | None = None,
        decode_tokens: Callable[[list[int]], str] | None = None,
        count_tokens: Callable[[list[str]], int] | None = None,
        max_embedding_inputs: int = 2048,
    ) -> None:
        self.pipeline = pipeline
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
    async def refusing(self, ex: Exchange, work: Awaitable[Answer | StreamAnswer | Proxied]) -> Answer | StreamAnswer | Proxied:
        """`work`'s answer; a `GatewayError` on the way ends the exchange as refused (and is raised)."""
        try:
            return await work
        except GatewayError as exc:
            self.pipeline.refuse(ex, exc)
            raise

    def _routed(self, ex: Exchange, tenant: str, parsed: ParsedRequest) -> None:
        ex.accept(tenant, parsed)
        self.pipeline.route(ex)

    def _upstream_model(self, model: str) -> str:
        return self.pipeline.tiers.model_for("upstream", model)

    def count(self, tier: str, status: int, reason: str, started: float) -> None:
        """Count a request that has no chat view (passthrough, embeddings)."""
        self.pipeline.accounting.outside_chat(tier, status, reason, started)

    async def limit_relayed(
        self, ex: Exchange, tier: str, model: str, prompt: int, completion: int | None, requested: str | None = None,
        reason: str = "passthrough",
    ) -> Hold | None:
        """With limits on and a stored key: its permissions and caps checked for a request relayed as it is
        (`LimitExceeded` / `NotPermitted` raised, counted under `reason` without a chat view); the hold to
        settle, else None."""
        limits = self.pipeline.limits
        if limits is None:
            return None
        if ex.parsed is None:
            ex.reason = reason
        return await limits.reserve_relayed(ex, tier, model, prompt, completion, requested)

    def settle_relayed(
        self, hold: Hold | None, tier: str, model: str, status: int, usage: Usage | None, seconds: float = 0.0
    ) -> None:
        if hold is not None and self.pipeline.limits is not None:
            self.pipeline.limits.settle_relayed_later(hold, tier, model, status, usage, seconds)

    def limit_headers(self, hold: Hold | None, proxied: ProxiedResponse | None = None) -> dict[str, str]:
        """The `x-ratelimit-*` headers of a request under limits (none without a stored key); a relayed answer
        (`proxied`) loses the upstream's own."""
        limits = self.pipeline.limits
        if hold is None or limits is None:
            return {}
        return limits.headers(hold) if proxied is None else limits.relayed_headers(hold, proxied.headers)

    def when_relayed(self, ex: Exchange, proxied: ProxiedResponse, model: str = "", hold: Hold | None = None) -> None:
        """Record `ex` once the upstream's answer has been relayed, with the usage it reported (if any); settle
        the limits' `hold` with it."""

        def record(answer: ProxiedResponse, scan: UsageScan) -> None:
            answered = scan.model or model
            if (hold is not None and self.pipeline.limits is not None and scan.usage is None and not answer.complete
                    and answer.status < 400 and hold.tokens > hold.prompt_tokens):
                # a generation left before its usage arrived (the client went, or the upstream broke off): the
                # upstream may bill all of it and the gateway never learns how much, so the reservation counts
                self.pipeline.limits.settle_reserved_later(hold)
            else:
                self.settle_relayed(hold, "upstream", answered, answer.status, scan.usage)
            if ex.parsed is not None:  # a request with a chat view (Responses, legacy completions)
                if scan.usage is not None:
                    ex.usage = scan.usage
                if answered:
                    ex.answered_model = answered
                ex.done()
                return
            self.pipeline.accounting.outside_chat("upstream", answer.status, "passthrough", ex.started, scan.usage,
                                                  answered)

        proxied.on_end = record

    async def forward_json(
        self, path: str, raw: dict[str, Any], headers: Iterable[tuple[str, str]], ex: Exchange
    ) -> Proxied:
        """POST `raw` (pin model names replaced by the upstream's default) to the upstream's `path`."""
        assert self.proxy is not None
        model = raw.get("model")
        if isinstance(model, str) and model in PIN_MODEL_NAMES:
            raw = {**raw, "model": self._upstream_model(model)}
        body = msgspec.json.encode(raw)
        sent_model = str(raw.get("model", ""))
        hold = None
        if self.pipeline.limits is not None:  # limits off: no work
            completion = 0 if path == "embeddings" else _max_output(raw)
            hold = await self.limit_relayed(ex, "upstream", sent_model, len(body) // 3, completion,
                                            model if isinstance(model, str) else "")
        forwarded = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-encoding")]
        sent = time.perf_counter()
        try:
            proxied = await self.proxy.send("POST", path, "", forwarded, body, ex.request_id)
        except BaseException:
            self.settle_relayed(hold, "upstream", sent_model, 502, None)
            raise
        ex.tier = ex.served_by = "upstream"
        ex.model = ex.answered_model = str(raw.get("model", ""))
        ex.tier_seconds = time.perf_counter() - sent
        ex.status = proxied.status
        response_headers = ex.response_headers() | self.limit_headers(hold, proxied)
        self.when_relayed(ex, proxied, ex.model, hold)
        return proxied, response_headers

    def _local_lacks(self, parsed: ParsedRequest) -> str | None:
        """The first feature the request needs that the local tier does not honour (its Responses field name)."""
        local = self.pipeline.tiers.local
        have = getattr(local, "features", frozenset())
        for feature in sorted(required_features(parsed) - have):
            return _FEATURE_PARAMS.get(feature, feature)
        return None

    # -- POST /v1/responses ----------------------------------------------------------------------------------
    async def responses(self, ex: Exchange, tenant: str, raw: Any, headers: Iterable[tuple[str, str]]) -> Answer | StreamAnswer | Proxied:
        if not isinstance(raw, dict):
            raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
        translation = to_chat(raw)
        try:
            parsed = parse_chat_request(msgspec.json.encode(translation.chat))
            self._routed(ex, tenant, parsed)
        except GatewayError as exc:  # name the field as the Responses request calls it
            param = exc.param or ""
            exc.param = "input" if param.startswith("messages") else _RESPONSES_PARAMS.get(param, exc.param)
            raise
        decision = ex.decision
        assert decision is not None
        blocker = translation.blockers[0] if translation.blockers else None
        lacking = self._local_lacks(parsed) if decision.tier == "local" else None
        if blocker is not None or lacking is not None or decision.tier == "upstream":
            pin = pinned_tier(RouteContext(parsed, ex.headers, self.proxy is not None, True))
            if pin is not None and pin[0] == "local" and (blocker or lacking):
                field = blocker or lacking or ""
                raise InvalidRequest(
                    f"The request is pinned to the local tier ({pin[1]}), which cannot serve '{field}': stored "
                    "responses, built-in tools and unsupported features exist only upstream.",
                    param=field.split("=")[0], code="unsupported_on_local",
                )
            if self.proxy is not None:
                return await self.forward_json("responses", raw, headers, ex)
            if blocker is not None:
                raise needs_upstream(blocker, "stored state and built-in tools exist only upstream.")
            if lacking is not None:
                raise needs_upstream(lacking, "the local model does not honour it.")
        # answered as the chat endpoint answers (cache, dispatcher, a hit's rate headers, learning's hook)
        answer = await self.pipeline.answer(ex)
        if isinstance(answer, StreamAnswer):  # `after_send` kept: the semantic cache and learning run by it
            return StreamAnswer(self._response_events(answer.chunks, raw, answer.headers), answer.headers,
                                answer.after_send)
        completion = _decoder.decode(answer.body)
        body = msgspec.json.encode(to_response(completion, raw))
        return Answer(answer.status, body, answer.headers, answer.after_send)

    async def _response_events(
        self, chunks: AsyncIterator[bytes], raw: dict[str, Any], headers: dict[str, str]
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
    async def completions(self, ex: Exchange, tenant: str, raw: Any, headers: Iterable[tuple[str, str]]) -> Answer | StreamAnswer | Proxied:
        parsed = legacy.parse_completion(raw)
        request = parsed.request
        view: dict[str, Any] = {"model": request.model, "messages": [{"role": "user", "content": parsed.text or ""}]}
        if request.max_tokens is not None:
            view["max_tokens"] = request.max_tokens
        self._routed(ex, tenant, parse_chat_request(msgspec.json.encode(view)))
        decision = ex.decision
        assert decision is not None
        local = self.pipeline.tiers.local
        if parsed.blockers or decision.tier == "upstream" or local is None:
            if self.proxy is None:
                field = parsed.blockers[0] if parsed.blockers else "model"
                raise needs_upstream(field, "the local tier runs one text prompt, without logprobs, echo or n.")
            return await self.forward_json("completions", raw, headers, ex)
        from gateway.tiers.local_prompt import complete_prompt, stream_prompt

        assert parsed.text is not None
        max_tokens = request.max_tokens or legacy.LEGACY_DEFAULT_MAX_TOKENS
        model = getattr(local, "served_model_name", ex.model)
        ex.model = ex.answered_model = model
        hold = None
        if self.pipeline.limits is not None:  # the local spend is held and settled like a chat request's
            hold = await self.limit_relayed(ex, "local", model, len(msgspec.json.encode(raw)) // 3, max_tokens,
                                            request.model)
        tier_started = time.perf_counter()
        try:
            if request.stream:
                opened = await stream_prompt(local, parsed.text, request, max_tokens)
                if hold is not None:
                    self._settle_generated(hold, model, opened, tier_started)
                return StreamAnswer(self._legacy_chunks(ex, opened, tier_started, request.include_usage),
                                    ex.response_headers() | self.limit_headers(hold))
            result = await complete_prompt(local, parsed.text, request, max_tokens)
        except GatewayError as exc:
            self.settle_relayed(hold, "local", model, exc.status_code, None)  # nothing generated: refunded
            if self.proxy is not None and decision.fallback == "upstream" and exc.recoverable:
                ex.tier_failed("local", exc)
                ex.fallback = "upstream"
                return await self.forward_json("completions", raw, headers, ex)
            raise
        except BaseException:  # the client left before the answer was ready: nothing billed locally
            self.settle_relayed(hold, "local", model, 499, None)
            raise
        ex.tier_seconds = time.perf_counter() - tier_started
        ex.usage = Usage(result.prompt_tokens, result.completion_tokens)
        self.settle_relayed(hold, "local", model, 200, ex.usage, ex.tier_seconds)
        body = legacy.completion_body(model, result.text, result.finish_reason, result.prompt_tokens,
                                      result.completion_tokens)
        ex.done()
        return Answer(200, body, ex.response_headers() | self.limit_headers(hold))

    def _settle_generated(self, hold: Hold, model: str, opened: Any, started: float) -> None:
        """Settle a local legacy stream once its generation stops (finished, failed, or cancelled because the
        client left): with the prompt and the tokens it really generated."""
        limits = self.pipeline.limits
        assert limits is not None

        async def spent() -> tuple[Usage | None, float]:
            result = await opened.stopped()
            return Usage(result.prompt_tokens, result.completion_tokens), time.perf_counter() - started

        limits.settle_relayed_after(hold, "local", model, spent())

    async def _legacy_chunks(self, ex: Exchange, opened: Any, tier_started: float, include_usage: bool) -> AsyncIterator[bytes]:
        chunks = legacy.CompletionChunks(ex.model)
        try:
            async for piece in opened.pieces():
                if ex.first_token_at is None:
                    ex.first_token_at = time.perf_counter()
                yield b"data: " + chunks.text(piece) + b"\n\n"
            result = opened.result()
            ex.usage = Usage(result.prompt_tokens, result.completion_tokens)
            tail = [b"data: " + chunks.text("", result.finish_reason) + b"\n\n"]
            if include_usage:
                tail.append(b"data: " + chunks.usage(result.prompt_tokens, result.completion_tokens) + b"\n\n")
            tail.append(b"data: [DONE]\n\n")
            yield FinalChunk(b"".join(tail))
        except GatewayError as exc:
            ex.status = exc.status_code
            yield FinalChunk(b"data: " + error_json(exc.message, exc.error_type, exc.param, exc.code) + b"\n\n")
        except (GeneratorExit, asyncio.CancelledError):
            ex.status = 499  # the client left (nginx's convention, as for chat streams)
            raise
        finally:
            opened.cancel()
            ex.tier_seconds = time.perf_counter() - tier_started
            ex.done()

    # -- POST /v1/embeddings ---------------------------------------------------------------------------------
    def local_embedding_names(self) -> list[str]:
        """The model ids that pick the bundled embedder (its own name, and `local-embedding`)."""
        if self.embedder is None:
            return []
        return [self.embedder.name, "local-embedding"]

    def _is_local_embedding_model(self, model: str) -> bool:
        return model in LOCAL_EMBEDDING_ALIASES or model in self.local_embedding_names() or self.proxy is None

    async def embeddings(self, ex: Exchange, raw: Any, headers: Iterable[tuple[str, str]]) -> Answer | Proxied:
        request = parse_embedding_request(raw, max_inputs=self._max_embedding_inputs)
        if not self._is_local_embedding_model(request.model):
            return await self.forward_json("embeddings", raw, headers, ex)
        embedder = self.embedder
        if embedder is None:
            raise InvalidRequest("This gateway has no local embedding model.", param="model",
                                 code="model_not_found")
        texts = texts_of(request, self._decode_tokens)
        hold = None
        if self.pipeline.limits is not None:
            hold = await self.limit_relayed(ex, "local", embedder.name, sum(len(t) for t in texts) // 3, 0,
                                            request.model, "embeddings")
        try:
            vectors = await asyncio.to_thread(embedder.embed, texts)
        except BaseException:
            self.settle_relayed(hold, "local", embedder.name, 500, None)
            raise
        tokens = self._count_tokens(texts) if self._count_tokens is not None else sum(len(t.split()) for t in texts)
        self.settle_relayed(hold, "local", embedder.name, 200, Usage(tokens, 0))
        self.count("local", 200, "embeddings", ex.started)
        body = embedding_body(vectors, embedder.name, tokens, request.encoding_format, request.dimensions)
        ex.tier = ex.served_by = "local"
        ex.model = embedder.name
        return Answer(200, body, ex.response_headers() | self.limit_headers(hold))

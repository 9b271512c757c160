"""The request pipeline: route a parsed chat request, call the chosen tier (falling back if it fails), record metrics.

Framework-free: the litestar handler in `gateway.api.chat` turns its `Answer` / `StreamAnswer` into responses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import msgspec

from gateway.api.event_stream import FinalChunk
from gateway.api.schemas import ParsedRequest
from gateway.costs import CostModel
from gateway.errors import GatewayError, InvalidRequest, RateLimited, TierUnavailable, UpstreamStatusError, error_json
from gateway.metrics import GatewayMetrics
from gateway.routing.decision import RouteContext, RouteDecision, Router, Tier
from gateway.tiers.base import Backend, Completion, Usage, chunk_usage
from gateway.tiers.local import ContextTooLong

SSE_DONE = b"data: [DONE]\n\n"
T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # the status recorded for a stream the client left (nginx's convention)
PIN_MODEL_NAMES = frozenset({"local", "upstream", "auto"})


class Answer(msgspec.Struct):
    """A complete response: status, JSON body, headers."""

    status: int
    body: bytes
    headers: dict[str, str]
    after_send: Callable[[], Awaitable[None]] | None = None
    """Run once the client has the whole answer (learning's hook; see gateway/learning/service.py)."""


class StreamAnswer(msgspec.Struct):
    """A streamed response: SSE-framed byte chunks and headers (status 200)."""

    chunks: AsyncIterator[bytes]
    headers: dict[str, str]
    after_send: Callable[[], Awaitable[None]] | None = None


class StreamObserver(Protocol):
    """Sees every chunk a relayed stream carries (the response cache records answers with it).

    `feed` gets each chunk's JSON; `completed` is awaited once the tier's stream ended cleanly, before [DONE]
    is sent; `abandoned` is called when it did not (tier error, client gone) and is a no-op after `completed`.
    """

    def feed(self, payload: bytes) -> None: ...

    async def completed(self, tier: Tier) -> None: ...

    def abandoned(self) -> None: ...


def is_tier_failure(exc: BaseException) -> bool:
    """Failures that another tier may recover from (as opposed to errors the client caused)."""
    if isinstance(exc, (TierUnavailable, RateLimited, ContextTooLong)):
        return True
    return isinstance(exc, UpstreamStatusError) and (exc.status_code >= 500 or exc.status_code == 429)


class Tiers(msgspec.Struct):
    """The backends the gateway has; either may be absent (no upstream configured, or a remote-only setup)."""

    local: Backend | None = None
    upstream: Backend | None = None
    upstream_default_model: str = "gpt-4o-mini"
    local_model_name: str = "local"

    def get(self, tier: Tier) -> Backend | None:
        return self.local if tier == "local" else self.upstream

    def model_for(self, tier: Tier, requested: str) -> str:
        """The model name sent to a tier: the local model's name, or the requested one / the upstream default."""
        if tier == "local":
            return self.local_model_name
        return self.upstream_default_model if requested in PIN_MODEL_NAMES else requested


class ChatDispatcher:
    """Routes, dispatches and accounts for chat completion requests."""

    def __init__(self, tiers: Tiers, router: Router, metrics: GatewayMetrics, costs: CostModel) -> None:
        self.tiers = tiers
        self.router = router
        self.metrics = metrics
        self.costs = costs

    def route(self, parsed: ParsedRequest, headers: Mapping[str, str]) -> RouteDecision:
        """Ask the router, and count the decision."""
        ctx = RouteContext(
            request=parsed,
            headers=headers,
            has_upstream=self.tiers.upstream is not None,
            has_local=self.tiers.local is not None,
        )
        decision = self.router.decide(ctx)
        self.metrics.routing_decisions.labels(decision.tier, decision.reason).inc()
        if decision.score is not None:
            self.metrics.classifier_score.observe(decision.score)
        return decision

    def _backend(self, tier: Tier) -> Backend:
        backend = self.tiers.get(tier)
        if backend is None:
            raise InvalidRequest(
                f"The {tier} tier is not configured on this gateway.", param="model", code=f"{tier}_not_configured"
            )
        return backend

    def _headers(self, request_id: str, tier: str, model: str, decision: RouteDecision) -> dict[str, str]:
        return {
            "x-request-id": request_id,
            "x-gateway-route": tier,
            "x-gateway-model": model,
            "x-gateway-route-reason": decision.detail,
        }

    def _fallback_for(self, decision: RouteDecision, exc: BaseException) -> Tier | None:
        if decision.fallback and is_tier_failure(exc) and self.tiers.get(decision.fallback) is not None:
            return decision.fallback
        return None

    def _count_failure(self, tier: Tier, exc: BaseException) -> None:
        if tier == "upstream":
            if isinstance(exc, TierUnavailable):
                self.metrics.upstream_errors.labels(exc.kind).inc()
            elif isinstance(exc, UpstreamStatusError):
                self.metrics.upstream_errors.labels("status_5xx" if exc.status_code >= 500 else "status_4xx").inc()
        elif isinstance(exc, RateLimited):
            self.metrics.local_rejected.labels("queue_full").inc()
        elif isinstance(exc, ContextTooLong):
            self.metrics.local_rejected.labels("context_too_long").inc()

    async def _with_fallback(self, decision: RouteDecision, attempt: Callable[[Tier], Awaitable[T]]) -> tuple[Tier, T]:
        """Run `attempt` on the decided tier; on a tier failure, once more on the decision's fallback tier."""
        tier: Tier = decision.tier
        try:
            return tier, await attempt(tier)
        except GatewayError as exc:
            self._count_failure(tier, exc)
            fallback = self._fallback_for(decision, exc)
            if fallback is None:
                raise
        self.metrics.fallbacks.labels(tier, fallback).inc()
        try:
            return fallback, await attempt(fallback)
        except GatewayError as second:
            self._count_failure(fallback, second)
            raise

    # -- accounting ----------------------------------------------------------------------------------------
    def account(
        self,
        *,
        tier: str,
        served_by: Tier,
        requested_model: str,
        answered_model: str,
        usage: Usage,
        status: int,
        reason: str,
        started: float,
        tier_seconds: float,
        stream: bool,
    ) -> None:
        """Record one finished request: counts, latency, overhead, tokens, cost and savings."""
        total = time.perf_counter() - started
        m = self.metrics
        m.requests.labels(tier, str(status), reason).inc()
        m.request_duration.labels(tier, "true" if stream else "false").observe(total)
        m.overhead.labels(tier).observe(max(0.0, total - tier_seconds))
        if status >= 400:
            return
        m.prompt_tokens.labels(tier, answered_model).inc(usage.prompt_tokens)
        m.completion_tokens.labels(tier, answered_model).inc(usage.completion_tokens)
        reference = self.costs.reference_for(requested_model)
        upstream_price = self.costs.upstream_cost(reference, usage)
        if tier == "cache":
            cost = 0.0
        elif served_by == "local":
            cost = self.costs.local_cost(usage, tier_seconds)
        else:
            cost = self.costs.upstream_cost(answered_model, usage)
        m.cost.labels(tier).inc(cost)
        if tier != "upstream":
            m.savings.labels(tier).inc(max(0.0, upstream_price - cost))

    def account_error(self, exc: GatewayError, reason: str, tier: str) -> None:
        """Count a request answered with an error status (`tier` is "none" when no tier was chosen)."""
        self.metrics.requests.labels(tier, str(exc.status_code), reason).inc()

    # -- non-streaming -------------------------------------------------------------------------------------
    async def complete(self, parsed: ParsedRequest, decision: RouteDecision, request_id: str, started: float) -> Answer:
        tier_started = time.perf_counter()
        tier, completion = await self._with_fallback(
            decision, lambda tier: self._complete_on(tier, parsed, request_id)
        )
        tier_seconds = time.perf_counter() - tier_started
        self.account(
            tier=tier,
            served_by=tier,
            requested_model=parsed.chat.model,
            answered_model=completion.model,
            usage=completion.usage,
            status=200,
            reason=decision.reason,
            started=started,
            tier_seconds=tier_seconds,
            stream=False,
        )
        return Answer(200, completion.body, self._headers(request_id, tier, completion.model, decision))

    async def _complete_on(self, tier: Tier, parsed: ParsedRequest, request_id: str) -> Completion:
        backend = self._backend(tier)
        return await backend.complete(parsed, self.tiers.model_for(tier, parsed.chat.model), request_id)

    # -- streaming -----------------------------------------------------------------------------------------
    async def stream(
        self,
        parsed: ParsedRequest,
        decision: RouteDecision,
        request_id: str,
        started: float,
        observer: StreamObserver | None = None,
    ) -> StreamAnswer:
        """Open the stream on the chosen tier (or its fallback) before answering, so errors keep their status."""
        opened = time.perf_counter()
        tier, (first, chunks) = await self._with_fallback(
            decision, lambda tier: self._open_stream(tier, parsed, request_id)
        )
        model = self.tiers.model_for(tier, parsed.chat.model)
        headers = self._headers(request_id, tier, model, decision)
        relay = self._relay(
            first, chunks, parsed, decision, tier, model, started, time.perf_counter() - opened, observer
        )
        return StreamAnswer(relay, headers)

    async def _open_stream(
        self, tier: Tier, parsed: ParsedRequest, request_id: str
    ) -> tuple[list[bytes], AsyncIterator[list[bytes]]]:
        backend = self._backend(tier)
        chunks = backend.stream(parsed, self.tiers.model_for(tier, parsed.chat.model), request_id).__aiter__()
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            raise TierUnavailable(f"The {tier} tier sent an empty stream.", kind="protocol") from None
        return first, chunks

    async def _relay(
        self,
        first: list[bytes],
        chunks: AsyncIterator[list[bytes]],
        parsed: ParsedRequest,
        decision: RouteDecision,
        tier: Tier,
        model: str,
        started: float,
        open_seconds: float,
        observer: StreamObserver | None = None,
    ) -> AsyncIterator[bytes]:
        """SSE-frame the tier's chunk batches; drop the usage chunk unless asked for; end with [DONE] or an error event."""
        include_usage = parsed.include_usage
        usage = Usage()
        answered_model = model
        status = 200
        ttft_seen = ending = False
        tier_seconds = open_seconds
        clock = time.perf_counter
        framed: list[bytes] = []  # SSE events not yet written (after the usage chunk: held for [DONE])
        try:
            batch: list[bytes] | None = first
            while batch is not None:
                for payload in batch:
                    if observer is not None:
                        observer.feed(payload)
                    if b'"usage"' in payload and b'"usage":null' not in payload:
                        chunk: dict[str, Any] = msgspec.json.decode(payload)
                        found = chunk_usage(chunk)
                        if found is not None:
                            usage = found
                            answered_model = chunk.get("model") or answered_model
                            ending = not chunk.get("choices")
                            if ending and not include_usage:
                                continue
                    if not ttft_seen and b'"content":"' in payload and b'"content":""' not in payload:
                        ttft_seen = True
                        self.metrics.time_to_first_token.labels(tier).observe(clock() - started)
                    framed += (b"data: ", payload, b"\n\n")
                if framed and not ending:  # everything that arrived together leaves in one write
                    yield b"".join(framed)
                    framed = []
                waited = clock()
                batch = await anext(chunks, None)
                tier_seconds += clock() - waited
            if observer is not None:
                await observer.completed(tier)
            framed.append(SSE_DONE)
            yield FinalChunk(b"".join(framed))
        except GatewayError as exc:
            status = exc.status_code
            self._count_failure(tier, exc)
            framed += (b"data: ", error_json(exc.message, exc.error_type, exc.param, exc.code), b"\n\n")
            yield FinalChunk(b"".join(framed))
        except (GeneratorExit, asyncio.CancelledError):
            status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            if observer is not None:
                observer.abandoned()
            self.account(
                tier=tier,
                served_by=tier,
                requested_model=parsed.chat.model,
                answered_model=answered_model,
                usage=usage,
                status=status,
                reason=decision.reason,
                started=started,
                tier_seconds=tier_seconds,
                stream=True,
            )
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:  # after accounting: a cancelled close must not lose the request's metrics
                await aclose()

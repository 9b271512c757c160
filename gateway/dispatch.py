"""The bottom layer of the request path: answer a routed `Exchange` from its tier, falling back if that fails.

Framework-free and metric-free: what happened (tier, model, usage, failures, time) is written into the
exchange, and `gateway.accounting` records it when the exchange is done. The HTTP layer (`gateway.api`) turns
the `Answer` / `StreamAnswer` into responses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import msgspec

from gateway.errors import GatewayError, InvalidRequest, TierUnavailable, error_json
from gateway.exchange import CLIENT_CLOSED_REQUEST, Exchange
from gateway.openai.wire import SSE_DONE, FinalChunk, Usage, chunk_usage
from gateway.routing.decision import Tier
from gateway.tiers.base import Backend, Completion

T = TypeVar("T")
PIN_MODEL_NAMES = frozenset({"local", "upstream", "auto"})
AfterSend = Callable[[], Awaitable[None]]
"""Work that runs once the client has the whole answer (`Answer.after_send`), in the request's task."""


class Answer(msgspec.Struct):
    """A complete response: status, JSON body, headers."""

    status: int
    body: bytes
    headers: dict[str, str]
    after_send: AfterSend | None = None
    """Run once the client has the whole answer: the semantic cache's indexing (gateway/cache/flow.py), then
    learning's hook (gateway/learning/service.py); add one with `then`."""


class StreamAnswer(msgspec.Struct):
    """A streamed response: SSE-framed byte chunks and headers (status 200)."""

    chunks: AsyncIterator[bytes]
    headers: dict[str, str]
    after_send: AfterSend | None = None


class _Both:
    __slots__ = ("first", "second")

    def __init__(self, first: AfterSend, second: AfterSend) -> None:
        self.first = first
        self.second = second

    async def __call__(self) -> None:
        try:
            await self.first()
        finally:
            await self.second()


def then(first: AfterSend | None, second: AfterSend | None) -> AfterSend | None:
    """`first`, then `second` (even when `first` raised): one `after_send` for an answer that has two."""
    if first is None or second is None:
        return first or second
    return _Both(first, second)


class Handler(Protocol):
    """Answers a routed exchange. The dispatcher is one; the cache is a layer around another."""

    async def __call__(self, exchange: Exchange) -> Answer | StreamAnswer: ...


class Tiers(msgspec.Struct):
    """The backends the gateway has; either may be absent (no upstream configured, or a remote-only setup),
    and any number of named SLM tiers (`slm_tiers` in the settings) besides `local`."""

    local: Backend | None = None
    upstream: Backend | None = None
    upstream_default_model: str = "gpt-4o-mini"
    local_model_name: str = "local"
    slm: dict[str, Backend] = msgspec.field(default_factory=dict)
    slm_models: dict[str, str] = msgspec.field(default_factory=dict)
    """The model each named SLM tier serves."""

    def get(self, tier: Tier) -> Backend | None:
        if tier == "local":
            return self.local
        return self.upstream if tier == "upstream" else self.slm.get(tier)

    def model_for(self, tier: Tier, requested: str) -> str:
        """The model name sent to a tier: an SLM tier's model name, or the requested one / the upstream default."""
        if tier == "local":
            return self.local_model_name
        if tier in self.slm:
            return self.slm_models.get(tier, tier)
        return self.upstream_default_model if requested in PIN_MODEL_NAMES else requested

    def backends(self) -> list[Backend]:
        """Every configured backend (to start and close them)."""
        return [b for b in (self.local, self.upstream, *self.slm.values()) if b is not None]


class Dispatcher:
    """Calls the exchange's tier (once more on the decision's fallback after a recoverable error) and relays."""

    def __init__(self, tiers: Tiers) -> None:
        self.tiers = tiers

    async def __call__(self, ex: Exchange) -> Answer | StreamAnswer:
        if ex.stream:
            return await self.stream(ex)
        return await self.complete(ex)

    def _backend(self, tier: Tier) -> Backend:
        backend = self.tiers.get(tier)
        if backend is None:
            raise InvalidRequest(
                f"The {tier} tier is not configured on this gateway.", param="model", code=f"{tier}_not_configured"
            )
        return backend

    async def _with_fallback(self, ex: Exchange, attempt: Callable[[Exchange, Backend], Awaitable[T]]) -> T:
        """Run `attempt` on the exchange's tier; after a recoverable error, on the decision's fallback, then on
        each tier of its `then` chain in turn while the errors stay recoverable."""
        assert ex.decision is not None and ex.parsed is not None
        tier: Tier = ex.decision.tier
        try:
            return await attempt(ex, self._backend(tier))
        except GatewayError as exc:
            ex.tier_failed(tier, exc)
            failure = exc
        chain = [] if ex.decision.fallback is None else [ex.decision.fallback, *ex.decision.then]
        for fallback in chain:
            if not failure.recoverable:
                break
            if self.tiers.get(fallback) is None:
                continue
            ex.fell_back(fallback, self.tiers.model_for(fallback, ex.parsed.chat.model))
            try:
                return await attempt(ex, self._backend(fallback))
            except GatewayError as exc:
                ex.tier_failed(fallback, exc)
                failure = exc
        raise failure

    # -- non-streaming -------------------------------------------------------------------------------------
    async def complete(self, ex: Exchange) -> Answer:
        tier_started = time.perf_counter()
        completion = await self._with_fallback(ex, _complete_on)
        ex.tier_seconds = time.perf_counter() - tier_started
        ex.model = ex.answered_model = completion.model
        ex.usage = completion.usage
        return Answer(200, completion.body, ex.response_headers())

    # -- streaming -----------------------------------------------------------------------------------------
    async def stream(self, ex: Exchange) -> StreamAnswer:
        """Open the stream on the tier (or its fallback) before answering, so errors keep their status."""
        opened = time.perf_counter()
        first, chunks = await self._with_fallback(ex, _open_stream)
        ex.tier_seconds = time.perf_counter() - opened
        return StreamAnswer(_relay(ex, first, chunks), ex.response_headers())


async def _complete_on(ex: Exchange, backend: Backend) -> Completion:
    assert ex.parsed is not None
    return await backend.complete(ex.parsed, ex.model, ex.request_id)


async def _open_stream(ex: Exchange, backend: Backend) -> tuple[list[bytes], AsyncIterator[list[bytes]]]:
    assert ex.parsed is not None
    chunks = backend.stream(ex.parsed, ex.model, ex.request_id).__aiter__()
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        raise TierUnavailable(f"The {ex.tier} tier sent an empty stream.", kind="protocol") from None
    return first, chunks


async def _relay(ex: Exchange, first: list[bytes], chunks: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    """SSE-frame the tier's chunk batches; drop the usage chunk unless asked for; end with [DONE] or an error event.

    Usage, the answering model, the time waited on the tier and the first content token's time go into the
    exchange. It is done (recorded) just before the last write, the stream being answered by then: the writer
    stops after that write, and its later close of this generator is not a client leaving. A client that leaves
    before is recorded as 499 with the content chunks relayed so far as its completion tokens (one each, as
    OpenAI streams them; the tier's exact count comes only in the usage chunk at the end).
    """
    assert ex.parsed is not None
    include_usage = ex.parsed.include_usage
    observer = ex.observer
    tier: Tier = ex.tier  # type: ignore[assignment]
    ttft_seen = ending = answered = False
    sent = content_from = 0  # chunks relayed; how many before the first content token
    tier_seconds = ex.tier_seconds
    clock = time.perf_counter
    framed: list[bytes] = []  # SSE events not yet written (after the usage chunk: held for [DONE])
    try:
        batch: list[bytes] | None = first
        while batch is not None:
            for payload in batch:
                sent += 1
                if observer is not None:
                    observer.feed(payload)
                if b'"usage"' in payload and b'"usage":null' not in payload:
                    chunk: dict[str, Any] = msgspec.json.decode(payload)
                    found = chunk_usage(chunk)
                    if found is not None:
                        ex.usage = found
                        ex.answered_model = chunk.get("model") or ex.answered_model
                        ending = not chunk.get("choices")
                        if ending and not include_usage:
                            continue
                if not ttft_seen and b'"content":"' in payload and b'"content":""' not in payload:
                    ttft_seen = True
                    content_from = sent - 1
                    ex.first_token_at = clock()
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
        answered = True
        ex.tier_seconds = tier_seconds
        ex.done()
        yield FinalChunk(b"".join(framed))
    except GatewayError as exc:
        ex.status = exc.status_code
        ex.error = exc
        ex.tier_failed(tier, exc)
        framed += (b"data: ", error_json(exc.message, exc.error_type, exc.param, exc.code), b"\n\n")
        answered = True
        ex.tier_seconds = tier_seconds
        ex.done()
        yield FinalChunk(b"".join(framed))
    except (GeneratorExit, asyncio.CancelledError):
        if not answered:  # the client left before the answer was complete
            ex.status = CLIENT_CLOSED_REQUEST
            if ex.usage.completion_tokens == 0 and ttft_seen:
                ex.usage = Usage(0, sent - content_from)
        raise
    finally:
        if observer is not None:
            observer.abandoned()
        ex.tier_seconds = tier_seconds
        ex.done()  # a no-op when the answer was recorded before its last write
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:  # after accounting: a cancelled close must not lose the request's metrics
            await aclose()

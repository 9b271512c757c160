"""`Exchange`: one chat request's state, filled in as it travels down route → cache → tier, and its outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from gateway.openai.wire import (
    CACHE_HEADER,
    CACHE_SIMILARITY_HEADER,
    CACHE_TIER_HEADER,
    MODEL_HEADER,
    REQUEST_ID_HEADER,
    ROUTE_HEADER,
    ROUTE_REASON_HEADER,
    Usage,
)

if TYPE_CHECKING:
    from gateway.errors import GatewayError
    from gateway.openai.request import ParsedRequest
    from gateway.routing.decision import RouteDecision, Tier

NO_TIER = "none"  # the tier label of a request refused before a tier was chosen
CLIENT_CLOSED_REQUEST = 499  # the status recorded for a stream the client left (nginx's convention)
SEMANTIC_HIT = "semantic-hit"  # the cache outcome of a paraphrase answered by the semantic cache


class StreamObserver(Protocol):
    """Sees every chunk a relayed stream carries (the response cache records answers with it).

    `feed` gets each chunk's JSON; `completed` is awaited once the tier's stream ended cleanly, before [DONE]
    is sent; `abandoned` is called when it did not (tier error, client gone) and is a no-op after `completed`.
    """

    def feed(self, payload: bytes) -> None: ...

    async def completed(self, tier: Tier) -> None: ...

    def abandoned(self) -> None: ...


class Exchange:
    """One request, from the route handler to its last byte.

    Each layer fills in what it learns: the HTTP layer the ids, tenant and parsed request; routing the decision
    and the tier and model it implies; the cache its outcome; the dispatcher the tier that served, its model,
    usage and time. `done()` hands the finished exchange to the one recorder (`gateway.accounting`), once.
    """

    __slots__ = (
        "request_id", "headers", "started", "tenant", "parsed", "decision", "reason", "tier", "served_by",
        "model", "answered_model", "usage", "status", "error", "refused", "tier_seconds", "first_token_at",
        "cache", "cache_tier", "cache_similarity", "on_stored", "observer", "failures", "fallback", "stream", "_on_done",
    )

    def __init__(
        self,
        request_id: str,
        headers: Mapping[str, str],
        started: float,
        on_done: Callable[[Exchange], None] | None = None,
    ) -> None:
        self.request_id = request_id
        self.headers = headers
        self.started = started
        self.tenant = ""
        self.parsed: ParsedRequest | None = None
        self.stream = False
        self.decision: RouteDecision | None = None
        self.reason = "invalid"
        """The route reason label: the decision's, a rejection's, or "invalid" before routing."""
        self.tier: str = NO_TIER
        """Who answers: "local" / "upstream" (the fallback's, after a fallback), "cache" for a hit."""
        self.served_by: Tier | None = None
        """The tier that produced the answer (for a hit: the tier that first answered it)."""
        self.model = ""
        """The model the answer is sent with (to the tier, and in `x-gateway-model`)."""
        self.answered_model = ""
        """The model the answer says it came from (what tokens and cost are counted under)."""
        self.usage = Usage()
        self.status = 200
        self.error: GatewayError | None = None
        self.refused = False
        """Answered with an error status before any response started (auth, parsing, routing, the tier)."""
        self.tier_seconds = 0.0
        self.first_token_at: float | None = None
        self.cache: str | None = None
        """The cache's outcome: "hit", "semantic-hit", "miss" or "bypass"."""
        self.cache_tier: str | None = None
        self.cache_similarity: float | None = None
        """For a semantic hit: the cosine similarity of the request's prompt and the cached one."""
        self.on_stored: Callable[[str], Awaitable[None]] | None = None
        """Awaited with the entry's key once the exact cache stored this request's answer and the client has it
        (the answer's `after_send`; the semantic layer indexes the prompt then)."""
        self.observer: StreamObserver | None = None
        self.failures: list[tuple[Tier, GatewayError]] | None = None
        """Tier failures on the way (each is counted), in order."""
        self.fallback: Tier | None = None
        """The tier fallen back to after the decided one failed."""
        self._on_done = on_done

    def accept(self, tenant: str, parsed: ParsedRequest) -> None:
        """The caller and the request, once the key and the body checked out."""
        self.tenant = tenant
        self.parsed = parsed
        self.stream = parsed.chat.stream

    def routed(self, decision: RouteDecision, model: str) -> None:
        """The router's decision and the model the decided tier is asked for."""
        self.decision = decision
        self.reason = decision.reason
        self.tier = decision.tier
        self.served_by = decision.tier
        self.model = model
        self.answered_model = model

    def tier_failed(self, tier: Tier, exc: GatewayError) -> None:
        if self.failures is None:
            self.failures = []
        self.failures.append((tier, exc))

    def fell_back(self, tier: Tier, model: str) -> None:
        self.fallback = tier
        self.tier = tier
        self.served_by = tier
        self.model = model
        self.answered_model = model

    def refuse(self, exc: GatewayError) -> None:
        """The request is answered with `exc` instead of a response."""
        self.error = exc
        self.status = exc.status_code
        self.refused = True
        if self.cache is not None:
            exc.headers = {**exc.headers, CACHE_HEADER: self.cache}

    def response_headers(self) -> dict[str, str]:
        """The `x-request-id` and `x-gateway-*` headers of the answer (built once, when it is ready)."""
        headers = {
            REQUEST_ID_HEADER: self.request_id,
            ROUTE_HEADER: self.tier,
            MODEL_HEADER: self.model,
            ROUTE_REASON_HEADER: self.route_reason(),
        }
        if self.cache is not None:
            headers[CACHE_HEADER] = self.cache
            if self.cache_tier is not None:
                headers[CACHE_TIER_HEADER] = self.cache_tier
            if self.cache_similarity is not None:
                headers[CACHE_SIMILARITY_HEADER] = f"{self.cache_similarity:.4f}"
        return headers

    def route_reason(self) -> str:
        """The `x-gateway-route-reason` text: the decision's detail, and after a fallback which tier failed how,
        e.g. "rule 'pin-local'; local failed (local_queue_full): fell back to upstream"."""
        decision = self.decision
        if decision is None:
            return ""
        if self.fallback is None or not self.failures:
            return decision.detail
        failed = ", ".join(f"{tier} failed ({failure_label(exc)})" for tier, exc in self.failures)
        return f"{decision.detail}; {failed}: fell back to {self.fallback}"

    def done(self) -> None:
        """The request is over (answered, failed, or left): record it, once."""
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self)


def failure_label(exc: GatewayError) -> str:
    """A short machine-readable name of a tier failure: its error code, else its kind, else its status."""
    return exc.code or getattr(exc, "kind", None) or f"status_{exc.status_code}"

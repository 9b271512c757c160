"""`CachedChat`: answer a routed chat request from the cache, or through the dispatcher and remember the answer.

Response headers: `x-gateway-cache: hit|miss|bypass` always; a hit also says `x-gateway-route: cache`,
`x-gateway-cache-tier: <tier that first answered>` and `x-gateway-model: <model that answered>`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from gateway.api.event_stream import FinalChunk
from gateway.api.schemas import ParsedRequest
from gateway.cache.entry import CacheEntry, completion_body, entry_from_completion, stream_events
from gateway.cache.keys import cache_key
from gateway.cache.recorder import StreamRecorder
from gateway.cache.rules import client_directives, is_cacheable, tenant_of_request
from gateway.cache.service import Lead, ResponseCache
from gateway.dispatch import Answer, ChatDispatcher, StreamAnswer, Tiers
from gateway.errors import GatewayError
from gateway.routing.decision import RouteDecision, Tier
from gateway.tiers.base import Usage

CACHE_HEADER = "x-gateway-cache"
CACHE_TIER_HEADER = "x-gateway-cache-tier"


class _Recording:
    """The dispatcher's stream observer for a leader: records the stream and hands the entry to the cache."""

    __slots__ = ("cache", "lead", "recorder")

    def __init__(self, cache: ResponseCache, lead: Lead, recorder: StreamRecorder) -> None:
        self.cache = cache
        self.lead = lead
        self.recorder = recorder

    def feed(self, payload: bytes) -> None:
        self.recorder.feed(payload)

    async def completed(self, tier: Tier) -> None:
        await self.cache.finish(self.lead, self.recorder.entry(tier))

    def abandoned(self) -> None:
        self.cache.abandon(self.lead)


class CachedChat:
    """The cache in front of a `ChatDispatcher`."""

    def __init__(
        self,
        cache: ResponseCache,
        dispatcher: ChatDispatcher,
        tiers: Tiers,
        *,
        key_prefix: str,
        enabled: bool = True,
        tenant_header: str | None = None,
        cache_nondeterministic: bool = False,
    ) -> None:
        self.cache = cache
        self.dispatcher = dispatcher
        self.tiers = tiers
        self.key_prefix = key_prefix
        self.enabled = enabled
        self.tenant_header = tenant_header.lower() if tenant_header else None
        self.cache_nondeterministic = cache_nondeterministic

    async def start(self) -> None:
        await self.cache.start()

    async def close(self) -> None:
        await self.cache.close()

    def key_for(self, parsed: ParsedRequest, decision: RouteDecision, tenant: str, headers: Mapping[str, str]) -> str:
        """The cache key of a routed request."""
        model = self.tiers.model_for(decision.tier, parsed.chat.model)
        return cache_key(
            self.key_prefix, tenant_of_request(tenant, headers, self.tenant_header), decision.tier, model, parsed.raw
        )

    async def answer(
        self,
        parsed: ParsedRequest,
        decision: RouteDecision,
        headers: Mapping[str, str],
        request_id: str,
        tenant: str,
        started: float,
    ) -> Answer | StreamAnswer:
        """Serve a hit, or dispatch (collapsing identical misses) and store the complete answer."""
        directives = client_directives(headers)
        if not self.enabled or not is_cacheable(parsed, decision, self.cache_nondeterministic):
            self.cache.count_lookup("bypass")
            return await self._dispatch(parsed, decision, request_id, started, None, "bypass")
        key = self.key_for(parsed, decision, tenant, headers)
        store = not directives.no_store
        if directives.no_cache:
            self.cache.count_lookup("bypass")
            lead = self.cache.store_only(key) if store else None
            return await self._dispatch(parsed, decision, request_id, started, lead, "bypass")
        entry = await self.cache.get(key)
        if entry is None and store:
            found = await self.cache.lead_or_wait(key)
            if isinstance(found, CacheEntry):
                entry = found
            else:  # leading, or the awaited leader came back empty: answer (and store) on our own
                lead = found if found is not None else self.cache.store_only(key)
                self.cache.count_lookup("miss")
                return await self._dispatch(parsed, decision, request_id, started, lead, "miss")
        if entry is None:
            self.cache.count_lookup("miss")
            return await self._dispatch(parsed, decision, request_id, started, None, "miss")
        self.cache.count_lookup("hit")
        return self._replay(entry, parsed, decision, request_id, started)

    # -- hits -----------------------------------------------------------------------------------------------
    def _replay(
        self, entry: CacheEntry, parsed: ParsedRequest, decision: RouteDecision, request_id: str, started: float
    ) -> Answer | StreamAnswer:
        headers = {
            "x-request-id": request_id,
            "x-gateway-route": "cache",
            "x-gateway-model": entry.model,
            "x-gateway-route-reason": decision.detail,
            CACHE_HEADER: "hit",
            CACHE_TIER_HEADER: entry.tier,
        }
        if parsed.chat.stream:
            return StreamAnswer(self._replay_stream(entry, parsed, decision, started), headers)
        body = completion_body(entry)
        self._account_hit(entry, parsed, decision, started, stream=False)
        return Answer(200, body, headers)

    async def _replay_stream(
        self, entry: CacheEntry, parsed: ParsedRequest, decision: RouteDecision, started: float
    ) -> AsyncIterator[bytes]:
        try:
            yield FinalChunk(b"".join(stream_events(entry, parsed.include_usage)))  # the whole answer: one write
        finally:
            self._account_hit(entry, parsed, decision, started, stream=True)

    def _account_hit(
        self, entry: CacheEntry, parsed: ParsedRequest, decision: RouteDecision, started: float, *, stream: bool
    ) -> None:
        self.dispatcher.account(
            tier="cache",
            served_by=entry.tier,
            requested_model=parsed.chat.model,
            answered_model=entry.model,
            usage=Usage(entry.prompt_tokens, entry.completion_tokens),
            status=200,
            reason=decision.reason,
            started=started,
            tier_seconds=0.0,
            stream=stream,
        )

    # -- misses and bypasses --------------------------------------------------------------------------------
    async def _dispatch(
        self,
        parsed: ParsedRequest,
        decision: RouteDecision,
        request_id: str,
        started: float,
        lead: Lead | None,
        result: str,
    ) -> Answer | StreamAnswer:
        """Answer through the dispatcher; a leader stores the complete answer (and always releases its lead)."""
        try:
            if parsed.chat.stream:
                observer = None
                if lead is not None:
                    fallback_model = self.tiers.model_for(decision.tier, parsed.chat.model)
                    observer = _Recording(self.cache, lead, StreamRecorder(fallback_model))
                answer: Answer | StreamAnswer = await self.dispatcher.stream(
                    parsed, decision, request_id, started, observer
                )
            else:
                answer = await self.dispatcher.complete(parsed, decision, request_id, started)
                if lead is not None:
                    tier = answer.headers.get("x-gateway-route", decision.tier)
                    model = answer.headers.get("x-gateway-model", parsed.chat.model)
                    entry = entry_from_completion(answer.body, tier, model) if answer.status == 200 else None
                    await self.cache.finish(lead, entry)
        except GatewayError as exc:
            exc.headers = {**exc.headers, CACHE_HEADER: result}
            if lead is not None:
                self.cache.abandon(lead)
            raise
        except BaseException:
            if lead is not None:
                self.cache.abandon(lead)
            raise
        answer.headers[CACHE_HEADER] = result
        return answer


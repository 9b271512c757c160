"""`CacheLayer`: a layer over any `Handler` that answers a routed exchange from the cache, or through the handler
and remembers the answer.

Response headers (built by the exchange): `x-gateway-cache: hit|miss|bypass` always (`semantic-hit` when the
semantic layer inside answered); a hit also says `x-gateway-route: cache`, `x-gateway-cache-tier: <tier that
first answered>` and `x-gateway-model: <model that answered>`. A request may say `x-gateway-cache: off` (no
lookup, no store), `exact` or `semantic` (it consents to a cached answer; see `gateway.cache.rules`).

Once an answer is stored under its key, `Exchange.on_stored` (set by the semantic layer) is awaited with it
when the client has the whole answer (the answer's `after_send`): indexing the prompt (its embedding, guard
signature and index row, ~0.2 ms of CPU) does not hold up the answer. A client that leaves before the last byte
costs that prompt's future semantic hits only.
The semantic layer inside (`InnerCache`) is asked for its hit on an exact miss before the collapse lock is taken:
a semantic hit costs no `SET NX` and no unlock script (on Redis, two round trips fewer).

An answer the decided tier did not give (a fallback after it failed) is not stored: the key names the decided
tier, and a fallback's answer (say a local "I'm sorry" during an upstream outage) must not outlive the outage.
Nor is a semantic hit's (a copy under a new key would outlive the original's TTL). Collapsed followers of such
a leader are released without an entry and ask on their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

from gateway.cache.entry import CacheEntry, completion_body, entry_from_completion, stream_events
from gateway.cache.keys import cache_key, tenant_namespace
from gateway.cache.recorder import StreamRecorder
from gateway.cache.rules import client_directives, is_cacheable, requested_cache, tenant_of_request
from gateway.cache.service import Lead, ResponseCache
from gateway.dispatch import Answer, Handler, StreamAnswer, then
from gateway.exchange import Exchange
from gateway.openai.wire import FinalChunk, Usage
from gateway.routing.decision import Tier


class _Recording:
    """The relay's stream observer for a leader: records the stream and hands the entry to the cache."""

    __slots__ = ("cache", "lead", "recorder", "stored")

    def __init__(self, cache: ResponseCache, lead: Lead, recorder: StreamRecorder) -> None:
        self.cache = cache
        self.lead = lead
        self.recorder = recorder
        self.stored = False
        """Whether the complete stream is stored under the lead's key (its `_Stored` then tells the layer inside)."""

    def feed(self, payload: bytes) -> None:
        self.recorder.feed(payload)

    async def completed(self, tier: Tier) -> None:
        self.stored = await self.cache.finish(self.lead, self.recorder.entry(tier))

    def abandoned(self) -> None:
        self.cache.abandon(self.lead)


class _Stored:
    """An answer's `after_send`: tell the layer inside (`Exchange.on_stored`) that the answer is stored under
    `key` (a stream: once its recording says so)."""

    __slots__ = ("ex", "key", "recording")

    def __init__(self, ex: Exchange, key: str, recording: _Recording | None = None) -> None:
        self.ex = ex
        self.key = key
        self.recording = recording

    async def __call__(self) -> None:
        on_stored = self.ex.on_stored
        if on_stored is not None and (self.recording is None or self.recording.stored):
            await on_stored(self.key)


class InnerCache(Protocol):
    """A cache layer inside this one (the semantic layer): started, closed and purged with it, and asked for its
    own hit on an exact miss before the collapse lock is taken."""

    inner: Handler
    """What it answers through on its own miss (the layer below it)."""

    async def answer(self, ex: Exchange) -> Answer | StreamAnswer | None:
        """Its hit for an exact miss (`ex.cache == "miss"`), or None (then `inner` answers)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def purge_tenant(self, tenant_ns: str) -> int: ...


class Purged(msgspec.Struct, frozen=True):
    """What a tenant purge removed: keys of the exact store (entries, and on Redis their locks), and semantic
    scopes (each a set of indexed prompts)."""

    keys: int
    semantic_scopes: int


class CacheLayer:
    """The response cache in front of `inner` (the dispatcher, or another layer)."""

    def __init__(
        self,
        inner: Handler,
        cache: ResponseCache,
        *,
        key_prefix: str,
        enabled: bool = True,
        tenant_header: str | None = None,
        cache_nondeterministic: bool = False,
        semantic: InnerCache | None = None,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.key_prefix = key_prefix
        self.enabled = enabled
        self.tenant_header = tenant_header.lower() if tenant_header else None
        self.cache_nondeterministic = cache_nondeterministic
        self.semantic = semantic

    async def start(self) -> None:
        await self.cache.start()
        if self.semantic is not None:
            await self.semantic.start()

    async def close(self) -> None:
        if self.semantic is not None:
            await self.semantic.close()
        await self.cache.close()

    async def purge_tenant(self, tenant: str) -> Purged:
        """Forget every answer of `tenant` (the cache tenant, `key/sub` for a subdivided one): its semantic
        scopes first, then every key of its namespace. Raises `StoreError` when the store fails."""
        namespace = tenant_namespace(tenant)
        scopes = await self.semantic.purge_tenant(namespace) if self.semantic is not None else 0
        keys = await self.cache.store.purge_prefix(f"{self.key_prefix}:{namespace}:")
        return Purged(keys=keys, semantic_scopes=scopes)

    def key_for(self, ex: Exchange) -> str:
        """The cache key of a routed request (its tenant, decided tier and that tier's model, and its body)."""
        assert ex.parsed is not None and ex.decision is not None
        tenant = tenant_of_request(ex.tenant, ex.headers, self.tenant_header)
        return cache_key(self.key_prefix, tenant, ex.decision.tier, ex.model, ex.parsed.raw)

    async def __call__(self, ex: Exchange) -> Answer | StreamAnswer:
        """Serve a hit, or answer through `inner` (collapsing identical misses) and store the complete answer."""
        assert ex.parsed is not None and ex.decision is not None
        directives = client_directives(ex.headers)
        requested = requested_cache(ex.headers, ex.parsed.cache_request)
        if not self.enabled or not is_cacheable(ex.parsed, ex.decision, self.cache_nondeterministic, requested):
            return await self._through(ex, None, "bypass")
        key = self.key_for(ex)
        store = not directives.no_store
        if directives.no_cache:
            return await self._through(ex, self.cache.store_only(key) if store else None, "bypass")
        entry = await self.cache.get(key)
        inner = self.inner
        if entry is None and self.semantic is not None:  # its hit needs no lead: asked before the lock is taken
            ex.cache = "miss"
            answer = await self.semantic.answer(ex)
            if answer is not None:
                self.cache.count_lookup("miss")
                return answer
            inner = self.semantic.inner  # looked up already
        if entry is None and store:
            found = await self.cache.lead_or_wait(key)
            if isinstance(found, CacheEntry):
                entry = found
            else:  # leading, or the awaited leader came back empty: answer (and store) on our own
                lead = found if found is not None else self.cache.store_only(key)
                return await self._through(ex, lead, "miss", inner)
        if entry is None:
            return await self._through(ex, None, "miss", inner)
        self.cache.count_lookup("hit")
        return replay(entry, ex, "hit")

    # -- misses and bypasses --------------------------------------------------------------------------------
    async def _through(
        self, ex: Exchange, lead: Lead | None, result: str, inner: Handler | None = None
    ) -> Answer | StreamAnswer:
        """Answer through `inner` (default: `self.inner`); a leader stores the complete answer (and always
        releases its lead)."""
        self.cache.count_lookup(result)
        ex.cache = result
        try:
            recording = None
            if lead is not None and ex.stream:
                ex.observer = recording = _Recording(self.cache, lead, StreamRecorder(ex.model))
            assert ex.decision is not None
            decided = ex.decision.tier
            answer = await (inner or self.inner)(ex)
            if lead is not None:
                # not this key's tier's answer (a fallback, a semantic hit, re-routed by the limits): never stored
                if ex.fallback is not None or ex.tier == "cache" or ex.decision.tier != decided:
                    ex.observer = None  # nothing to record (the relay reads it when the stream starts)
                    self.cache.abandon(lead)
                elif isinstance(answer, Answer):
                    entry = entry_from_completion(answer.body, ex.tier, ex.model) if answer.status == 200 else None
                    if await self.cache.finish(lead, entry) and ex.on_stored is not None:
                        answer.after_send = then(_Stored(ex, lead.key), answer.after_send)
                elif recording is not None and ex.on_stored is not None:
                    answer.after_send = then(_Stored(ex, lead.key, recording), answer.after_send)
        except BaseException:
            if lead is not None:
                self.cache.abandon(lead)
            raise
        return answer


def replay(entry: CacheEntry, ex: Exchange, outcome: str) -> Answer | StreamAnswer:
    """Answer `ex` with a cached entry (`outcome`: "hit", or "semantic-hit"), as a stream when it streams."""
    ex.cache = outcome
    ex.tier = "cache"
    ex.served_by = entry.tier
    ex.cache_tier = entry.tier
    ex.model = ex.answered_model = entry.model
    ex.usage = Usage(entry.prompt_tokens, entry.completion_tokens)
    ex.tier_seconds = 0.0
    headers = ex.response_headers()
    if ex.stream:
        return StreamAnswer(_replay_stream(entry, ex), headers)
    return Answer(200, completion_body(entry), headers)


async def _replay_stream(entry: CacheEntry, ex: Exchange) -> AsyncIterator[bytes]:
    assert ex.parsed is not None
    try:
        answer = FinalChunk(b"".join(stream_events(entry, ex.parsed.include_usage)))  # the whole answer: one write
        ex.done()  # recorded before the write: the writer stops after it
        yield answer
    finally:
        ex.done()

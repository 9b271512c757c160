"""`SemanticLayer`: the semantic cache in the request path, inside the exact `CacheLayer`, around the dispatcher.

It acts only on an exact-cache miss (`Exchange.cache == "miss"`) of a request that wants it (`wants_semantic`).
A hit replays the cached answer of a paraphrase in the same scope (`x-gateway-cache: semantic-hit`,
`x-gateway-cache-similarity: 0.9312`, `x-gateway-route: cache`), as a stream when the request streams. On a
miss the request goes on to `inner`; once the exact layer stored its answer and the client has it (the answer's
`after_send`), `Exchange.on_stored` indexes the prompt under that entry's key (reusing the miss's embedding) and
queues the index write: the answer waits for neither. Every failure is a miss (see `SemanticCache`).
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.cache.entry import EntryDecodeError, decode_entry
from gateway.cache.flow import replay
from gateway.cache.rules import requested_cache, tenant_of_request
from gateway.cache.semantic.cache import SemanticCache, SemanticHit, SemanticMiss
from gateway.cache.semantic.scope import SemanticScope, scope_of_request
from gateway.dispatch import Answer, Handler, StreamAnswer
from gateway.exchange import SEMANTIC_HIT, Exchange


def wants_semantic(ex: Exchange, default: bool, tenants: Collection[str]) -> bool:
    """Whether an exact-cache miss gets a semantic lookup: a restriction (policy `cache: exact`, request
    `x-gateway-cache: exact`) wins over an opt-in (request `semantic`, policy `cache: semantic`, a listed tenant,
    `default`)."""
    assert ex.decision is not None and ex.parsed is not None
    kind = ex.decision.cache_kind
    requested = requested_cache(ex.headers, ex.parsed.cache_request)
    if kind == "exact" or requested == "exact":
        return False
    return requested == "semantic" or kind == "semantic" or ex.tenant in tenants or default


class _Indexing:
    """`Exchange.on_stored` of a semantic miss: index the prompt under the key its answer was stored at."""

    __slots__ = ("semantic", "scope", "text", "miss", "ttl_ms")

    def __init__(self, semantic: SemanticCache, scope: SemanticScope, text: str, miss: SemanticMiss, ttl_ms: int):
        self.semantic = semantic
        self.scope = scope
        self.text = text
        self.miss = miss
        self.ttl_ms = ttl_ms

    async def __call__(self, key: str) -> None:
        self.semantic.store_soon(self.scope, self.text, key, self.ttl_ms, self.miss)  # the answer does not wait


class SemanticLayer:
    """Paraphrase hits in front of `inner` (the dispatcher); built by `gateway.cache.build_cache_layer`."""

    def __init__(
        self,
        inner: Handler,
        semantic: SemanticCache,
        *,
        ttl_ms: int,
        tenant_header: str | None = None,
        default: bool = False,
        tenants: Collection[str] = (),
    ) -> None:
        self.inner = inner
        self.semantic = semantic
        self.ttl_ms = ttl_ms
        self.tenant_header = tenant_header.lower() if tenant_header else None
        self.default = default
        self.tenants = frozenset(tenants)

    async def start(self) -> None:
        await self.semantic.start()

    async def close(self) -> None:
        await self.semantic.close()

    async def purge_tenant(self, tenant_ns: str) -> int:
        """Forget the tenant's indexed prompts (and every entry hits read lately); the number of scopes dropped."""
        self.semantic.recent.clear()
        dropped = await self.semantic.index.purge_tenant(tenant_ns)
        self.semantic.recent.clear()  # and what a lookup read meanwhile (bounded by `recent`'s reuse otherwise)
        return dropped

    async def __call__(self, ex: Exchange) -> Answer | StreamAnswer:
        found = await self.answer(ex)
        return found if found is not None else await self.inner(ex)

    async def answer(self, ex: Exchange) -> Answer | StreamAnswer | None:
        """A semantic hit's replay for an exact-cache miss (`ex.cache == "miss"`) that wants a lookup, else None
        (then `ex.on_stored` indexes the prompt once its answer is stored). The exact layer calls this itself,
        before it takes the collapse lock (a hit then costs no lock round trips), and then goes on to `inner`."""
        assert ex.parsed is not None and ex.decision is not None
        if ex.cache != "miss" or not wants_semantic(ex, self.default, self.tenants):
            return None
        tenant = tenant_of_request(ex.tenant, ex.headers, self.tenant_header)
        scoped = scope_of_request(tenant, ex.decision.tier, ex.model, ex.parsed.raw)
        if isinstance(scoped, str):  # not a text prompt: counted as a `scope` miss
            await self.semantic.lookup(None, "")
            return None
        scope, text = scoped
        found = await self.semantic.lookup(scope, text)
        if isinstance(found, SemanticHit):
            try:
                entry = decode_entry(found.value)
            except EntryDecodeError:
                entry = None
            if entry is not None:
                ex.cache_similarity = found.similarity
                return replay(entry, ex, SEMANTIC_HIT)
        elif found.vector is not None or found.signature is not None:  # index the prompt once its answer is stored
            ex.on_stored = _Indexing(self.semantic, scope, text, found, self.ttl_ms)
        return None

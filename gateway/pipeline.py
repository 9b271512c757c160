"""The `Pipeline`: the request path of one running gateway, route → cache → dispatch, and its components.

`gateway.build.build_gateway(settings)` builds one; the handlers in `gateway.api.routes` call into it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from gateway.accounting import Accounting
from gateway.auth import KeyChecker
from gateway.cache.flow import CacheLayer
from gateway.dispatch import Answer, StreamAnswer, Tiers, then
from gateway.embedding.shared import SharedEmbedder
from gateway.errors import GatewayError
from gateway.exchange import CLIENT_CLOSED_REQUEST, Exchange
from gateway.health import HealthCheck, build_health
from gateway.metrics import GatewayMetrics
from gateway.routing.decision import RouteContext, Router
from gateway.settings import Settings
from gateway.tiers.base import NO_FEATURES

if TYPE_CHECKING:
    from gateway.learning.service import Learning
    from gateway.limits.limiter import Limiter


class Pipeline:
    """A request travels down one `Exchange`: routed here, then through the cache layer to the dispatcher; its
    outcome is recorded by `accounting` when the exchange is done."""

    def __init__(
        self,
        settings: Settings,
        tiers: Tiers,
        router: Router,
        cache: CacheLayer,
        keys: KeyChecker,
        metrics: GatewayMetrics,
        accounting: Accounting,
        health: HealthCheck | None = None,
        learning: Learning | None = None,
        embedder: SharedEmbedder | None = None,
        limits: Limiter | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder or SharedEmbedder()
        """The one embedder of this gateway (loaded on first use): the semantic cache's and /v1/embeddings'."""
        self.learning = learning
        self.limits = limits
        """Gateway keys, rate limits and budgets (None when `limits.enabled` is off)."""
        self.tiers = tiers
        self.router = router
        self.cache = cache
        self.keys = keys
        self.metrics = metrics
        self.accounting = accounting
        self.health = health or build_health(tiers.local, tiers.upstream, cache.cache.store, metrics.cache_backend_up)
        self._models_body: bytes | None = None
        self._slm_features = {name: backend.features for name, backend in tiers.slm.items()}
        self._slm_aliases = {alias: name for name in tiers.slm for alias in (tiers.model_for(name, name), name)}

    async def start(self) -> None:
        """Start the key store and limits, the tiers (loads the local model) and the response cache."""
        if self.limits is not None:  # keys are loaded before the first request
            await self.limits.start()
        await self.cache.start()
        for backend in self.tiers.backends():
            await backend.start()
        if self.learning is not None:
            await self.learning.start()

    async def stop(self) -> None:
        if self.learning is not None:
            await self.learning.stop()
        for backend in self.tiers.backends():
            await backend.close()
        await self.cache.close()
        if self.limits is not None:
            await self.limits.close()

    # -- the request path -----------------------------------------------------------------------------------
    def exchange(self, request_id: str, headers: Mapping[str, str], started: float) -> Exchange:
        """A new exchange for a request received at `started` (`time.perf_counter()`), recorded when done."""
        return Exchange(request_id, headers, started, self.accounting.record)

    def refuse(self, ex: Exchange, exc: GatewayError) -> None:
        """The request ends with `exc` as its answer (bad key, malformed body, refused by a layer)."""
        ex.refuse(exc)
        ex.done()

    def route(self, ex: Exchange) -> None:
        """Ask the router; the decision, and the model of the decided tier, go into the exchange."""
        assert ex.parsed is not None
        tiers = self.tiers
        chat = ex.parsed.chat
        if tiers.local is not None and chat.model == tiers.local_model_name:
            chat.model = "local"  # the local model's own name pins it like its alias
        ctx = RouteContext(
            request=ex.parsed,
            headers=ex.headers,
            has_upstream=tiers.upstream is not None,
            has_local=tiers.local is not None,
            local_features=getattr(tiers.local, "features", NO_FEATURES),
            slm_tiers=self._slm_features,
            slm_aliases=self._slm_aliases,
        )
        try:
            decision = self.router.decide(ctx)
        except GatewayError as exc:
            ex.reason = getattr(exc, "reason", "rejected")
            self.accounting.rejected(ex)
            raise
        ex.routed(decision, tiers.model_for(decision.tier, ex.parsed.chat.model))
        self.accounting.routed(ex)

    async def chat(self, ex: Exchange) -> Answer | StreamAnswer:
        """Route an accepted exchange and answer it; a complete answer is recorded here, a stream when it ends."""
        self.decide(ex)
        return await self.answer(ex)

    def decide(self, ex: Exchange) -> None:
        """Route an accepted exchange (the first half of `chat`); a refusal is recorded here and raised."""
        try:
            self.route(ex)
        except GatewayError as exc:
            self.refuse(ex, exc)
            raise

    @staticmethod
    def frees_a_slot(ex: Exchange) -> bool:
        """Whether cancelling this routed exchange's work frees something: a local generation slot (the local
        tier, decided or as the fallback). An upstream call is not worth watching its client for."""
        decision = ex.decision
        return decision is not None and (decision.tier == "local" or decision.fallback == "local")

    async def answer(self, ex: Exchange) -> Answer | StreamAnswer:
        """Answer a routed exchange (the second half of `chat`)."""
        try:
            answer = await self.cache(ex)
            if self.limits is not None and ex.tier == "cache":  # a hit: the key's rate headers, as on every answer
                answer.headers.update(await self.limits.hit_headers(ex))
        except GatewayError as exc:
            self.refuse(ex, exc)
            raise
        except asyncio.CancelledError:  # the client left before a complete answer was ready
            ex.status = CLIENT_CLOSED_REQUEST
            ex.done()
            raise
        if self.learning is not None:  # shadow judging and feedback see the answer once the client has it
            answer.after_send = then(answer.after_send, self.learning.attach(answer, ex))
        if isinstance(answer, Answer):
            ex.done()
        return answer

    def model_ids(self) -> list[str]:
        """What clients may ask for in `model`."""
        ids = ["auto"]
        if self.tiers.local is not None:
            ids.append("local")
            if self.tiers.local_model_name != "local":
                ids.append(self.tiers.local_model_name)
        for name in self.tiers.slm:
            ids += [name] if self.tiers.model_for(name, name) == name else [name, self.tiers.model_for(name, name)]
        if self.tiers.upstream is not None:
            ids += ["upstream", self.tiers.upstream_default_model]
        return ids

    def models_body(self) -> bytes:
        if self._models_body is None:
            created = int(time.time())
            data = [
                {"id": mid, "object": "model", "created": created, "owned_by": "slm-gateway"}
                for mid in self.model_ids()
            ]
            self._models_body = msgspec.json.encode({"object": "list", "data": data})
        return self._models_body

    async def readiness(self) -> tuple[bool, bytes]:
        return await self.health.check()

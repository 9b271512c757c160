"""The `Gateway`: every component of one running gateway, wired together by `gateway.app.create_app`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from gateway.api.schemas import ParsedRequest
from gateway.auth import KeyChecker
from gateway.dispatch import Answer, ChatDispatcher, StreamAnswer, Tiers
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from gateway.routing.decision import RouteDecision
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.cache import CachedChat
    from gateway.learning.service import Learning


class Gateway:
    """Holds the components a request needs; the handlers in `gateway.api.routes` call into it."""

    def __init__(
        self,
        settings: Settings,
        tiers: Tiers,
        dispatcher: ChatDispatcher,
        keys: KeyChecker,
        metrics: GatewayMetrics,
        cache: CachedChat | None = None,
        learning: Learning | None = None,
    ) -> None:
        self.settings = settings
        self.learning = learning
        self.cache = cache
        self.tiers = tiers
        self.dispatcher = dispatcher
        self.keys = keys
        self.metrics = metrics
        self._models_body: bytes | None = None

    async def start(self) -> None:
        """Start the tiers (loads the local model) and the response cache."""
        if self.cache is not None:
            await self.cache.start()
        for backend in (self.tiers.local, self.tiers.upstream):
            if backend is not None:
                await backend.start()
        if self.learning is not None:
            await self.learning.start()

    async def stop(self) -> None:
        if self.learning is not None:
            await self.learning.stop()
        for backend in (self.tiers.local, self.tiers.upstream):
            if backend is not None:
                await backend.close()
        if self.cache is not None:
            await self.cache.close()

    async def handle_chat(
        self, parsed: ParsedRequest, headers: Mapping[str, str], request_id: str, tenant: str, started: float
    ) -> Answer | StreamAnswer:
        """Route one chat request and answer it from the chosen tier; count the request if that fails."""
        decision: RouteDecision | None = None
        try:
            decision = self.dispatcher.route(parsed, headers)
            answer: Answer | StreamAnswer
            if self.cache is not None:
                answer = await self.cache.answer(parsed, decision, headers, request_id, tenant, started)
            elif parsed.chat.stream:
                answer = await self.dispatcher.stream(parsed, decision, request_id, started)
            else:
                answer = await self.dispatcher.complete(parsed, decision, request_id, started)
            if self.learning is not None:
                answer.after_send = self.learning.attach(answer, parsed, headers, decision, request_id, tenant)
            return answer
        except GatewayError as exc:
            if decision is None:
                self.dispatcher.account_error(exc, getattr(exc, "reason", "rejected"), "none")
            else:
                self.dispatcher.account_error(exc, decision.reason, decision.tier)
            raise

    def count_invalid(self, exc: GatewayError) -> None:
        """Count a request refused before routing (bad key, malformed body)."""
        self.dispatcher.account_error(exc, "invalid", "none")

    @staticmethod
    def is_stream(answer: Answer | StreamAnswer) -> bool:
        return isinstance(answer, StreamAnswer)

    def model_ids(self) -> list[str]:
        """What clients may ask for in `model`."""
        ids = ["auto"]
        if self.tiers.local is not None:
            ids.append("local")
            if self.tiers.local_model_name != "local":
                ids.append(self.tiers.local_model_name)
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
        """Ready when the local model is loaded (if any) and the upstream answers (if configured)."""
        checks: dict[str, str] = {}
        if self.tiers.local is not None:
            checks["local"] = "ready" if await self.tiers.local.ready() else "loading"
        if self.tiers.upstream is not None:
            checks["upstream"] = "reachable" if await self.tiers.upstream.ready() else "unreachable"
        else:
            checks["upstream"] = "not configured"
        ready = checks.get("local", "ready") == "ready" and checks["upstream"] != "unreachable"
        return ready, msgspec.json.encode({"status": "ready" if ready else "not ready", "checks": checks})

"""Which requests get a client-disconnect watcher (one asyncio task): only those whose work a cancellation frees,
i.e. a local generation (the local tier decided, or as the fallback). In-process app, `FakeBackend` tiers."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.api.disconnect import WATCHER_NAME
from gateway.devtools.fake_backend import FakeBackend
from gateway.openai.request import ParsedRequest
from gateway.routing.decision import RouteContext, RouteDecision
from gateway.tiers.base import Completion

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello."}]


class NotingWatcher(FakeBackend):
    """A `FakeBackend` that notes, each time it answers, whether a disconnect watcher is running."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.watched: list[bool] = []

    async def complete(self, request: ParsedRequest, model: str, request_id: str | None = None) -> Completion:
        self.watched.append(any(task.get_name() == WATCHER_NAME for task in asyncio.all_tasks()))
        return await super().complete(request, model, request_id)


class UpstreamFallingBackToLocal:
    def decide(self, ctx: RouteContext) -> RouteDecision:
        return RouteDecision(tier="upstream", reason="up-first", detail="test", fallback="local")


async def test_only_local_work_is_watched(app_factory: Any) -> None:
    local, upstream = NotingWatcher("local"), NotingWatcher("upstream")
    gw = await app_factory(local=local, upstream=upstream)
    for model in ("local", "upstream", "gpt-4o"):
        response = await gw.client.post(CHAT, json={"model": model, "messages": HELLO})
        assert response.status_code == 200
    assert local.watched == [True]
    assert upstream.watched == [False, False]  # pinned upstream, and a model name the static router sends upstream


async def test_a_local_fallback_is_watched(app_factory: Any) -> None:
    local, upstream = NotingWatcher("local"), NotingWatcher("upstream")
    gw = await app_factory(local=local, upstream=upstream, router=UpstreamFallingBackToLocal())
    response = await gw.client.post(CHAT, json={"model": "gpt-4o", "messages": HELLO})
    assert response.status_code == 200 and response.headers["x-gateway-route"] == "upstream"
    assert (upstream.watched, local.watched) == ([True], [])  # the watcher is there in case the fallback runs

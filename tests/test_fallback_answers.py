"""A fallback answer says so in `x-gateway-route-reason`, and is never cached (in-process, `FakeBackend` tiers)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.devtools.fake_backend import FakeBackend
from gateway.errors import RateLimited, TierUnavailable, UpstreamStatusError
from gateway.routing.decision import RouteContext, RouteDecision
from tests.conftest import InProcessGateway

CHAT = "/v1/chat/completions"
QUEUE_FULL = RateLimited("The local model is busy.", code="local_queue_full")


class PinLocalRule:
    """Local first with an upstream fallback, as a policy rule 'pin-local' with `fallback: both` decides."""

    def decide(self, ctx: RouteContext) -> RouteDecision:
        return RouteDecision(tier="local", reason="pin-local", detail="rule 'pin-local'", fallback="upstream")


class UpstreamFirstRule:
    def decide(self, ctx: RouteContext) -> RouteDecision:
        return RouteDecision(tier="upstream", reason="hard", detail="rule 'hard'", fallback="local")


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}],
            "temperature": 0, **extra}


def store_len(gw: InProcessGateway) -> int:
    return len(gw.pipeline.cache.cache.store)  # type: ignore[arg-type]


async def test_route_reason_names_the_failure_and_the_fallback(app_factory: Any) -> None:
    gw = await app_factory(local=FakeBackend("local", error=QUEUE_FULL), upstream=FakeBackend(reply="from upstream"),
                           router=PinLocalRule())
    expected = "rule 'pin-local'; local failed (local_queue_full): fell back to upstream"
    plain = await gw.client.post(CHAT, json=body())
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"] == "from upstream"
    assert plain.headers["x-gateway-route-reason"] == expected
    assert plain.headers["x-gateway-route"] == "upstream" and plain.headers["x-gateway-cache"] == "miss"
    streamed = await gw.client.post(CHAT, json=body(stream=True))
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    assert streamed.headers["x-gateway-route-reason"] == expected
    assert streamed.headers["x-gateway-route"] == "upstream"


async def test_route_reason_of_an_upstream_failure_names_its_kind_or_status(app_factory: Any) -> None:
    upstream = FakeBackend(error=TierUnavailable("down", kind="timeout"))
    gw = await app_factory(local=FakeBackend("local", reply="from local"), upstream=upstream, router=UpstreamFirstRule())
    response = await gw.client.post(CHAT, json=body())
    assert response.headers["x-gateway-route-reason"] == "rule 'hard'; upstream failed (timeout): fell back to local"
    upstream.error = UpstreamStatusError(503, b'{"error":{}}', "overloaded")
    response = await gw.client.post(CHAT, json=body(stream=True))
    assert response.headers["x-gateway-route-reason"] == "rule 'hard'; upstream failed (status_503): fell back to local"
    upstream.error = None  # healthy again: the plain reason
    response = await gw.client.post(CHAT, json=body(seed=1))
    assert response.headers["x-gateway-route"] == "upstream"
    assert response.headers["x-gateway-route-reason"] == "rule 'hard'"


async def test_a_fallback_answer_is_not_cached(app_factory: Any) -> None:
    local = FakeBackend("local", error=QUEUE_FULL, reply="from local")
    upstream = FakeBackend(reply="from upstream")
    gw = await app_factory(local=local, upstream=upstream, router=PinLocalRule())
    for stream in (False, True):
        local.error = QUEUE_FULL
        first = await gw.client.post(CHAT, json=body(stream=stream))
        assert first.headers["x-gateway-cache"] == "miss" and first.headers["x-gateway-route"] == "upstream"
        assert store_len(gw) == 0
        local.error = None  # the outage is over: the same request is a miss, answered (and stored) by local
        again = await gw.client.post(CHAT, json=body(stream=stream))
        assert again.headers["x-gateway-cache"] == "miss" and again.headers["x-gateway-route"] == "local"
        assert again.headers["x-gateway-route-reason"] == "rule 'pin-local'"
        assert store_len(gw) == 1
        hit = await gw.client.post(CHAT, json=body(stream=stream))
        assert hit.headers["x-gateway-cache"] == "hit" and hit.headers["x-gateway-cache-tier"] == "local"
        await gw.pipeline.cache.cache.store.close()  # empty the in-process store for the streamed round
        assert store_len(gw) == 0
    assert len(upstream.calls) == 2 and len(local.calls) == 4
    assert gw.metric("slm_gateway_cache_lookups_total", result="miss") == 4
    assert gw.metric("slm_gateway_cache_lookups_total", result="hit") == 2


async def test_collapsed_followers_of_a_fallback_leader_get_no_entry(app_factory: Any) -> None:
    local = FakeBackend("local", error=QUEUE_FULL, delay=0.05)
    upstream = FakeBackend(reply="from upstream")
    gw = await app_factory(local=local, upstream=upstream, router=PinLocalRule())
    answers = await asyncio.gather(*(gw.client.post(CHAT, json=body()) for _ in range(3)))
    assert [a.headers["x-gateway-cache"] for a in answers] == ["miss", "miss", "miss"]
    assert [a.json()["choices"][0]["message"]["content"] for a in answers] == ["from upstream"] * 3
    assert len(upstream.calls) == 3 and store_len(gw) == 0  # each asked on its own; nothing stored
    assert len(gw.pipeline.cache.cache._flights) == 0

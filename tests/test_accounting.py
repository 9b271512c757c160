"""Accounting: exact request counts, tokens, cost and savings dollars from a known cost table (in-process app)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.costs import CostModel
from gateway.devtools.fake_backend import FakeBackend
from gateway.openai.wire import Usage
from gateway.routing.decision import RouteContext, RouteDecision
from gateway.routing.policy_router import PolicyRejected
from gateway.settings import CostSettings, UpstreamPrice

CHAT = "/v1/chat/completions"
# per million tokens: gpt-4o $2.50 in / $10 out, gpt-4o-mini $0.15 / $0.60; local $0.10 per million tokens
COSTS = {
    "local_per_million_tokens": 0.10,
    "local_per_hour": 0.0,  # time-priced local cost is checked with fixed busy seconds below
    "upstream": {
        "gpt-4o": {"input_per_million": 2.5, "output_per_million": 10.0},
        "gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6},
    },
}
CONFIG = {"costs": COSTS}
REPLY = "Paris is the capital of France."  # 6 completion tokens from FakeBackend; prompt 12


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Capital of France?"}], **extra}


def dollars(value: float) -> Any:
    return pytest.approx(value, rel=1e-12, abs=1e-18)


async def test_upstream_answer_costs_its_model_price_and_saves_nothing(app_factory: Any) -> None:
    gw = await app_factory(upstream=FakeBackend(reply=REPLY, prompt_tokens=12), config=CONFIG)
    assert (await gw.client.post(CHAT, json=body("gpt-4o"))).status_code == 200
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="200", reason="default") == 1
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="upstream", model="gpt-4o") == 12
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="gpt-4o") == 6
    assert gw.metric("slm_gateway_cost_dollars_total", tier="upstream") == dollars((12 * 2.5 + 6 * 10.0) / 1e6)
    registry = gw.pipeline.metrics.registry
    assert registry.get_sample_value("slm_gateway_savings_dollars_total", {"tier": "upstream"}) is None


async def test_local_answer_costs_its_tokens_and_saves_the_reference_price(app_factory: Any) -> None:
    local = FakeBackend("local", reply=REPLY, prompt_tokens=12, model="qwen-local")
    gw = await app_factory(local=local, upstream=FakeBackend(), config=CONFIG)
    response = await gw.client.post(CHAT, json=body("local"))
    assert response.status_code == 200 and response.headers["x-gateway-model"] == "qwen-local"
    assert gw.metric("slm_gateway_requests_total", tier="local", status="200", reason="pinned") == 1
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="local", model="qwen-local") == 12
    assert gw.metric("slm_gateway_completion_tokens_total", tier="local", model="qwen-local") == 6
    cost = 18 * 0.10 / 1e6
    reference = (12 * 0.15 + 6 * 0.6) / 1e6  # "local" is not priced: the upstream default is the reference
    assert gw.metric("slm_gateway_cost_dollars_total", tier="local") == dollars(cost)
    assert gw.metric("slm_gateway_savings_dollars_total", tier="local") == dollars(reference - cost)


async def test_cache_hit_costs_nothing_and_saves_the_requested_models_price(app_factory: Any) -> None:
    upstream = FakeBackend(reply=REPLY, prompt_tokens=12)
    gw = await app_factory(upstream=upstream, config=CONFIG)
    for expected in ("miss", "hit", "hit"):
        response = await gw.client.post(CHAT, json=body("gpt-4o", temperature=0))
        assert response.headers["x-gateway-cache"] == expected
    hit = response.headers
    assert hit["x-gateway-route"] == "cache" and hit["x-gateway-cache-tier"] == "upstream"
    assert hit["x-gateway-model"] == "gpt-4o" and len(upstream.calls) == 1
    assert gw.metric("slm_gateway_requests_total", tier="cache", status="200", reason="default") == 2
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="cache", model="gpt-4o") == 24
    assert gw.metric("slm_gateway_completion_tokens_total", tier="cache", model="gpt-4o") == 12
    assert gw.metric("slm_gateway_cost_dollars_total", tier="cache") == 0.0
    assert gw.metric("slm_gateway_savings_dollars_total", tier="cache") == dollars(2 * (12 * 2.5 + 6 * 10.0) / 1e6)
    assert gw.metric("slm_gateway_cost_dollars_total", tier="upstream") == dollars((12 * 2.5 + 6 * 10.0) / 1e6)
    assert gw.metric("slm_gateway_cache_lookups_total", result="hit") == 2


async def test_refused_requests_are_counted_once_with_their_reason(app_factory: Any) -> None:
    gw = await app_factory(upstream=FakeBackend(), config={**CONFIG, "api_keys": ["sk-right"]})
    assert (await gw.client.post(CHAT, json=body("gpt-4o"))).status_code == 401
    bad = await gw.client.post(CHAT, content=b"{", headers={"authorization": "Bearer sk-right"})
    assert bad.status_code == 400
    assert gw.metric("slm_gateway_requests_total", tier="none", status="401", reason="invalid") == 1
    assert gw.metric("slm_gateway_requests_total", tier="none", status="400", reason="invalid") == 1


class RejectingRouter:
    """Any router that refuses: rejections are counted whatever the router is."""

    def decide(self, ctx: RouteContext) -> RouteDecision:
        raise PolicyRejected("No.", status=403, code="policy_rejected", reason="no_secrets", detail="rule no_secrets")


async def test_rejections_are_counted_for_any_router(app_factory: Any) -> None:
    gw = await app_factory(upstream=FakeBackend(), router=RejectingRouter())
    response = await gw.client.post(CHAT, json=body("gpt-4o"))
    assert response.status_code == 403 and response.headers["x-gateway-route"] == "rejected"
    assert gw.metric("slm_gateway_routing_decisions_total", tier="rejected", reason="no_secrets") == 1
    assert gw.metric("slm_gateway_requests_total", tier="none", status="403", reason="no_secrets") == 1


def test_charge_owns_cost_and_savings() -> None:
    prices = {"gpt-4o": UpstreamPrice(2.5, 10.0), "gpt-4o-mini": UpstreamPrice(0.15, 0.6)}
    costs = CostModel(CostSettings(local_per_million_tokens=0.1, local_per_hour=3.6, upstream=prices), "gpt-4o-mini")
    usage = Usage(1000, 500)
    local_cost = 1500 * 0.1 / 1e6 + 2.0 * 0.001  # 2 busy seconds at $3.60 an hour
    assert costs.charge("local", "gpt-4o", "qwen", usage, 2.0) == (dollars(local_cost), dollars(0.0075 - local_cost))
    assert costs.charge("upstream", "gpt-4o", "gpt-4o-2024-08-06", usage, 2.0) == (dollars(0.0075), None)
    assert costs.charge("cache", "auto", "gpt-4o", usage, 0.0) == (0.0, dollars((1000 * 0.15 + 500 * 0.6) / 1e6))
    assert costs.charge("local", "unpriced", "qwen", Usage(10, 10), 3600.0)[1] == 0.0  # never below zero


async def test_model_labels_are_bounded_to_known_and_first_seen_names(app_factory: Any) -> None:
    """100 client-chosen model names (the upstream echoes each): the first 50 keep a series, the rest are "other";
    known names (cost table, upstream default, local model) always keep theirs."""
    gw = await app_factory(upstream=FakeBackend(reply=REPLY, prompt_tokens=12), config=CONFIG)
    for n in range(100):
        assert (await gw.client.post(CHAT, json=body(f"m-{n:03d}"))).status_code == 200
    assert (await gw.client.post(CHAT, json=body("gpt-4o"))).status_code == 200
    registry = gw.pipeline.metrics.registry
    prompt = {s.labels["model"]: s.value for m in registry.collect() if m.name == "slm_gateway_prompt_tokens"
              for s in m.samples if s.name == "slm_gateway_prompt_tokens_total"}
    assert prompt == {**{f"m-{n:03d}": 12.0 for n in range(50)}, "other": 50 * 12.0, "gpt-4o": 12.0}
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="other") == 50 * 6
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="m-050") == 0
    # the price is still the answering model's own (the label is bounded, not the cost)
    assert gw.metric("slm_gateway_cost_dollars_total", tier="upstream") == dollars(
        100 * (12 * 0.15 + 6 * 0.6) / 1e6 + (12 * 2.5 + 6 * 10.0) / 1e6)

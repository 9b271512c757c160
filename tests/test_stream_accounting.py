"""Streams are accounted like complete answers (issue 10 item 1): a finished stream is a 200 with its tokens, cost
and savings; only a stream the client really left is a 499, with the tokens it was sent and their cost."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.devtools.fake_backend import FakeBackend
from gateway.dispatch import StreamAnswer
from gateway.openai.request import parse_chat_request
from tests.conftest import InProcessGateway

CHAT = "/v1/chat/completions"
CONFIG = {
    "costs": {
        "local_per_million_tokens": 0.10,
        "local_per_hour": 0.0,
        "upstream": {
            "gpt-4o": {"input_per_million": 2.5, "output_per_million": 10.0},
            "gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6},
        },
    }
}
REPLY = "Paris is the capital of France."  # FakeBackend: 6 completion tokens, one chunk each; prompt 12


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Capital of France?"}], "stream": True, **extra}


def dollars(value: float) -> Any:
    return pytest.approx(value, rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_finished_upstream_stream_is_a_200_with_tokens_and_cost(app_factory: Any, include_usage: bool) -> None:
    gw: InProcessGateway = await app_factory(upstream=FakeBackend(reply=REPLY, prompt_tokens=12), config=CONFIG)
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    response = await gw.client.post(CHAT, json=body("gpt-4o", **options))
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="200", reason="default") == 1
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="499", reason="default") == 0
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="upstream", model="gpt-4o") == 12
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="gpt-4o") == 6
    assert gw.metric("slm_gateway_cost_dollars_total", tier="upstream") == dollars((12 * 2.5 + 6 * 10.0) / 1e6)
    assert gw.metric("slm_gateway_request_duration_seconds_count", tier="upstream", stream="true") == 1


async def test_a_finished_local_stream_counts_its_cost_and_savings(app_factory: Any) -> None:
    local = FakeBackend("local", reply=REPLY, prompt_tokens=12, model="qwen-local")
    gw = await app_factory(local=local, upstream=FakeBackend(), config=CONFIG)
    response = await gw.client.post(CHAT, json=body("local"))
    assert response.status_code == 200 and response.headers["x-gateway-route"] == "local"
    assert gw.metric("slm_gateway_requests_total", tier="local", status="200", reason="pinned") == 1
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="local", model="qwen-local") == 12
    assert gw.metric("slm_gateway_completion_tokens_total", tier="local", model="qwen-local") == 6
    cost = 18 * 0.10 / 1e6
    assert gw.metric("slm_gateway_cost_dollars_total", tier="local") == dollars(cost)
    assert gw.metric("slm_gateway_savings_dollars_total", tier="local") == dollars((12 * 0.15 + 6 * 0.6) / 1e6 - cost)


async def test_a_streamed_cache_hit_is_a_200_with_its_savings(app_factory: Any) -> None:
    gw = await app_factory(upstream=FakeBackend(reply=REPLY, prompt_tokens=12), config=CONFIG)
    for expected in ("miss", "hit"):
        response = await gw.client.post(CHAT, json=body("gpt-4o", temperature=0))
        assert response.headers["x-gateway-cache"] == expected and response.text.endswith("data: [DONE]\n\n")
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="200", reason="default") == 1
    assert gw.metric("slm_gateway_requests_total", tier="cache", status="200", reason="default") == 1
    assert gw.metric("slm_gateway_savings_dollars_total", tier="cache") == dollars((12 * 2.5 + 6 * 10.0) / 1e6)


async def test_a_stream_the_client_leaves_is_a_499_with_what_it_was_sent(app_factory: Any) -> None:
    gw = await app_factory(upstream=FakeBackend(reply=REPLY, prompt_tokens=12), config=CONFIG)
    pipeline = gw.pipeline
    exchange = pipeline.exchange("rid", {}, 0.0)
    exchange.accept("t-a", parse_chat_request(msgspec.json.encode(body("gpt-4o"))))
    answer = await pipeline.chat(exchange)
    assert isinstance(answer, StreamAnswer)
    got = [await anext(answer.chunks) for _ in range(3)]  # the role chunk, then "Paris", " is"
    assert b'"content":" is"' in got[-1]
    await answer.chunks.aclose()  # what the server does when the client disconnects
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="499", reason="default") == 1
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="200", reason="default") == 0
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="upstream", model="gpt-4o") == 0
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="gpt-4o") == 2
    assert gw.metric("slm_gateway_cost_dollars_total", tier="upstream") == dollars(2 * 10.0 / 1e6)

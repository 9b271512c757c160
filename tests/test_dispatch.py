"""The request middle in-process (route → cache → dispatch → relay) through the app, on `FakeBackend` tiers."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.devtools.fake_backend import FakeBackend, FakeCall
from gateway.dispatch import then
from gateway.routing.decision import RouteContext, RouteDecision
from gateway.errors import InvalidRequest, RateLimited, TierUnavailable, UpstreamStatusError
from tests.conftest import InProcessGateway

CHAT = "/v1/chat/completions"


def body(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Capital of France?"}], **extra}


class LocalFirstRouter:
    """Sends everything local with an upstream fallback, as an auto rule would (pins never fall back)."""

    def decide(self, ctx: RouteContext) -> RouteDecision:
        return RouteDecision(tier="local", reason="classifier", detail="local first", fallback="upstream")


def events(text: str) -> list[Any]:
    """The decoded `data:` events of an SSE body ("[DONE]" stays a string)."""
    out: list[Any] = []
    for event in text.split("\n\n"):
        if event.startswith("data: "):
            data = event[len("data: "):]
            out.append(data if data == "[DONE]" else msgspec.json.decode(data))
    return out


def content_of(chunks: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if isinstance(c, dict) and c.get("choices")
    )


async def test_complete_answer_headers_usage_and_request_id(app_factory: Any) -> None:
    upstream = FakeBackend(reply="Paris is the capital of France.", prompt_tokens=12)
    gw: InProcessGateway = await app_factory(upstream=upstream)
    response = await gw.client.post(CHAT, json=body(), headers={"x-request-id": "req-1"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == "Paris is the capital of France."
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    assert {k: v for k, v in response.headers.items() if k.startswith("x-")} == {
        "x-request-id": "req-1",
        "x-gateway-route": "upstream",
        "x-gateway-model": "gpt-4o-mini",
        "x-gateway-route-reason": "model name goes upstream as-is",
        "x-gateway-cache": "bypass",
    }
    assert upstream.calls == [FakeCall(model="gpt-4o-mini", request_id="req-1", stream=False)]


async def test_stream_relays_chunks_and_usage_only_when_asked(app_factory: Any) -> None:
    upstream = FakeBackend(reply="one two three", prompt_tokens=5)
    gw = await app_factory(upstream=upstream)
    asked = await gw.client.post(CHAT, json=body(stream=True, stream_options={"include_usage": True}))
    assert asked.status_code == 200 and asked.headers["content-type"].startswith("text/event-stream")
    assert asked.headers["cache-control"] == "no-cache" and asked.headers["x-gateway-route"] == "upstream"
    got = events(asked.text)
    assert got[-1] == "[DONE]" and content_of(got) == "one two three"
    assert got[-2]["choices"] == []
    assert got[-2]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    plain = events((await gw.client.post(CHAT, json=body(stream=True))).text)
    assert plain[-1] == "[DONE]" and content_of(plain) == "one two three"
    assert all(isinstance(e, str) or e["choices"] for e in plain)  # the usage-only chunk was held back
    assert [c.stream for c in upstream.calls] == [True, True]


async def test_recoverable_error_falls_back_to_the_decisions_fallback(app_factory: Any) -> None:
    local = FakeBackend("local", error=RateLimited("busy", code="local_queue_full"))
    upstream = FakeBackend(reply="from upstream")
    gw = await app_factory(local=local, upstream=upstream, router=LocalFirstRouter())
    response = await gw.client.post(CHAT, json=body())
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "from upstream"
    assert response.headers["x-gateway-route"] == "upstream" and response.headers["x-gateway-model"] == "gpt-4o-mini"
    assert [c.model for c in local.calls] == ["local"] and [c.model for c in upstream.calls] == ["gpt-4o-mini"]
    assert gw.metric("slm_gateway_fallbacks_total", from_tier="local", to_tier="upstream") == 1
    assert gw.metric("slm_gateway_local_rejected_total", reason="queue_full") == 1
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="200", reason="classifier") == 1


async def test_a_client_error_is_not_retried_elsewhere(app_factory: Any) -> None:
    local = FakeBackend("local", error=InvalidRequest("bad stop", param="stop", code="invalid_value"))
    upstream = FakeBackend()
    gw = await app_factory(local=local, upstream=upstream)
    response = await gw.client.post(CHAT, json=body("local"))
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "bad stop", "type": "invalid_request_error", "param": "stop",
                                         "code": "invalid_value"}}
    assert response.headers["x-gateway-cache"] == "bypass"
    assert len(local.calls) == 1 and upstream.calls == []
    assert gw.metric("slm_gateway_requests_total", tier="local", status="400", reason="pinned") == 1


async def test_upstream_status_errors_recover_only_for_5xx_and_429() -> None:
    assert UpstreamStatusError(503, b"{}", "down").recoverable
    assert UpstreamStatusError(429, b"{}", "slow down").recoverable
    assert not UpstreamStatusError(400, b"{}", "bad").recoverable
    assert TierUnavailable("gone").recoverable and RateLimited("busy").recoverable
    assert not InvalidRequest("bad").recoverable


async def test_both_tiers_failing_answers_the_second_error(app_factory: Any) -> None:
    local = FakeBackend("local", error=TierUnavailable("local down", kind="connect"))
    upstream = FakeBackend(error=TierUnavailable("The upstream could not be reached.", kind="connect",
                                                 code="upstream_unreachable"))
    gw = await app_factory(local=local, upstream=upstream, router=LocalFirstRouter())
    response = await gw.client.post(CHAT, json=body())
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"
    assert gw.metric("slm_gateway_upstream_errors_total", kind="connect") == 1
    assert gw.metric("slm_gateway_fallbacks_total", from_tier="local", to_tier="upstream") == 1
    assert gw.metric("slm_gateway_requests_total", tier="local", status="502", reason="classifier") == 1


async def test_an_unconfigured_tier_is_a_400_naming_model(app_factory: Any) -> None:
    gw = await app_factory(upstream=FakeBackend())
    response = await gw.client.post(CHAT, json=body("local"))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model" and response.json()["error"]["code"] == "local_not_configured"


async def test_a_stream_cut_mid_way_ends_with_an_error_event(app_factory: Any) -> None:
    cut = TierUnavailable("The upstream connection failed.", kind="protocol", code="upstream_protocol_error")
    upstream = FakeBackend(reply="one two three", fail_after=2, stream_error=cut)
    gw = await app_factory(upstream=upstream)
    response = await gw.client.post(CHAT, json=body(stream=True))
    assert response.status_code == 200
    got = events(response.text)
    assert content_of(got[:-1]) == "one" and got[-1]["error"]["code"] == "upstream_protocol_error"
    assert len(got) == 3  # role chunk, "one", the error event: nothing after it
    assert gw.metric("slm_gateway_upstream_errors_total", kind="protocol") == 1
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="502", reason="default") == 1
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="gpt-4o-mini") == 0


async def test_a_stream_failing_before_its_first_chunk_keeps_its_status(app_factory: Any) -> None:
    upstream = FakeBackend(fail_after=0, stream_error=TierUnavailable("x", kind="protocol"))
    gw = await app_factory(upstream=upstream)
    response = await gw.client.post(CHAT, json=body(stream=True))
    assert response.status_code == 502
    assert gw.metric("slm_gateway_upstream_errors_total", kind="protocol") == 1


async def test_then_runs_both_after_send_hooks_in_order_even_when_the_first_fails() -> None:
    ran: list[str] = []

    async def index() -> None:
        ran.append("index")
        raise RuntimeError("index down")

    async def learn() -> None:
        ran.append("learn")

    assert then(None, None) is None
    assert then(index, None) is index and then(None, learn) is learn
    both = then(index, learn)
    assert both is not None
    with pytest.raises(RuntimeError, match="index down"):
        await both()
    assert ran == ["index", "learn"]

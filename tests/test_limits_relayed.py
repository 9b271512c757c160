"""Requests relayed as they are count against a stored key's caps too (issue 16): `/v1/embeddings`, passthrough
(`/v1/moderations`), and `/v1/responses` and `/v1/completions` forwarded upstream, and answer with the key's
`x-ratelimit-*` headers. In-process gateway on a REAL Redis
(`SLM_TEST_REDIS_URL`), the fake upstream as a process (`fake_upstream`): exact statuses, counters and dollars."""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec

from gateway.devtools.fake_backend import FakeBackend
from tests.conftest import InProcessGateway
from tests.test_limits import ADMIN, REDIS_URL, REPLY, freeze, new_key, prefix  # noqa: F401 (prefix: a fixture)
from tests.test_limits import ratelimit_headers

EMBED = "text-embedding-3-small"
EMBED_PER_MILLION = 20.0  # $ per million input tokens in this test's cost table


async def gateway(app_factory: Any, prefix: str, fake_upstream: str) -> InProcessGateway:
    return await app_factory(
        local=FakeBackend("local", reply=REPLY), upstream=FakeBackend(reply=REPLY),
        config={"admin_api_keys": ["sk-admin"], "upstream": {"url": fake_upstream},
                "costs": {"upstream": {EMBED: {"input_per_million": EMBED_PER_MILLION},
                                       "gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6}}},
                "limits": {"enabled": True, "redis_url": REDIS_URL, "key_prefix": prefix}},
    )


async def usage(gw: InProcessGateway, kid: str) -> dict[str, Any]:
    assert gw.pipeline.limits is not None
    await gw.pipeline.limits.drain()
    r = await gw.client.get(f"/admin/keys/{kid}/usage", headers=ADMIN)
    return {k: r.json()[k] for k in ("requests_this_minute", "tokens_this_minute", "usd_today")}


async def test_upstream_embeddings_count_requests_tokens_and_dollars(
        prefix: str, app_factory: Any, fake_upstream: str) -> None:  # noqa: F811
    gw = await gateway(app_factory, prefix, fake_upstream)
    key, kid = await new_key(gw, "eng", limits={"rpm": 2})
    auth = {"authorization": f"Bearer {key}"}
    request = {"model": EMBED, "input": ["one two three", "four five"]}  # the fake upstream: 5 tokens
    statuses = [(await gw.client.post("/v1/embeddings", json=request, headers=auth)).status_code for _ in range(2)]
    refused = await gw.client.post("/v1/embeddings", json=request, headers=auth)
    assert statuses == [200, 200]
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert await usage(gw, kid) == {"requests_this_minute": 2, "tokens_this_minute": 10,
                                    "usd_today": 2 * round(5 * EMBED_PER_MILLION * 1e3) / 1e9}
    assert gw.metric("slm_gateway_limited_requests_total", scope="key", reason="requests") == 1
    assert gw.metric("slm_gateway_requests_total", tier="none", status="429", reason="passthrough") == 1


async def test_an_embedding_over_the_dollar_cap_is_refused(prefix: str, app_factory: Any, fake_upstream: str) -> None:  # noqa: F811
    gw = await gateway(app_factory, prefix, fake_upstream)
    key, _ = await new_key(gw, "eng", limits={"usd_per_day": 1e-9})
    r = await gw.client.post("/v1/embeddings", json={"model": EMBED, "input": "x" * 300},
                             headers={"authorization": f"Bearer {key}"})
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["type"]) == (
        429, "budget_exceeded", "rate_limit_error")


async def test_passthrough_counts_the_request_and_keeps_the_keys_tiers(
        prefix: str, app_factory: Any, fake_upstream: str) -> None:  # noqa: F811
    gw = await gateway(app_factory, prefix, fake_upstream)
    key, kid = await new_key(gw, "eng", limits={"rpm": 1})
    auth = {"authorization": f"Bearer {key}"}
    first = await gw.client.post("/v1/moderations", json={"model": "omni-moderation-latest", "input": "hello"}, headers=auth)
    second = await gw.client.post("/v1/moderations", json={"model": "omni-moderation-latest", "input": "hello"}, headers=auth)
    assert (first.status_code, first.json()["id"]) == (200, "modr-fake")
    assert (second.status_code, second.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    assert await usage(gw, kid) == {"requests_this_minute": 1, "tokens_this_minute": 0, "usd_today": 0.0}
    local_only, _ = await new_key(gw, "eng", allowed_tiers=["local"])
    r = await gw.client.post("/v1/moderations", json={"model": "omni-moderation-latest", "input": "hello"},
                             headers={"authorization": f"Bearer {local_only}"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "tier_not_allowed")


async def test_responses_forwarded_upstream_are_limited_and_settled(
        prefix: str, app_factory: Any, fake_upstream: str) -> None:  # noqa: F811
    gw = await gateway(app_factory, prefix, fake_upstream)
    key, kid = await new_key(gw, "eng", limits={"rpm": 1})
    auth = {"authorization": f"Bearer {key}", "x-gateway-route": "upstream"}
    request = {"model": "gpt-4o-mini", "input": "Capital of France?", "max_output_tokens": 6}
    first = await gw.client.post("/v1/responses", json=request, headers=auth)
    second = await gw.client.post("/v1/responses", json=request, headers=auth)
    assert first.status_code == 200
    assert first.json()["usage"]["input_tokens"] == 3 and first.json()["usage"]["output_tokens"] == 6
    assert (second.status_code, second.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    assert await usage(gw, kid) == {"requests_this_minute": 1, "tokens_this_minute": 9,
                                    "usd_today": round((3 * 0.15 + 6 * 0.6) * 1e3) / 1e9}
    local_only, _ = await new_key(gw, "eng", allowed_tiers=["local"])
    r = await gw.client.post("/v1/responses", json=request,
                             headers={"authorization": f"Bearer {local_only}", "x-gateway-route": "upstream"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "tier_not_allowed")


async def test_relayed_answers_carry_the_keys_ratelimit_headers_instead_of_the_upstreams(
        prefix: str, app_factory: Any, upstream_factory: Any) -> None:  # noqa: F811
    """Passthrough, embeddings, Responses and legacy completions relayed upstream answer with the caller's
    `x-ratelimit-*` (its key's rpm / tpm, as after its reserve), never the upstream account's own (which the fake
    upstream sends as OpenAI does: rpm 5000)."""
    gw = await gateway(app_factory, prefix, upstream_factory(ratelimit_requests=5000))
    minute = math.floor(time.time() / 60) * 60 + 60.0
    freeze(gw, minute - 12.5)  # every reset: 13s
    key, kid = await new_key(gw, "eng", limits={"rpm": 5, "tpm": 100_000})
    auth = {"authorization": f"Bearer {key}", "x-gateway-route": "upstream"}
    moderation = msgspec.json.encode({"model": "omni-moderation-latest", "input": "hello"})
    embedding = {"model": EMBED, "input": ["one two three", "four five"]}
    response = {"model": "gpt-4o-mini", "input": "Capital of France?", "max_output_tokens": 6}
    legacy = {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 5}
    sends = [
        ("/v1/moderations", moderation, len(moderation) // 3),
        ("/v1/embeddings", embedding, len(msgspec.json.encode(embedding)) // 3),
        ("/v1/responses", response, len(msgspec.json.encode(response)) // 3 + 6),
        ("/v1/completions", legacy, len(msgspec.json.encode(legacy)) // 3 + 5),
    ]
    seen = []
    for n, (path, request, estimate) in enumerate(sends, 1):
        before = (await usage(gw, kid))["tokens_this_minute"]
        if isinstance(request, bytes):
            r = await gw.client.post(path, content=request, headers={**auth, "content-type": "application/json"})
        else:
            r = await gw.client.post(path, json=request, headers=auth)
        assert r.status_code == 200, r.text
        seen.append(ratelimit_headers(r))
        assert seen[-1] == {
            "x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": str(5 - n),
            "x-ratelimit-reset-requests": "13s", "x-ratelimit-limit-tokens": "100000",
            "x-ratelimit-remaining-tokens": str(100_000 - before - estimate), "x-ratelimit-reset-tokens": "13s"}
    dollars_only, _ = await new_key(gw, "eng", limits={"usd_per_day": 1.0})  # no rpm / tpm: no such header
    r = await gw.client.post("/v1/embeddings", json=embedding, headers={"authorization": f"Bearer {dollars_only}"})
    assert r.status_code == 200 and ratelimit_headers(r) == {}

"""Legacy `/v1/completions` answered by the local model counts against a stored key's caps (issue 16): a gateway
process with the bundled model (`slm-gateway serve`), limits on a REAL Redis (`SLM_TEST_REDIS_URL`). Exact
requests, tokens (the answers' own usage) and dollars (`costs.local_per_million_tokens`), the key's
`x-ratelimit-*` headers, the key's tiers, and a stream the client abandons settled with what was generated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import RunningGateway
from tests.test_limits import ADMIN, REDIS_URL, settled_usage
from tests.test_limits_replicas import not_near_a_minute_boundary

LOCAL_PER_MILLION = 3.0  # $ per million tokens generated or read by the local tier, in this test's cost table
PROMPT = "def add(a, b):"


@pytest.fixture
def local_gateway(gateway_factory: Any) -> Iterator[tuple[RunningGateway, str]]:
    prefix = f"slmgw:test-limits-local:{uuid.uuid4().hex[:8]}"
    gw = gateway_factory(config={
        "admin_api_keys": ["sk-admin"], "costs": {"local_per_million_tokens": LOCAL_PER_MILLION},
        "limits": {"enabled": True, "redis_url": REDIS_URL, "key_prefix": prefix}})
    yield gw, prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


def nano_cost(tokens: int) -> float:
    """The dollars the limits count for `tokens` local tokens, as the admin API shows them (nano-dollars / 1e9)."""
    return round(tokens * LOCAL_PER_MILLION * 1e3) / 1e9


async def test_legacy_completions_answered_locally_are_limited_and_settled(local_gateway: tuple[RunningGateway, str]) -> None:
    gw, _ = local_gateway
    not_near_a_minute_boundary()  # requests and tokens are counted per UTC minute
    async with httpx.AsyncClient(timeout=120) as http:
        r = await http.post(f"{gw.root}/admin/keys", headers=ADMIN,
                            json={"team": "eng", "limits": {"rpm": 3, "tpm": 100_000}})
        key, kid = r.json()["key"], r.json()["id"]
        auth = {"authorization": f"Bearer {key}"}
        request = {"model": "local", "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
        first = await http.post(f"{gw.base_url}/completions", json=request, headers=auth)
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-limit-requests"] == "3"
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        assert first.headers["x-ratelimit-limit-tokens"] == "100000"
        spent = first.json()["usage"]["total_tokens"]
        prompt_tokens = first.json()["usage"]["prompt_tokens"]
        used = await settled_usage(http, gw.root, kid, 0.0)
        assert (used["requests_this_minute"], used["tokens_this_minute"], used["usd_this_month"]) == (
            1, spent, nano_cost(spent))

        # a stream the client leaves after its first piece: settled with the prompt and what was generated
        stream = {**request, "max_tokens": 200, "stream": True}
        async with http.stream("POST", f"{gw.base_url}/completions", json=stream, headers=auth) as answer:
            assert answer.status_code == 200
            assert answer.headers["x-ratelimit-remaining-requests"] == "1"
            async for line in answer.aiter_lines():
                if line.startswith("data: "):
                    break
        used = await settled_usage(http, gw.root, kid, nano_cost(spent))
        assert used["requests_this_minute"] == 2
        generated = used["tokens_this_minute"] - spent - prompt_tokens
        assert 1 <= generated < 200  # what it generated until it saw the client leave, not the 200 reserved
        assert used["usd_this_month"] == nano_cost(spent + prompt_tokens + generated)

        third = await http.post(f"{gw.base_url}/completions", json=request, headers=auth)
        fourth = await http.post(f"{gw.base_url}/completions", json=request, headers=auth)
        assert third.status_code == 200
        assert (fourth.status_code, fourth.json()["error"]["code"]) == (429, "rate_limit_exceeded")
        assert fourth.headers["x-ratelimit-remaining-requests"] == "0"

        r = await http.post(f"{gw.root}/admin/keys", headers=ADMIN, json={"team": "eng", "allowed_tiers": ["upstream"]})
        upstream_only = {"authorization": f"Bearer {r.json()['key']}"}
        refused = await http.post(f"{gw.base_url}/completions", json=request, headers=upstream_only)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "tier_not_allowed")

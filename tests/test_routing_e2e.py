"""End-to-end routing through a running `slm-gateway serve` (real HTTP, official `openai` SDK, fake upstream,
real bundled local model, a small real router model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO_ROOT, RunningGateway, run_gateway

EASY = [{"role": "user", "content": "Say hello 3 times."}]
HARD = [{"role": "user", "content": "Prove that 17 is irrational."}]
TOOLS = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]
MANY_TOOLS = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}} for i in range(6)]
"""Six tools: over the default policy's `many-tools-upstream` bound (one to five go to the classifier)."""


def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="sk-x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def auto_gateway(fake_upstream: str, tiny_router_model: Path) -> Iterator[RunningGateway]:
    """The shipped default policy; the tiny model scores HARD ~0.75 and EASY ~0.18, either side of the threshold."""
    args = ("--upstream-url", fake_upstream, "--classifier-model", str(tiny_router_model))
    with run_gateway(*args) as gw:
        yield gw


@pytest.fixture(scope="module")
def privacy_gateway(fake_upstream: str, tiny_router_model: Path) -> Iterator[RunningGateway]:
    args = ("--upstream-url", fake_upstream, "--classifier-model", str(tiny_router_model),
            "--policy", str(REPO_ROOT / "policies" / "privacy-first.yaml"))
    with run_gateway(*args) as gw:
        yield gw


def test_unmodified_client_is_auto_routed_by_the_classifier(auto_gateway: RunningGateway) -> None:
    api = client(auto_gateway)
    easy = api.chat.completions.with_raw_response.create(model="gpt-4o", messages=EASY, max_tokens=8, temperature=0)
    assert easy.headers["x-gateway-route"] == "local"
    assert easy.headers["x-gateway-route-reason"].startswith("classifier p_strong=")
    assert " < threshold " in easy.headers["x-gateway-route-reason"]
    assert easy.parse().choices[0].message.content
    hard = api.chat.completions.with_raw_response.create(model="gpt-4o", messages=HARD, max_tokens=8)
    assert hard.headers["x-gateway-route"] == "upstream"
    assert " >= threshold " in hard.headers["x-gateway-route-reason"]
    assert hard.parse().model == "gpt-4o" and hard.parse().choices[0].message.content.startswith("fake answer to:")


def test_auto_model_name_and_streaming_carry_the_reason(auto_gateway: RunningGateway) -> None:
    with client(auto_gateway).chat.completions.with_streaming_response.create(
        model="auto", messages=HARD, max_tokens=8, stream=True
    ) as response:
        assert response.headers["x-gateway-route"] == "upstream"
        assert response.headers["x-gateway-route-reason"].startswith("classifier p_strong=")
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text.startswith("fake answer to:")


def test_rules_pin_and_route_capabilities(auto_gateway: RunningGateway) -> None:
    api = client(auto_gateway)
    tools = api.chat.completions.with_raw_response.create(model="gpt-4o", messages=EASY, tools=MANY_TOOLS, max_tokens=8)
    assert (tools.headers["x-gateway-route"], tools.headers["x-gateway-route-reason"]) == (
        "upstream", "rule 'many-tools-upstream'")
    pinned = api.chat.completions.with_raw_response.create(model="local", messages=HARD, max_tokens=4)
    assert (pinned.headers["x-gateway-route"], pinned.headers["x-gateway-route-reason"]) == ("local", "rule 'pin-local'")
    header = api.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=EASY, max_tokens=4, extra_headers={"x-gateway-route": "upstream"})
    assert header.headers["x-gateway-route-reason"] == "rule 'pin-upstream-header'"


def test_default_policy_keeps_an_easy_tool_call_local_and_spills_an_unenforceable_schema(
    auto_gateway: RunningGateway, fake_upstream: str
) -> None:
    import httpx

    api = client(auto_gateway)
    called = api.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=EASY, tools=TOOLS, tool_choice="required", max_tokens=32, temperature=0)
    assert called.headers["x-gateway-route"] == "local"
    assert called.headers["x-gateway-route-reason"].startswith("classifier p_strong=")
    assert [c.function.name for c in called.parse().choices[0].message.tool_calls or []] == ["now"]
    root = fake_upstream.removesuffix("/v1")
    httpx.delete(f"{root}/_fake/requests", timeout=10)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]}
    spilled = api.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=EASY, max_tokens=8,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    assert spilled.headers["x-gateway-route"] == "upstream"  # the local tier refused the schema; fallback: both
    assert len(httpx.get(f"{root}/_fake/requests", timeout=10).json()["data"]) == 1


def test_decisions_and_classifier_time_are_in_the_metrics(auto_gateway: RunningGateway) -> None:
    import httpx

    api = client(auto_gateway)  # its own traffic, so the test holds when run alone
    api.chat.completions.create(model="gpt-4o", messages=EASY, max_tokens=4, temperature=0)
    api.chat.completions.create(model="gpt-4o", messages=HARD, max_tokens=4)
    api.chat.completions.create(model="gpt-4o", messages=EASY, tools=MANY_TOOLS, max_tokens=4)
    text = httpx.get(f"{auto_gateway.root}/metrics", timeout=10).text
    assert 'slm_gateway_routing_decisions_total{reason="classifier",tier="local"}' in text
    assert 'slm_gateway_routing_decisions_total{reason="many-tools-upstream",tier="upstream"}' in text
    count = [line for line in text.splitlines() if line.startswith("slm_gateway_classifier_duration_seconds_count")]
    assert count and float(count[0].split()[-1]) >= 2


def test_personal_data_stays_local_or_is_refused(privacy_gateway: RunningGateway, fake_upstream: str) -> None:
    import httpx

    api = client(privacy_gateway)
    root = fake_upstream.removesuffix("/v1")
    httpx.delete(f"{root}/_fake/requests")
    contact = [{"role": "user", "content": "Prove this email is valid: jane.doe@example.com"}]
    kept = api.chat.completions.with_raw_response.create(model="gpt-4o", messages=contact, max_tokens=4)
    assert (kept.headers["x-gateway-route"], kept.headers["x-gateway-route-reason"]) == ("local", "rule 'pii-keep-local'")
    with pytest.raises(openai.PermissionDeniedError) as info:
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "My SSN is 123-45-6789"}])
    error = info.value.body
    assert info.value.status_code == 403 and error["code"] == "pii_blocked" and error["type"] == "permission_error"
    assert "123-45-6789" not in str(error)
    assert info.value.response.headers["x-gateway-route"] == "rejected"
    received = str(httpx.get(f"{root}/_fake/requests").json()["data"])
    assert "jane.doe" not in received and "123-45" not in received  # nothing personal reached the upstream


def test_without_an_upstream_everything_is_local(tiny_router_model: Path) -> None:
    with run_gateway("--classifier-model", str(tiny_router_model)) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HARD, max_tokens=4, extra_headers={"x-gateway-route": "local"})
        assert (raw.headers["x-gateway-route"], raw.headers["x-gateway-route-reason"]) == (
            "local", "rule 'pin-local-header'")
        with pytest.raises(openai.BadRequestError) as info:  # n > 1: the local model cannot honour it
            client(gw).chat.completions.create(model="gpt-4o", messages=HARD, n=2, max_tokens=4)
        assert (info.value.body["param"], info.value.body["code"]) == ("n", "unsupported_on_local")
        auto = client(gw).chat.completions.with_raw_response.create(model="gpt-4o", messages=HARD, max_tokens=4)
        assert auto.headers["x-gateway-route-reason"] == "no upstream configured: local (rule 'auto')"

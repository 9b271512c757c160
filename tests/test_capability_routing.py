"""Capability-aware routing through a running gateway: a request needing a feature the local tier lacks (tools,
structured output, images, n > 1, logprobs) is never answered locally as if it were honoured, pins are never
overridden (no spill, no silent switch), and the fallback follows the same rule (issue 10 items 3 and 4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningGateway, run_gateway

EASY = [{"role": "user", "content": "Say hello 3 times."}]
HARD = [{"role": "user", "content": "Prove that 17 is irrational."}]
TOOLS = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]
IMAGE = [{"role": "user", "content": [
    {"type": "text", "text": "What is in this picture?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
]}]


def post(gw: RunningGateway, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", json={"max_tokens": 4, **body}, headers=headers, timeout=120)


def route(r: httpx.Response) -> tuple[int, str, str]:
    return r.status_code, r.headers.get("x-gateway-route", ""), r.headers.get("x-gateway-route-reason", "")


def error(r: httpx.Response) -> tuple[int, str, str | None, str]:
    e = r.json()["error"]
    return r.status_code, e["type"], e["param"], e["code"]


def received(upstream: str) -> list[dict[str, Any]]:
    return httpx.get(f"{upstream.removesuffix('/v1')}/_fake/requests", timeout=10).json()["data"]


@pytest.fixture(scope="module")
def with_upstream(fake_upstream: str, tiny_router_model: Path) -> Iterator[RunningGateway]:
    """Shipped default policy; the tiny classifier keeps EASY local, so only the capability check moves it."""
    with run_gateway("--upstream-url", fake_upstream, "--classifier-model", str(tiny_router_model)) as gw:
        yield gw


@pytest.fixture(scope="module")
def local_only(tiny_router_model: Path) -> Iterator[RunningGateway]:
    with run_gateway("--classifier-model", str(tiny_router_model)) as gw:
        yield gw


def test_n_and_logprobs_go_upstream_instead_of_the_classifiers_local(with_upstream: RunningGateway) -> None:
    easy = post(with_upstream, {"model": "gpt-4o", "messages": EASY, "temperature": 0})
    assert route(easy)[:2] == (200, "local")  # the control: the classifier keeps it local
    assert route(post(with_upstream, {"model": "gpt-4o", "messages": EASY, "n": 2})) == (
        200, "upstream", "the local tier cannot honour 'n': upstream (rule 'auto')")
    assert route(post(with_upstream, {"model": "gpt-4o", "messages": EASY, "logprobs": True})) == (
        200, "upstream", "the local tier cannot honour 'logprobs': upstream (rule 'auto')")
    assert route(post(with_upstream, {"model": "gpt-4o", "messages": EASY, "top_logprobs": 2})) == (
        200, "upstream", "the local tier cannot honour 'top_logprobs': upstream (rule 'auto')")
    assert route(post(with_upstream, {"model": "gpt-4o", "messages": EASY, "n": 1, "logprobs": False}))[:2] == (
        200, "local")


# tools and response_format are honoured by the local tier (grammar-constrained, tests/test_local_structured.py)
@pytest.mark.parametrize(("extra", "param"), [
    ({"messages": IMAGE}, "messages[0].content[1]"),
    ({"n": 3}, "n"),
    ({"logprobs": True, "top_logprobs": 1}, "logprobs"),
])
def test_a_pin_to_local_needing_a_missing_feature_is_a_400(
    with_upstream: RunningGateway, fake_upstream: str, extra: dict[str, Any], param: str
) -> None:
    httpx.delete(f"{fake_upstream.removesuffix('/v1')}/_fake/requests", timeout=10)
    by_model = post(with_upstream, {"model": "local", "messages": EASY, **extra})
    assert error(by_model) == (400, "invalid_request_error", param, "unsupported_on_local")
    assert by_model.json()["error"]["message"] == (
        f"The request is pinned to the local tier (model 'local'), which does not support '{param}'.")
    assert route(by_model) == (400, "rejected", f"rule 'pin-local'; the local tier cannot honour '{param}'")
    by_header = post(with_upstream, {"model": "gpt-4o", "messages": EASY, **extra}, {"x-gateway-route": "local"})
    assert error(by_header) == (400, "invalid_request_error", param, "unsupported_on_local")
    assert received(fake_upstream) == []  # never silently served upstream either


def test_features_that_need_nothing_stay_local(with_upstream: RunningGateway) -> None:
    none = post(with_upstream, {"model": "local", "messages": EASY, "tools": TOOLS, "tool_choice": "none"})
    assert route(none) == (200, "local", "rule 'pin-local'")
    text = post(with_upstream, {"model": "local", "messages": EASY, "response_format": {"type": "text"}})
    assert route(text) == (200, "local", "rule 'pin-local'")
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
    assert route(post(with_upstream, {"model": "local", "messages": parts})) == (200, "local", "rule 'pin-local'")


@pytest.mark.parametrize(("extra", "param"), [
    ({"messages": IMAGE}, "messages[0].content[1]"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
])
def test_without_an_upstream_a_missing_feature_is_a_400_naming_the_field(
    local_only: RunningGateway, extra: dict[str, Any], param: str
) -> None:
    r = post(local_only, {"model": "gpt-4o", "messages": EASY, **extra})
    assert error(r) == (400, "invalid_request_error", param, "unsupported_on_local")
    assert r.json()["error"]["message"] == (
        f"'{param}' is not supported by the local model, and no upstream is configured on this gateway.")
    assert r.headers["x-gateway-route"] == "rejected"


def test_without_an_upstream_a_pin_to_upstream_is_an_error_not_a_local_answer(local_only: RunningGateway) -> None:
    by_model = post(local_only, {"model": "upstream", "messages": EASY})
    assert error(by_model) == (400, "invalid_request_error", "model", "upstream_not_configured")
    assert by_model.json()["error"]["message"] == (
        "The request is pinned to the upstream tier (model 'upstream'), which this gateway does not have.")
    by_header = post(local_only, {"model": "gpt-4o", "messages": EASY}, {"x-gateway-route": "upstream"})
    assert error(by_header) == (400, "invalid_request_error", "model", "upstream_not_configured")
    assert route(by_header) == (400, "rejected", "rule 'pin-upstream-header': pinned by header x-gateway-route: "
                                                 "upstream, but no upstream tier is configured")
    plain = post(local_only, {"model": "gpt-4o", "messages": EASY})
    assert route(plain) == (200, "local", "no upstream configured: local (rule 'auto')")
    metrics = httpx.get(f"{local_only.root}/metrics", timeout=10).text
    assert 'slm_gateway_routing_decisions_total{reason="pin_unavailable",tier="rejected"} 2.0' in metrics


def test_a_failing_upstream_never_falls_back_to_a_local_tier_lacking_the_feature(
    upstream_factory: Callable[..., str], tiny_router_model: Path
) -> None:
    failing = upstream_factory(error_rate=1.0, error_status=503)
    with run_gateway("--upstream-url", failing, "--classifier-model", str(tiny_router_model)) as gw:
        hard = post(gw, {"model": "gpt-4o", "messages": HARD})  # control: no feature needed, falls back local
        assert route(hard)[:2] == (200, "local")
        for extra in ({"n": 2}, {"logprobs": True}, {"messages": IMAGE}):
            r = post(gw, {"model": "gpt-4o", "messages": HARD, **extra})
            assert (r.status_code, r.json()["error"]["type"]) == (503, "server_error"), extra  # upstream's error
        pinned = post(gw, {"model": "upstream", "messages": HARD})  # a pin to upstream is not answered locally
        assert pinned.status_code == 503


PIN_SPILL_POLICY = """
version: 1
rules:
  - name: pii-keep-local
    when: {pii: contact}
    action: local
  - name: pin-local
    when: {model: local}
    action: local
    fallback: to_upstream
    pin_spill: true
  - name: pin-local-header
    when: {headers: {x-gateway-route: local}}
    action: local
    fallback: to_upstream
  - name: auto
    action: auto
"""


def test_pins_never_spill_unless_the_policy_says_so_and_personal_data_never_leaves(
    fake_upstream: str, tiny_router_model: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "pins.yaml"
    policy.write_text(PIN_SPILL_POLICY)
    long_prompt = [{"role": "user", "content": "Say hello. " * 200}]  # ~600 tokens > the 256-token local context
    args = ("--upstream-url", fake_upstream, "--classifier-model", str(tiny_router_model), "--policy", str(policy))
    with run_gateway(*args, env={"SLM_GATEWAY_LOCAL_CONTEXT_SIZE": "256"}) as gw:
        # the header pin inherits defaults.pin_spill (false): the local context overflow is the client's answer
        kept = post(gw, {"model": "gpt-4o", "messages": long_prompt}, {"x-gateway-route": "local"})
        assert error(kept) == (400, "invalid_request_error", "messages", "context_length_exceeded")
        # pin_spill: true on the rule lets the pinned request spill upstream
        spilled = post(gw, {"model": "local", "messages": long_prompt})
        assert route(spilled)[:2] == (200, "upstream")
        httpx.delete(f"{fake_upstream.removesuffix('/v1')}/_fake/requests", timeout=10)
        contact = [{"role": "user", "content": "Write to jane.doe@example.com about the meeting."}]
        pii = post(gw, {"model": "gpt-4o", "messages": contact, "n": 2})
        assert error(pii) == (400, "invalid_request_error", "n", "unsupported_on_local")
        assert pii.json()["error"]["message"] == (
            "The request contains personal data that this gateway keeps on the local model, "
            "which does not support 'n'.")
        assert received(fake_upstream) == []

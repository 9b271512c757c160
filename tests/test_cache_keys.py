"""Cache key canonicalisation: what does and does not change the key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.openai.request import parse_chat_request
from gateway.cache.keys import cache_key, canonical_request, lock_key, tenant_namespace

BASE: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital of France?"}],
    "temperature": 0,
    "max_tokens": 32,
}


def key(raw: dict[str, Any], tenant: str = "t-a", tier: str = "upstream", model: str = "gpt-4o-mini") -> str:
    return cache_key("p", tenant, tier, model, raw)


def test_key_order_and_whitespace_do_not_matter() -> None:
    compact = json.dumps(BASE, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(list(BASE.items()))), indent=4).encode()
    nested = {**BASE, "messages": [{"content": m["content"], "role": m["role"]} for m in BASE["messages"]]}
    keys = {key(parse_chat_request(body).raw) for body in (compact, spaced, json.dumps(nested).encode())}
    assert len(keys) == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "someone"},
        {"metadata": {"trace": "x"}},
        {"store": False},
        {"seed": None},
        {"n": 1},
        {"top_p": 1},
        {"top_p": 1.0},
        {"presence_penalty": 0},
        {"logprobs": False},
        {"temperature": 0.0},
    ],
)
def test_fields_that_do_not_change_the_answer_do_not_change_the_key(extra: dict[str, Any]) -> None:
    assert key({**BASE, **extra}) == key(BASE)


def test_a_lone_stop_string_equals_a_one_item_list() -> None:
    assert key({**BASE, "stop": "\n"}) == key({**BASE, "stop": ["\n"]})


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.2},
        {"max_tokens": 33},
        {"seed": 1},
        {"top_p": 0.9},
        {"n": 2},
        {"stop": ["x"]},
        {"model": "gpt-4o"},
        {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"messages": [{"role": "user", "content": "Capital of France?"}]},
        {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital of France? "}]},
        {"logprobs": True},
    ],
)
def test_every_answer_changing_parameter_changes_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) != key(BASE)


def test_tenant_changes_prefix_and_digest() -> None:
    a, b = key(BASE, tenant="t-a"), key(BASE, tenant="t-b")
    prefix_a, ns_a, digest_a = a.split(":")
    prefix_b, ns_b, digest_b = b.split(":")
    assert prefix_a == prefix_b == "p"
    assert ns_a != ns_b and digest_a != digest_b
    assert ns_a == tenant_namespace("t-a")


def test_tenant_strings_cannot_inject_into_the_key() -> None:
    evil = key(BASE, tenant="t-a:x")
    assert evil.count(":") == 2 and evil != key(BASE, tenant="t-a")


def test_tier_and_resolved_model_are_part_of_the_key() -> None:
    assert key(BASE, tier="local") != key(BASE, tier="upstream")
    assert key(BASE, model="local") != key(BASE, model="gpt-4o-mini")


def test_canonical_request_keeps_unknown_fields_and_survives_odd_values() -> None:
    odd = {**BASE, "logit_bias": {"50256": -100}, "huge": 10**40, "nested": {"b": [1.0, 2.5], "a": None}}
    canon = canonical_request(odd)
    assert canon["logit_bias"] == {"50256": -100} and canon["huge"] == 10**40
    assert key(odd) != key(BASE)
    assert lock_key(key(BASE)).endswith(":lock")

"""The hard scope (`gateway.cache.semantic.scope`): every generation parameter, the last message's own fields and
the earlier turns separate scopes; the configurable turn limit lets a short conversation hit inside its scope."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache.keys import tenant_namespace
from gateway.cache.memory import MemoryStore
from gateway.cache.semantic.cache import SemanticCache, SemanticHit, SemanticMiss, SemanticSettings
from gateway.cache.semantic.calibrate import shipped_threshold
from gateway.cache.semantic.index import MemoryVectorIndex
from gateway.cache.semantic.scope import SemanticScope, scope_of_request
from gateway.embedding import WordLlamaEmbedder

PROMPT, PARAPHRASE = "How do I sort a list in Python?", "What is the best way to sort a Python list?"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
BASE: dict[str, Any] = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]}


def scope(raw: dict[str, Any], tenant: str = "acme") -> SemanticScope:
    found = scope_of_request(tenant, "upstream", "gpt-x", raw)
    assert not isinstance(found, str)
    return found[0]


@pytest.mark.parametrize(
    "params",
    [
        {"tools": [TOOL]},
        {"tools": [TOOL], "tool_choice": "required"},
        {"parallel_tool_calls": False},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
        {"seed": 7},
        {"stop": ["\n"]},
        {"logit_bias": {"50256": -100}},
        {"top_p": 0.5},
        {"max_tokens": 50},
        {"max_completion_tokens": 50},
        {"presence_penalty": 0.5},
        {"frequency_penalty": 0.5},
        {"reasoning_effort": "low"},
        {"temperature": 0.7},
        {"some_future_parameter": {"x": 1}},  # unknown fields are hashed too: only known no-ops are left out
    ],
)
def test_every_generation_parameter_is_another_scope(params: dict[str, Any]) -> None:
    raw = {**BASE, **params}
    assert scope(raw).scope_id != scope(BASE).scope_id
    assert scope(raw).scope_id == scope(dict(reversed(raw.items()))).scope_id  # key order does not matter


@pytest.mark.parametrize(
    "same",
    [{"n": 1}, {"top_p": 1}, {"stream": True, "stream_options": {"include_usage": True}}, {"user": "u-1"},
     {"metadata": {"a": "b"}}, {"temperature": 0.0}, {"seed": None}],
)
def test_no_ops_and_explicit_defaults_keep_the_scope(same: dict[str, Any]) -> None:
    assert scope({**BASE, **same}).scope_id == scope(BASE).scope_id


def test_the_last_messages_own_fields_are_part_of_the_scope() -> None:
    named = {**BASE, "messages": [{"role": "user", "name": "alice", "content": PROMPT}]}
    other = {**BASE, "messages": [{"role": "user", "name": "bob", "content": PARAPHRASE}]}
    assert len({scope(BASE).scope_id, scope(named).scope_id, scope(other).scope_id}) == 3
    # the text is what may differ: the same name with another prompt is the same scope
    assert scope({**BASE, "messages": [{"role": "user", "name": "alice", "content": PARAPHRASE}]}) == scope(named)
    # a plain last message keeps the scope id it had before the field was hashed (no re-indexing on upgrade)
    assert scope(BASE).context_digest == scope({**BASE, "messages": [{"role": "user", "content": "x"}]}).context_digest


def test_tenant_and_earlier_turns_are_other_scopes() -> None:
    system = {**BASE, "messages": [{"role": "system", "content": "Be brief."}, *BASE["messages"]]}
    assert scope(BASE, "globex").scope_id.startswith(tenant_namespace("globex") + ":sem:")
    assert len({scope(BASE).scope_id, scope(BASE, "globex").scope_id, scope(system).scope_id}) == 3


def conversation(last: str, earlier_answer: str = "Hello! How can I help?") -> dict[str, Any]:
    return {"model": "m", "temperature": 0, "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": earlier_answer},
        {"role": "user", "content": last}]}


async def test_a_turn_limit_of_two_serves_a_short_conversation_inside_its_scope() -> None:
    embedder = WordLlamaEmbedder()
    settings = SemanticSettings(threshold=shipped_threshold(embedder.name), deadline_seconds=5, max_turns=2)
    cache = SemanticCache(embedder, MemoryVectorIndex(embedder.dim), MemoryStore(100), settings)
    found = scope_of_request("acme", "upstream", "gpt-x", conversation(PROMPT))
    assert not isinstance(found, str) and found[0].turns == 2
    miss = await cache.lookup(*found)
    assert isinstance(miss, SemanticMiss) and miss.reason == "empty"
    await cache.entries.set("entry-1", b"use sorted()", 60_000)
    assert await cache.store(found[0], found[1], "entry-1", 60_000, miss) is True

    hit = await cache.lookup(*scope_of_request("acme", "upstream", "gpt-x", conversation(PARAPHRASE)))  # type: ignore[misc]
    assert isinstance(hit, SemanticHit) and (hit.entry_key, hit.value) == ("entry-1", b"use sorted()")
    assert hit.similarity == pytest.approx(0.9373, abs=1e-4)
    other = await cache.lookup(*scope_of_request("acme", "upstream", "gpt-x", conversation(PARAPHRASE, "Hey.")))  # type: ignore[misc]
    assert isinstance(other, SemanticMiss) and other.reason == "empty"  # another earlier turn: another scope
    three = conversation(PARAPHRASE)
    three["messages"] = [*three["messages"][:2], *three["messages"]]  # three user turns: over the limit
    over = await cache.lookup(*scope_of_request("acme", "upstream", "gpt-x", three))  # type: ignore[misc]
    assert isinstance(over, SemanticMiss) and over.reason == "turns"

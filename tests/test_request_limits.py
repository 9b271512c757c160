"""Request parsing limits and the in-process cache's byte bound, through a running gateway (issue 10 item 6):
model names are checked at parse time (header-safe), deeply nested JSON is a 400 without a traceback, and
the embedded cache holds at most `cache.max_memory_bytes`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.openai.request import MAX_JSON_DEPTH, parse_chat_request
from gateway.cache.entry import CacheEntry, encode_entry
from gateway.cache.keys import cache_key
from gateway.cache.memory import MemoryStore
from gateway.errors import InvalidRequest
from tests.conftest import RunningGateway

MESSAGES = [{"role": "user", "content": "Say hi."}]


def post_raw(gw: RunningGateway, body: bytes) -> httpx.Response:
    """POST a raw body, pinned upstream (the fake upstream echoes the model name)."""
    headers = {"content-type": "application/json", "x-gateway-route": "upstream"}
    return httpx.post(f"{gw.base_url}/chat/completions", content=body, headers=headers, timeout=120)


def error(r: httpx.Response) -> tuple[int, str, str | None, str]:
    e = r.json()["error"]
    return r.status_code, e["type"], e["param"], e["code"]


@pytest.mark.parametrize("model", [
    "gpt-4o-é",  # not Latin-1-safe in a header: was a 500
    "gpt-4o\u4e2d",
    "gpt\x01x",  # a control character: dropped the connection
    "gpt\x7f",
    "gpt 4o",
    "gpt\t4o",
    "",
    "m" * 257,
])
def test_model_names_that_cannot_be_a_header_are_a_400(gateway: RunningGateway, model: str) -> None:
    r = post_raw(gateway, json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 4}).encode())
    assert error(r) == (400, "invalid_request_error", "model", "invalid_value")
    assert r.json()["error"]["message"] == "'model' must be 1-256 printable ASCII characters without spaces."


@pytest.mark.parametrize("model", [
    "gpt-4o-mini",
    "ft:gpt-4o-mini-2024-07-18:my-org:custom:9abc",
    "meta-llama/Llama-3.1-8B-Instruct:free",
    "claude-3-5-sonnet@20240620",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
    "my_deployment.v2",
    "m" * 256,
])
def test_real_world_model_names_pass_and_are_echoed_in_the_header(gateway: RunningGateway, model: str) -> None:
    r = post_raw(gateway, json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 4}).encode())
    assert (r.status_code, r.headers["x-gateway-route"], r.headers["x-gateway-model"]) == (200, "upstream", model)
    assert r.json()["model"] == model


def nested(depth: int) -> bytes:
    """A chat body whose deepest container is `depth` levels down (the body object is level 1)."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return b'{"model":"gpt-4o","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4,"x":' + \
        inner.encode() + b"}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_deeply_nested_json_is_a_400_without_a_traceback(gateway: RunningGateway, depth: int) -> None:
    r = post_raw(gateway, nested(depth))
    assert error(r) == (400, "invalid_request_error", None, "invalid_json")
    assert r.json()["error"]["message"] == f"Request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep."
    assert "Traceback" not in gateway.server.output(tail=200_000)
    assert "RecursionError" not in gateway.server.output(tail=200_000)


def test_nesting_up_to_the_limit_is_accepted(gateway: RunningGateway) -> None:
    r = post_raw(gateway, nested(MAX_JSON_DEPTH))
    assert (r.status_code, r.headers["x-gateway-route"]) == (200, "upstream")
    # many brackets (code in a prompt) but shallow: parsed normally
    code = "{[" * 500 + "]}" * 500
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": code}], "max_tokens": 4})
    assert post_raw(gateway, body.encode()).status_code == 200


def test_depth_check_counts_every_container_kind() -> None:
    deep_objects = '{"a":' * 70 + "1" + "}" * 70
    body = ('{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":' + deep_objects + "}").encode()
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(body)
    assert (info.value.code, info.value.status_code) == ("invalid_json", 400)
    assert parse_chat_request(nested(MAX_JSON_DEPTH)).raw["x"] == json.loads(nested(MAX_JSON_DEPTH))["x"]


# -- the in-process cache's byte bound -----------------------------------------------------------------------------
async def test_memory_store_evicts_least_recently_used_to_stay_within_max_bytes() -> None:
    store = MemoryStore(max_entries=100, max_bytes=100)
    await store.set("a", b"x" * 39, ttl_ms=60_000)  # 40 bytes with the key
    await store.set("b", b"x" * 39, ttl_ms=60_000)
    assert (len(store), store.bytes_used) == (2, 80)
    assert await store.get("a") == b"x" * 39  # a is now the most recently used
    await store.set("c", b"x" * 29, ttl_ms=60_000)  # 110 > 100: b goes
    assert (len(store), store.bytes_used) == (2, 70)
    assert (await store.get("b"), await store.get("a"), await store.get("c")) == (None, b"x" * 39, b"x" * 29)
    await store.set("a", b"x" * 9, ttl_ms=60_000)  # replacing an entry frees its old size
    assert (len(store), store.bytes_used) == (2, 40)
    await store.set("big", b"x" * 100, ttl_ms=60_000)  # larger than the whole budget: not stored, nothing evicted
    assert (len(store), store.bytes_used, await store.get("big")) == (2, 40, None)
    await store.set("a", b"x" * 200, ttl_ms=60_000)  # an oversized replacement drops the old value
    assert (len(store), store.bytes_used, await store.get("a")) == (1, 30, None)
    await store.close()
    assert (len(store), store.bytes_used) == (0, 0)


def stored_size(answer: dict[str, Any]) -> int:
    """The bytes the in-process cache accounts for one answer: its key and its encoded entry."""
    key = cache_key("slmgw:cache:v1", "anonymous", "upstream", answer["model"], {})
    choice, usage = answer["choices"][0], answer["usage"]
    entry = CacheEntry(answer["model"], choice["message"]["content"], choice["finish_reason"],
                       usage["prompt_tokens"], usage["completion_tokens"], "upstream", answer["created"])
    return len(key) + len(encode_entry(entry))


def test_the_gateways_memory_cache_holds_at_most_max_memory_bytes(
    gateway: RunningGateway, gateway_factory: Callable[..., RunningGateway], fake_upstream: str
) -> None:
    """Three answers of the same size S, a budget of 2.5 S: two fit, the third evicts the least recently used."""
    def ask(gw: RunningGateway, text: str) -> httpx.Response:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "max_tokens": 4, "temperature": 0}
        r = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers={"x-gateway-route": "upstream"},
                       timeout=60)
        assert r.status_code == 200, r.text
        return r

    sizes = {stored_size(ask(gateway, f"cache probe {n}").json()) for n in "ABC"}
    assert len(sizes) == 1
    size = sizes.pop()
    gw = gateway_factory("--upstream-url", fake_upstream, env={"SLM_GATEWAY_CACHE_MAX_MEMORY_BYTES": str(size * 5 // 2)})
    seen = [(n, ask(gw, f"cache probe {n}").headers["x-gateway-cache"]) for n in "ABACABAC"]
    assert seen == [("A", "miss"), ("B", "miss"), ("A", "hit"),  # [B, A]
                    ("C", "miss"),  # [A, C]: B, the least recently used, made room
                    ("A", "hit"), ("B", "miss"),  # [A, B]: C went
                    ("A", "hit"), ("C", "miss")]

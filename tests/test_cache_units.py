"""The response cache in-process: entries, stores, rules, collapse, and the cache layer in a real pipeline
(router, dispatcher, accounting) with stub tiers (so interrupted streams, failing tiers and slow leaders can be staged exactly)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from gateway.openai.request import parse_chat_request
from gateway.cache.breaker import Breaker
from gateway.cache.entry import (
    CacheEntry,
    EntryDecodeError,
    completion_body,
    decode_entry,
    encode_entry,
    entry_from_completion,
    stream_events,
)
from gateway.accounting import Accounting
from gateway.auth import KeyChecker
from gateway.cache.flow import CacheLayer
from gateway.cache.memory import MemoryStore
from gateway.cache.recorder import StreamRecorder
from gateway.cache.rules import client_directives, is_cacheable, tenant_of_request
from gateway.cache.service import ResponseCache
from gateway.cache.store import StoreError
from gateway.costs import CostModel
from gateway.dispatch import Answer, Dispatcher, StreamAnswer, Tiers
from gateway.errors import GatewayError, TierUnavailable
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.routing.decision import RouteDecision
from gateway.routing.static import StaticRouter
from gateway.settings import CostSettings, Settings
from gateway.tiers.base import Completion, Usage

ENTRY = CacheEntry(
    model="gpt-4o-mini", content="Paris.", finish_reason="stop", prompt_tokens=9, completion_tokens=2,
    tier="upstream", created=1700000000,
)
UPSTREAM = RouteDecision(tier="upstream", reason="test", detail="test")


def request(**extra: Any) -> Any:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}], "temperature": 0}
    return parse_chat_request(msgspec.json.encode({**body, **extra}))


# -- entries -----------------------------------------------------------------------------------------------------
def test_entry_round_trip_and_garbage() -> None:
    assert decode_entry(encode_entry(ENTRY)) == ENTRY
    for garbage in (b"", b"\x00\x01garbage", b'{"model":"x"}', msgspec.msgpack.encode(["a", "b"])):
        with pytest.raises(EntryDecodeError):
            decode_entry(garbage)
    for not_a_tier in ("cache", "none", ""):
        with pytest.raises(EntryDecodeError):
            decode_entry(msgspec.msgpack.encode(["m", "c", "stop", 1, 1, not_a_tier, 0]))


def _completion(message: dict[str, Any], finish: str = "stop", choices: int = 1) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    return msgspec.json.encode(
        {"model": "gpt-4o-mini", "created": 5, "choices": [choice] * choices,
         "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    )


def test_only_single_text_answers_become_entries() -> None:
    entry = entry_from_completion(_completion({"content": "hi"}), "upstream", "x")
    assert entry == CacheEntry("gpt-4o-mini", "hi", "stop", 3, 4, "upstream", 5)
    tool_call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert entry_from_completion(_completion({"content": None, "tool_calls": tool_call}, "tool_calls"), "upstream", "x") is None
    assert entry_from_completion(_completion({"content": "hi", "tool_calls": tool_call}), "upstream", "x") is None
    assert entry_from_completion(_completion({"content": "hi"}, choices=2), "upstream", "x") is None
    assert entry_from_completion(_completion({"content": "hi"}, "content_filter"), "upstream", "x") is None
    assert entry_from_completion(b"not json", "upstream", "x") is None
    assert entry_from_completion(_completion({"content": "hi"}), "cache", "x") is None
    assert entry_from_completion(_completion({"content": "hi"}), "none", "x") is None
    coder = entry_from_completion(_completion({"content": "hi"}), "coder", "x")  # a named SLM tier's answer
    assert coder == CacheEntry("gpt-4o-mini", "hi", "stop", 3, 4, "coder", 5)
    assert decode_entry(encode_entry(coder)) == coder


def test_replays_are_openai_shaped() -> None:
    body = msgspec.json.decode(completion_body(ENTRY))
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "Paris."
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    events = stream_events(ENTRY, include_usage=False)
    assert events[-1] == b"data: [DONE]\n\n" and len(events) == 4
    chunks = [msgspec.json.decode(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Paris."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-1]
    with_usage = [msgspec.json.decode(e[6:]) for e in stream_events(ENTRY, include_usage=True)[:-1]]
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"]["total_tokens"] == 11


def test_recorder_accumulates_and_refuses_tool_calls() -> None:
    rec = StreamRecorder("fallback")
    for payload in (
        {"model": "m", "created": 7, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Par"}}]},
        {"choices": [{"index": 0, "delta": {"content": "is."}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
    ):
        rec.feed(msgspec.json.encode(payload))
    assert rec.entry("local") == CacheEntry("m", "Paris.", "stop", 9, 2, "local", 7)
    assert rec.entry("coder") == CacheEntry("m", "Paris.", "stop", 9, 2, "coder", 7)
    assert rec.entry("cache") is None
    unfinished = StreamRecorder("f")
    unfinished.feed(b'{"choices":[{"index":0,"delta":{"content":"Par"}}]}')
    assert unfinished.entry("upstream") is None
    tools = StreamRecorder("f")
    tools.feed(b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}')
    tools.feed(b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    assert tools.entry("upstream") is None
    garbage = StreamRecorder("f")
    garbage.feed(b"{not json")
    garbage.feed(b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    assert garbage.entry("upstream") is None


# -- rules --------------------------------------------------------------------------------------------------------
def test_cacheability_rules() -> None:
    assert is_cacheable(request(), UPSTREAM, False)
    assert is_cacheable(request(temperature=0.7, seed=3), UPSTREAM, False)
    assert not is_cacheable(request(temperature=0.7), UPSTREAM, False)
    assert is_cacheable(request(temperature=0.7), UPSTREAM, True)
    assert not is_cacheable(request(n=2), UPSTREAM, True)
    assert not is_cacheable(request(logprobs=True), UPSTREAM, True)
    tool_turn = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function",
                                                              "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "sunny"},
    ]
    assert is_cacheable(request(messages=tool_turn), UPSTREAM, False)  # deterministic
    assert not is_cacheable(request(messages=tool_turn, temperature=0.5), UPSTREAM, True)
    never = RouteDecision(tier="upstream", reason="r", detail="d", cacheable=False)
    always = RouteDecision(tier="upstream", reason="r", detail="d", cacheable=True)
    assert not is_cacheable(request(), never, True)
    assert is_cacheable(request(temperature=0.9), always, False)
    assert not is_cacheable(request(n=3), always, False)  # policy cannot make n>1 cacheable


def test_client_directives_and_tenants() -> None:
    assert client_directives({}) == client_directives({"cache-control": "max-age=0"})
    both = client_directives({"cache-control": "No-Cache, no-store"})
    assert both.no_cache and both.no_store
    assert client_directives({"cache-control": "no-store"}).no_cache is False
    assert tenant_of_request("t-a", {"x-tenant": "acme"}, "x-tenant") == "t-a/acme"
    assert tenant_of_request("t-a", {}, "x-tenant") == "t-a"
    assert tenant_of_request("t-a", {"x-tenant": "acme"}, None) == "t-a"


# -- stores -------------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_store_ttl_lru_and_locks() -> None:
    clock = Clock()
    store = MemoryStore(max_entries=2, clock=clock)
    await store.set("a", b"1", ttl_ms=1000)
    await store.set("b", b"2", ttl_ms=5000)
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.set("c", b"3", ttl_ms=5000)
    assert await store.get("b") is None and await store.get("a") == b"1" and len(store) == 2
    clock.now += 1.5
    assert await store.get("a") is None and await store.get("c") == b"3"
    assert await store.try_lock("L", "me", 1000) and not await store.try_lock("L", "you", 1000)
    await store.unlock("L", "you")
    assert (await store.peek("c", "L")) == (b"3", True)
    await store.unlock("L", "me")
    assert await store.try_lock("L", "you", 1000)
    clock.now += 2
    assert await store.try_lock("L", "me", 1000)  # an expired lock is free


def test_breaker_backs_off_and_recovers() -> None:
    clock = Clock()
    breaker = Breaker(base=0.1, cap=0.4, clock=clock)
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow() and breaker.is_open
    clock.now += 0.11
    assert breaker.allow()  # half-open: one caller tries
    assert not breaker.allow()
    breaker.failure()
    clock.now += 0.15
    assert not breaker.allow()  # the pause doubled
    clock.now += 0.1
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and breaker.allow()


# -- the flow around the dispatcher --------------------------------------------------------------------------------
def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return msgspec.json.encode(
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


class StubUpstream:
    """An upstream tier whose behaviour each test sets: delay, failure, mid-stream drop, tool calls."""

    name = "upstream"

    def __init__(self) -> None:
        self.calls = 0
        self.delay = 0.0
        self.fail = False
        self.drop_after: int | None = None
        self.tool_calls = False

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> bool:
        return True

    def _text(self, req: Any) -> str:
        return "answer to " + str(req.chat.messages[-1].content)

    async def complete(self, req: Any, model: str, request_id: str | None = None) -> Completion:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise TierUnavailable("down", kind="connect")
        message: dict[str, Any] = {"role": "assistant", "content": self._text(req)}
        if self.tool_calls:
            message = {"role": "assistant", "content": None,
                       "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
        body = msgspec.json.encode(
            {"id": "x", "object": "chat.completion", "created": 1, "model": model,
             "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if self.tool_calls else "stop"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 3}}
        )
        return Completion(body=body, model=model, usage=Usage(3, 3))

    async def stream(self, req: Any, model: str, request_id: str | None = None) -> AsyncIterator[list[bytes]]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise TierUnavailable("down", kind="connect")
        text = self._text(req)
        events = [chunk({"role": "assistant", "content": ""}), chunk({"content": text[:5]}),
                  chunk({"content": text[5:]}), chunk({}, "stop"),
                  msgspec.json.encode({"choices": [], "model": model, "usage": {"prompt_tokens": 3, "completion_tokens": 3}})]
        for i, event in enumerate(events):
            if self.drop_after is not None and i >= self.drop_after:
                raise TierUnavailable("stream cut", kind="protocol")
            yield [event]  # one chunk per batch, as if each arrived apart


class Harness:
    def __init__(self, store: Any = None, *, lock_timeout: float = 5.0, max_entry_bytes: int = 10_000) -> None:
        self.upstream = StubUpstream()
        self.metrics = GatewayMetrics()
        tiers = Tiers(local=None, upstream=self.upstream)
        self.store = store if store is not None else MemoryStore(100)
        cache = ResponseCache(self.store, self.metrics, ttl_seconds=60, max_entry_bytes=max_entry_bytes,
                              lock_timeout_seconds=lock_timeout)
        self.layer = CacheLayer(Dispatcher(tiers), cache, key_prefix="test")
        accounting = Accounting(self.metrics, CostModel(CostSettings(), "gpt-4o-mini"))
        self.pipeline = Pipeline(Settings(), tiers, StaticRouter(), self.layer, KeyChecker(()), self.metrics, accounting)

    async def ask(self, headers: dict[str, str] | None = None, tenant: str = "t-a", **extra: Any) -> tuple[dict[str, str], str]:
        """(headers, content) of one request, consuming streams fully."""
        exchange = self.pipeline.exchange("rid", headers or {}, 0.0)
        exchange.accept(tenant, request(**extra))
        answer = await self.pipeline.chat(exchange)
        if isinstance(answer, Answer):
            body = msgspec.json.decode(answer.body)
            return answer.headers, body["choices"][0]["message"].get("content") or ""
        text = []
        async for written in answer.chunks:
            for event in written.split(b"\n\n"):  # one write may carry several events
                if event.startswith(b"data: {") and b'"error"' not in event:
                    for choice in msgspec.json.decode(event[6:])["choices"]:
                        text.append(choice["delta"].get("content") or "")
        return answer.headers, "".join(text)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


async def test_hit_after_miss_and_stream_shares_the_entry() -> None:
    h = Harness()
    first, text = await h.ask()
    assert first["x-gateway-cache"] == "miss" and first["x-gateway-route"] == "upstream"
    second, again = await h.ask()
    assert second["x-gateway-cache"] == "hit" and second["x-gateway-route"] == "cache"
    assert second["x-gateway-cache-tier"] == "upstream" and second["x-gateway-model"] == "gpt-4o-mini"
    streamed_headers, streamed = await h.ask(stream=True)
    assert streamed_headers["x-gateway-cache"] == "hit" and streamed == text == again
    assert h.upstream.calls == 1
    assert h.metric("slm_gateway_requests_total", tier="cache", status="200", reason="default") == 2
    assert h.metric("slm_gateway_cache_lookups_total", result="hit") == 2
    assert h.metric("slm_gateway_savings_dollars_total", tier="cache") > 0


async def test_streamed_miss_is_stored_once_complete() -> None:
    h = Harness()
    headers, streamed = await h.ask(stream=True)
    assert headers["x-gateway-cache"] == "miss"
    hit, text = await h.ask()
    assert hit["x-gateway-cache"] == "hit" and text == streamed and h.upstream.calls == 1


async def test_interrupted_upstream_stream_leaves_no_entry() -> None:
    h = Harness()
    h.upstream.drop_after = 2
    headers, partial = await h.ask(stream=True)
    assert headers["x-gateway-cache"] == "miss" and partial == "answe"
    assert len(h.store) == 0
    h.upstream.drop_after = None
    again, _ = await h.ask(stream=True)
    assert again["x-gateway-cache"] == "miss" and h.upstream.calls == 2 and len(h.store) == 1


async def test_client_that_leaves_mid_stream_leaves_no_entry() -> None:
    h = Harness()
    exchange = h.pipeline.exchange("rid", {}, 0.0)
    exchange.accept("t-a", request(stream=True))
    exchange.routed(UPSTREAM, "gpt-4o-mini")
    answer = await h.layer(exchange)
    assert isinstance(answer, StreamAnswer)
    await anext(answer.chunks)
    await anext(answer.chunks)
    await answer.chunks.aclose()  # what the server does when the client disconnects
    assert len(h.store) == 0
    assert len(h.layer.cache._flights) == 0  # the lead was released


async def test_failures_and_tool_calls_are_not_cached() -> None:
    h = Harness()
    h.upstream.fail = True
    with pytest.raises(GatewayError) as caught:
        await h.ask()
    assert caught.value.headers["x-gateway-cache"] == "miss"
    h.upstream.fail = False
    h.upstream.tool_calls = True
    await h.ask()
    await h.ask()
    assert len(h.store) == 0 and h.upstream.calls == 3


async def test_no_cache_and_no_store() -> None:
    h = Harness()
    headers, _ = await h.ask({"cache-control": "no-store"})
    assert headers["x-gateway-cache"] == "miss" and len(h.store) == 0
    headers, _ = await h.ask({"cache-control": "no-cache"})
    assert headers["x-gateway-cache"] == "bypass" and len(h.store) == 1  # skipped the lookup, stored
    headers, _ = await h.ask({"cache-control": "no-cache"})
    assert headers["x-gateway-cache"] == "bypass" and h.upstream.calls == 3
    headers, _ = await h.ask({"cache-control": "no-store"})
    assert headers["x-gateway-cache"] == "hit"


async def test_nondeterministic_requests_bypass() -> None:
    h = Harness()
    for _ in range(2):
        headers, _ = await h.ask(temperature=0.8)
        assert headers["x-gateway-cache"] == "bypass"
    assert h.upstream.calls == 2 and h.metric("slm_gateway_cache_lookups_total", result="bypass") == 2


async def test_tenants_never_share_entries() -> None:
    h = Harness()
    await h.ask(tenant="t-a")
    headers, _ = await h.ask(tenant="t-b")
    assert headers["x-gateway-cache"] == "miss" and h.upstream.calls == 2


async def test_oversize_answers_are_not_stored() -> None:
    h = Harness(max_entry_bytes=40)
    await h.ask()
    headers, _ = await h.ask()
    assert headers["x-gateway-cache"] == "miss" and len(h.store) == 0


async def test_concurrent_identical_misses_collapse() -> None:
    h = Harness()
    h.upstream.delay = 0.2
    results = await asyncio.gather(*(h.ask() for _ in range(10)), *(h.ask(stream=True) for _ in range(5)))
    assert h.upstream.calls == 1
    assert sorted(r[0]["x-gateway-cache"] for r in results) == ["hit"] * 14 + ["miss"]
    assert len({r[1] for r in results}) == 1


async def test_a_failed_leader_lets_followers_proceed() -> None:
    h = Harness()
    h.upstream.delay = 0.1
    h.upstream.fail = True
    results = await asyncio.gather(*(h.ask() for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, GatewayError) for r in results) and h.upstream.calls == 4


async def test_a_stuck_leader_holds_followers_only_until_the_lock_timeout() -> None:
    h = Harness(lock_timeout=0.2)
    h.upstream.delay = 1.0
    leader = asyncio.create_task(h.ask())
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    headers, _ = await h.ask()
    waited = asyncio.get_running_loop().time() - started
    assert headers["x-gateway-cache"] == "miss" and 0.15 < waited < 1.5
    await leader


class BrokenStore(MemoryStore):
    shared = True

    async def get(self, key: str) -> bytes | None:
        raise StoreError("get", "down")

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        raise StoreError("set", "down")

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        raise StoreError("lock", "down")


async def test_a_broken_store_never_fails_a_request() -> None:
    h = Harness(BrokenStore(10))
    for stream in (False, True, False):
        headers, text = await h.ask(stream=stream)
        assert headers["x-gateway-cache"] == "miss" and text
    assert h.metric("slm_gateway_cache_errors_total", operation="get") == 3
    assert h.metric("slm_gateway_cache_errors_total", operation="set") == 3
    assert h.metric("slm_gateway_cache_errors_total", operation="lock") == 3


async def test_garbage_entries_are_misses() -> None:
    h = Harness()
    await h.ask()
    (key,) = list(h.store._entries)
    await h.store.set(key, b"\xc1garbage", 60_000)
    headers, _ = await h.ask()
    assert headers["x-gateway-cache"] == "miss"
    assert h.metric("slm_gateway_cache_errors_total", operation="decode") == 1
    headers, _ = await h.ask()
    assert headers["x-gateway-cache"] == "hit"  # the miss rewrote the entry

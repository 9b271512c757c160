"""The semantic layer in-process (litestar's test client around `create_app`, `FakeBackend` tiers, the real bundled
embedder, the in-process store and index): who gets semantic lookups (policy `cache: semantic|exact`, tenants,
the request header), the admin purge of the in-process cache, and a slow embedder turning into a miss."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from gateway.auth import tenant_of
from gateway.cache import build_cache_layer
from gateway.cache.rules import tenant_of_request
from gateway.cache.semantic.cache import INLINE_CHARS
from gateway.cache.semantic.guard import LexicalGuard, encode_signature
from gateway.cache.semantic.scope import scope_of_request
from gateway.devtools.fake_backend import FakeBackend
from gateway.dispatch import Dispatcher, Tiers
from gateway.embedding import WordLlamaEmbedder
from gateway.exchange import Exchange
from gateway.metrics import GatewayMetrics
from gateway.openai.request import parse_chat_request
from gateway.routing.decision import RouteDecision
from gateway.routing.policy import parse_policy
from gateway.routing.policy_router import PolicyRouter
from gateway.settings import load_settings
from tests.conftest import InProcessGateway

KEY_A, KEY_B, ADMIN = "sk-layer-a", "sk-layer-b", "sk-layer-admin"
FIRST, PARAPHRASE = "What is the capital city of France?", "what's the capital of France?"
POLICY = """
rules:
  - {name: semantic-team, when: {headers: {x-team: sem}}, action: upstream, cache: semantic}
  - {name: exact-team, when: {headers: {x-team: exact}}, action: upstream, cache: exact}
  - {name: never, when: {headers: {x-team: never}}, action: upstream, cache: false}
defaults: {action: upstream}
"""

Start = Callable[..., Awaitable[InProcessGateway]]


def config(**semantic: Any) -> dict[str, Any]:
    return {"api_keys": [KEY_A, KEY_B], "admin_api_keys": [ADMIN], "cache": {"semantic": {"enabled": True, **semantic}}}


async def start_policy_gateway(app_factory: Start, **semantic: Any) -> tuple[InProcessGateway, FakeBackend]:
    upstream = FakeBackend("upstream", reply="Paris.")
    router = PolicyRouter(parse_policy(POLICY, "test.yaml"), None)
    gw = await app_factory(upstream=upstream, config=config(**semantic), router=router)
    return gw, upstream


async def ask(gw: InProcessGateway, text: str, key: str = KEY_A, **headers: str) -> tuple[int, dict[str, str]]:
    response = await gw.client.post(
        "/v1/chat/completions", headers={"authorization": f"Bearer {key}", **headers},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "temperature": 0},
    )
    return response.status_code, {k: v for k, v in response.headers.items() if k.startswith("x-gateway-cache")}


async def test_policy_cache_semantic_opts_in_and_exact_keeps_out(app_factory: Start) -> None:
    gw, upstream = await start_policy_gateway(app_factory)
    sem, exact = {"x-team": "sem"}, {"x-team": "exact"}
    assert (await ask(gw, FIRST, **sem))[1] == {"x-gateway-cache": "miss"}
    status, headers = await ask(gw, PARAPHRASE, **sem)
    assert status == 200 and headers["x-gateway-cache"] == "semantic-hit"
    # the same prompts under the exact-only rule, from tenant B (whose scopes are empty)
    assert (await ask(gw, FIRST, KEY_B, **exact))[1] == {"x-gateway-cache": "miss"}
    assert (await ask(gw, PARAPHRASE, KEY_B, **exact))[1] == {"x-gateway-cache": "miss"}
    # a request asking for semantic does not override the operator's `cache: exact`
    assert (await ask(gw, PARAPHRASE + "?", KEY_B, **exact, **{"x-gateway-cache": "semantic"}))[1] == {
        "x-gateway-cache": "miss"}
    # `cache: false`: not even looked up
    assert (await ask(gw, FIRST, **{"x-team": "never", "x-gateway-cache": "semantic"}))[1] == {
        "x-gateway-cache": "bypass"}
    assert len(upstream.calls) == 5
    assert gw.metric("slm_gateway_semantic_cache_hits_total") == 1.0


async def test_responses_requests_index_and_hit_like_chat_requests(app_factory: Start) -> None:
    """`/v1/responses` answers through the chat path: its miss is indexed once the answer is sent (the chat
    answer's `after_send` carried to the Responses answer), complete or streamed."""
    gw, upstream = await start_policy_gateway(app_factory, default=True)
    auth = {"authorization": f"Bearer {KEY_A}"}

    async def responses(text: str, **extra: Any) -> str:
        body = {"model": "gpt-4o-mini", "input": text, "temperature": 0, **extra}
        response = await gw.client.post("/v1/responses", headers=auth, json=body)
        assert response.status_code == 200
        return response.headers["x-gateway-cache"]

    assert await responses(FIRST) == "miss"
    assert await responses(PARAPHRASE) == "semantic-hit"
    assert await responses("How many legs does a spider have?", stream=True) == "miss"
    assert await responses("how many legs do spiders have?", stream=True) == "semantic-hit"
    assert len(upstream.calls) == 2


async def test_listed_tenants_get_semantic_lookups_by_default(app_factory: Start) -> None:
    gw, upstream = await start_policy_gateway(app_factory, tenants=[tenant_of(KEY_B)])
    for key in (KEY_A, KEY_B):
        await ask(gw, FIRST, key)
    assert (await ask(gw, PARAPHRASE, KEY_A))[1] == {"x-gateway-cache": "miss"}  # A is not listed
    assert (await ask(gw, PARAPHRASE, KEY_B))[1]["x-gateway-cache"] == "semantic-hit"
    assert len(upstream.calls) == 3


async def test_admin_purge_of_the_in_process_cache(app_factory: Start) -> None:
    gw, upstream = await start_policy_gateway(app_factory, default=True)
    await ask(gw, FIRST, KEY_A)
    await ask(gw, FIRST, KEY_B)
    assert (await ask(gw, PARAPHRASE, KEY_A))[1]["x-gateway-cache"] == "semantic-hit"
    response = await gw.client.post("/admin/cache/purge", json={"api_key": KEY_A},
                                    headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    assert response.json() == {"object": "cache.purge", "tenant": tenant_of(KEY_A), "keys_removed": 1,
                               "semantic_scopes_removed": 1}
    assert (await ask(gw, PARAPHRASE, KEY_A))[1] == {"x-gateway-cache": "miss"}
    assert (await ask(gw, PARAPHRASE, KEY_B))[1]["x-gateway-cache"] == "semantic-hit"  # B's answers stay
    bad = await gw.client.post("/admin/cache/purge", content=b"[1]", headers={"authorization": f"Bearer {ADMIN}"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert len(upstream.calls) == 3


class SlowEmbedder:
    """The bundled embedder behind a gate: `embed` blocks until the test opens it (a stuck embedder)."""

    def __init__(self, inner: WordLlamaEmbedder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.gate = threading.Event()

    def embed(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(30)
        return self.inner.embed(texts)


async def test_a_stuck_embedder_is_a_miss_and_the_event_loop_runs_on() -> None:
    """A prompt longer than `INLINE_CHARS` is embedded in the worker thread: a stuck embedding costs the deadline."""
    settings = load_settings(environ={}, overrides={"cache": {"semantic": {"enabled": True, "default": True,
                                                                          "deadline_seconds": 0.05}}})
    upstream = FakeBackend("upstream", reply="Paris.")
    metrics = GatewayMetrics()
    embedder = SlowEmbedder(WordLlamaEmbedder())
    tiers = Tiers(local=None, upstream=upstream, upstream_default_model="gpt-4o-mini", local_model_name="local")
    layer = build_cache_layer(settings.cache, Dispatcher(tiers), metrics, embedder)
    await layer.start()
    ticks = 0

    async def ticker() -> None:  # counts while the lookup waits: the embedder is not blocking the loop
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(ticker())
    try:
        ex = Exchange("r1", {}, 0.0)
        long_prompt = "Summarise the history of France, " + "century by century, " * 20  # > INLINE_CHARS
        assert len(long_prompt) > INLINE_CHARS
        body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": long_prompt}]}
        # a row of the prompt's guard classes in its scope: the lookup gets as far as embedding it
        scoped = scope_of_request(tenant_of_request("anonymous", {}, None), "upstream", "gpt-4o-mini", body)
        assert not isinstance(scoped, str) and layer.semantic is not None
        await layer.semantic.semantic.index.add(  # type: ignore[attr-defined]
            scoped[0].scope_id, "other", np.eye(embedder.dim, dtype=np.float32)[0],
            encode_signature(LexicalGuard().signature(long_prompt)), 60_000)
        ex.accept("anonymous", parse_chat_request(json.dumps(body).encode()))
        ex.routed(RouteDecision(tier="upstream", reason="pinned", detail="pinned"), "gpt-4o-mini")
        answer = await layer(ex)
        assert (answer.status, ex.cache, ex.tier) == (200, "miss", "upstream")
        assert ticks > 10
        sample = metrics.registry.get_sample_value
        assert sample("slm_gateway_semantic_cache_rejected_total", {"reason": "timeout"}) == 1.0
    finally:
        embedder.gate.set()
        beat.cancel()
        await layer.close()


@pytest.mark.parametrize("value", ["Semantic", " exact ", "OFF"])
async def test_header_values_are_case_and_space_insensitive(app_factory: Start, value: str) -> None:
    gw, _ = await start_policy_gateway(app_factory)
    status, headers = await ask(gw, FIRST, **{"x-gateway-cache": value})
    assert status == 200 and headers["x-gateway-cache"] == ("bypass" if value == "OFF" else "miss")


async def ask_body(gw: InProcessGateway, text: str, kind: object, **headers: str) -> tuple[int, dict[str, Any]]:
    response = await gw.client.post(
        "/v1/chat/completions", headers={"authorization": f"Bearer {KEY_A}", **headers},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "temperature": 0,
              "x-gateway-cache": kind},
    )
    if response.status_code != 200:
        return response.status_code, response.json()
    return response.status_code, {k: v for k, v in response.headers.items() if k.startswith("x-gateway-cache")}


async def test_the_body_extension_chooses_the_cache_kind_like_the_header(app_factory: Start) -> None:
    gw, upstream = await start_policy_gateway(app_factory)  # no default, no listed tenant: opt-in per request
    assert await ask_body(gw, FIRST, "semantic") == (200, {"x-gateway-cache": "miss"})
    status, headers = await ask_body(gw, PARAPHRASE, "semantic")
    assert status == 200 and headers["x-gateway-cache"] == "semantic-hit"
    assert await ask_body(gw, PARAPHRASE + "!", "exact") == (200, {"x-gateway-cache": "miss"})
    assert await ask_body(gw, FIRST, "off") == (200, {"x-gateway-cache": "bypass"})
    # the field is not part of the key: the first prompt asked without it is an exact hit of the stored answer
    assert (await ask(gw, FIRST))[1] == {"x-gateway-cache": "hit", "x-gateway-cache-tier": "upstream"}
    # the header, when sent, wins over the body field
    assert await ask_body(gw, PARAPHRASE + "?", "semantic", **{"x-gateway-cache": "exact"}) == (
        200, {"x-gateway-cache": "miss"})
    assert len(upstream.calls) == 4
    assert await ask_body(gw, FIRST, "fuzzy") == (400, {"error": {
        "message": "'x-gateway-cache' must be one of \"off\", \"exact\", \"semantic\"; got 'fuzzy'.",
        "type": "invalid_request_error", "param": "x-gateway-cache", "code": "invalid_value"}})
    assert (await ask_body(gw, FIRST, 3))[1]["error"]["message"] == (
        "'x-gateway-cache' must be one of \"off\", \"exact\", \"semantic\"; got '3'.")


def test_the_body_extension_never_reaches_a_tier_nor_the_key() -> None:
    plain = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": FIRST}], "temperature": 0}
    parsed = parse_chat_request(json.dumps({**plain, "x-gateway-cache": "semantic"}).encode())
    assert parsed.cache_request == "semantic" and parsed.raw == plain and parsed.with_model("gpt-4o") == {
        **plain, "model": "gpt-4o"}
    assert parse_chat_request(json.dumps(plain).encode()).cache_request is None


async def test_asking_for_a_cache_kind_consents_to_a_cached_answer(app_factory: Start) -> None:
    gw, upstream = await start_policy_gateway(app_factory)

    async def warm(**headers: str) -> str:
        response = await gw.client.post(
            "/v1/chat/completions", headers={"authorization": f"Bearer {KEY_A}", **headers},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": FIRST}], "temperature": 0.7},
        )
        return response.headers["x-gateway-cache"]

    assert [await warm(), await warm()] == ["bypass", "bypass"]  # temperature 0.7: not cached by default
    assert [await warm(**{"x-gateway-cache": "exact"}), await warm(**{"x-gateway-cache": "exact"})] == ["miss", "hit"]
    assert len(upstream.calls) == 3


async def test_a_slow_index_is_a_timeout_miss_that_keeps_its_embedding() -> None:
    """A cold Redis mirror catches up in the background; the lookup that gave up still indexes its prompt."""
    from gateway.cache.memory import MemoryStore
    from gateway.cache.semantic.cache import SemanticCache, SemanticHit, SemanticSettings
    from gateway.cache.semantic.index import MemoryVectorIndex
    from gateway.cache.semantic.scope import scope_of_request

    class SlowIndex(MemoryVectorIndex):
        slow = True

        async def search(self, scope_id: str, vector: np.ndarray, k: int, classes=None):  # type: ignore[no-untyped-def]
            if self.slow:
                await asyncio.sleep(1)
            return await super().search(scope_id, vector, k, classes)

    embedder = WordLlamaEmbedder()
    index, store = SlowIndex(embedder.dim), MemoryStore(100)
    cache = SemanticCache(embedder, index, store, SemanticSettings(threshold=0.6206, deadline_seconds=0.05))
    raw = {"model": "m", "messages": [{"role": "user", "content": FIRST}]}
    scoped = scope_of_request("t", "upstream", "m", raw)
    assert not isinstance(scoped, str)
    scope, text = scoped
    # a row of the prompt's guard classes (a far vector, no entry): the lookup embeds the prompt and searches
    await index.add(scope.scope_id, "other", np.eye(embedder.dim, dtype=np.float32)[0],
                    encode_signature(LexicalGuard().signature(text)), 60_000)
    miss = await cache.lookup(scope, text)
    assert miss.reason == "timeout" and miss.vector is not None
    await store.set("entry-1", b"answer", 60_000)
    assert await cache.store(scope, text, "entry-1", 60_000, miss) is True
    index.slow = False
    found = await cache.lookup(*scope_of_request("t", "upstream", "m", {  # type: ignore[misc]
        "model": "m", "messages": [{"role": "user", "content": PARAPHRASE}]}))
    assert isinstance(found, SemanticHit) and (found.entry_key, found.value) == ("entry-1", b"answer")


async def test_redis_mirror_sync_interval() -> None:
    """Within `sync_interval_seconds` a replica scans its mirror without a round trip: its own adds are there at
    once, another replica's only after the next catch-up (here: never, within a 60 s interval)."""
    import os

    import redis.asyncio as aioredis

    from gateway.cache.semantic.redis_index import RedisVectorIndex

    url = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = "t:semcache-sync"
    client = aioredis.Redis.from_url(url)
    for key in [k async for k in client.scan_iter(match=f"{prefix}:*")]:
        await client.unlink(key)
    embedder = WordLlamaEmbedder()
    lazy = RedisVectorIndex(url, embedder.dim, prefix=prefix, timeout_seconds=1, sync_interval_seconds=60)
    eager = RedisVectorIndex(url, embedder.dim, prefix=prefix, timeout_seconds=1)
    await lazy.start()
    await eager.start()
    first, second = embedder.embed([FIRST, PARAPHRASE])
    try:
        assert await lazy.search("tns:sem:a", first, 4) == []  # caught up (nothing there)
        await eager.add("tns:sem:a", "by-eager", second, b"g", 60_000)
        assert await lazy.search("tns:sem:a", first, 4) == []  # fresh mirror: no round trip, not seen yet
        await lazy.add("tns:sem:a", "by-lazy", first, b"g", 60_000)
        assert [c.entry_key for c in await lazy.search("tns:sem:a", first, 4)] == ["by-lazy"]  # its own: at once
        assert [c.entry_key for c in await eager.search("tns:sem:a", first, 4)] == ["by-lazy", "by-eager"]
    finally:
        for key in [k async for k in client.scan_iter(match=f"{prefix}:*")]:
            await client.unlink(key)
        await client.aclose()
        await lazy.close()
        await eager.close()


async def test_warm_mirror_and_indexing_never_wait_for_redis() -> None:
    """A warm mirror due for a catch-up is scanned as it is (the catch-up runs behind the lookup: another replica's
    row shows on the lookup after it), and `store_soon` puts the row in this replica's mirror before its XADD
    (the answer is not held up by the index write)."""
    import os

    import redis.asyncio as aioredis

    from gateway.cache.memory import MemoryStore
    from gateway.cache.semantic.cache import SemanticCache, SemanticSettings
    from gateway.cache.semantic.redis_index import RedisVectorIndex
    from gateway.cache.semantic.scope import scope_of_request

    url = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = "t:semcache-warm"
    client = aioredis.Redis.from_url(url)
    for key in [k async for k in client.scan_iter(match=f"{prefix}:*")]:
        await client.unlink(key)
    embedder = WordLlamaEmbedder()
    warm = RedisVectorIndex(url, embedder.dim, prefix=prefix, timeout_seconds=1, sync_interval_seconds=0.01)
    other = RedisVectorIndex(url, embedder.dim, prefix=prefix, timeout_seconds=1)
    cache = SemanticCache(embedder, warm, MemoryStore(100), SemanticSettings(threshold=0.6206, deadline_seconds=1))
    await cache.start()
    await other.start()
    first, second = embedder.embed([FIRST, PARAPHRASE])
    scoped = scope_of_request("t", "upstream", "m", {"model": "m", "messages": [{"role": "user", "content": FIRST}]})
    assert not isinstance(scoped, str)
    scope, text = scoped
    try:
        assert await warm.search(scope.scope_id, first, 4) == []  # cold: waits for its first catch-up
        await other.add(scope.scope_id, "by-other", second, b"g", 60_000)
        await asyncio.sleep(0.02)  # past the interval: the next lookup starts a catch-up but does not wait for it
        assert await warm.search(scope.scope_id, first, 4) == []
        mirror = warm._mirrors[scope.scope_id]
        assert mirror.syncing is not None and not mirror.syncing.done()
        await mirror.syncing
        assert [c.entry_key for c in await warm.search(scope.scope_id, second, 4)] == ["by-other"]
        task = cache.store_soon(scope, text, "by-warm", 60_000)
        await asyncio.sleep(0)  # the task's first step: the row is in the mirror, the XADD under way
        assert [c.entry_key for c in mirror.matrix.search(first, 4, 0.0)][0] == "by-warm"
        assert not task.done()
        assert await task is True
        assert await client.xlen(warm.key(scope.scope_id)) == 2
        assert cache._indexing == set()
    finally:
        for key in [k async for k in client.scan_iter(match=f"{prefix}:*")]:
            await client.unlink(key)
        await client.aclose()
        await cache.close()
        await other.close()


async def test_a_tenant_header_subdivides_semantic_scopes_too(app_factory: Start) -> None:
    """`cache.tenant_header` narrows the caller's namespace: sub-tenants of one key never share a semantic answer,
    and the header cannot reach another key's scopes."""
    upstream = FakeBackend("upstream", reply="Paris.")
    settings = config(default=True)
    settings["cache"]["tenant_header"] = "x-team-id"
    gw = await app_factory(upstream=upstream, config=settings, router=PolicyRouter(parse_policy(POLICY, "t.yaml"), None))
    red, blue = {"x-team-id": "red"}, {"x-team-id": "blue"}
    assert (await ask(gw, FIRST, KEY_A, **red))[1] == {"x-gateway-cache": "miss"}
    assert (await ask(gw, PARAPHRASE, KEY_A, **blue))[1] == {"x-gateway-cache": "miss"}  # another sub-tenant
    assert (await ask(gw, PARAPHRASE + "!", KEY_A))[1] == {"x-gateway-cache": "miss"}  # the key itself, no header
    assert (await ask(gw, PARAPHRASE + "?", KEY_B, **red))[1] == {"x-gateway-cache": "miss"}  # another key, same header
    status, headers = await ask(gw, PARAPHRASE + " ", KEY_A, **red)
    assert status == 200 and headers["x-gateway-cache"] == "semantic-hit"
    assert len(upstream.calls) == 4
    assert gw.metric("slm_gateway_semantic_cache_rejected_total", reason="empty") == 4.0


async def test_the_purge_endpoint_is_disabled_without_an_admin_key(app_factory: Start) -> None:
    """Tenant keys but no `admin_api_keys`: nobody may purge (a tenant key never can; see README for open gateways)."""
    gw = await app_factory(upstream=FakeBackend("upstream"), config={
        "api_keys": [KEY_A], "cache": {"semantic": {"enabled": True}}})
    response = await gw.client.post("/admin/cache/purge", json={"api_key": KEY_A},
                                    headers={"authorization": f"Bearer {KEY_A}"})
    assert response.status_code == 403
    assert response.json()["error"] == {
        "message": "Admin endpoints are disabled: this gateway has no admin key (admin_api_keys).",
        "type": "permission_error", "param": None, "code": "admin_disabled"}

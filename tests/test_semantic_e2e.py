"""The semantic cache through a running gateway: `slm-gateway serve` subprocesses on a REAL Redis (DB 15 by default,
flushed at start; `SLM_TEST_REDIS_URL` overrides), the fake upstream (it answers "fake answer to: <prompt>") and
the official `openai` SDK over HTTP; the similarities expected are computed with the same bundled embedder."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.auth import tenant_of
from gateway.cache.keys import tenant_namespace
from gateway.cache.semantic.guard import CLASSES, LexicalGuard
from gateway.cache.semantic.index import ScopeMatrix
from gateway.devtools.process import LOOPBACK, run_fake_upstream
from gateway.embedding import WordLlamaEmbedder
from tests.conftest import RunningGateway, run_gateway, flushed_redis
from tests.test_cache_redis_outage import OwnRedis, own_redis  # noqa: F401 (a fixture: a throwaway redis-server)

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY_A, KEY_B, KEY_C = "sk-sem-tenant-a", "sk-sem-tenant-b", "sk-sem-tenant-c"
ADMIN = "sk-sem-admin"
PREFIX = "t:semcache"
PIN_UPSTREAM = {"x-gateway-route": "upstream"}
PRICE_IN, PRICE_OUT = 0.15, 0.6  # gpt-4o-mini, the shipped default prices (dollars per million tokens)


# -- helpers -------------------------------------------------------------------------------------------------------
def sdk(gw: RunningGateway, key: str = KEY_A, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.base_url, api_key=key, max_retries=0, timeout=60, default_headers={**PIN_UPSTREAM, **headers}
    )


def new_scope() -> int:
    """A seed of its own for one test: the seed is a generation parameter, so the test's prompts are in a semantic
    scope of their own (no candidate of another test is ever compared)."""
    return random.randrange(1, 2**31)


def ask(client: openai.OpenAI, text: str, seed: int, **extra: Any) -> tuple[httpx.Headers, str, Any]:
    """One non-streamed request: (response headers, answer text, usage)."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], temperature=0, seed=seed, **extra
    )
    completion = raw.parse()
    return raw.headers, completion.choices[0].message.content or "", completion.usage


def calls(upstream: str) -> int:
    return int(httpx.get(upstream.removesuffix("/v1") + "/_fake/stats").json()["chat_completions"])


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{gw.root}/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def similarity(embedder: WordLlamaEmbedder, asked: str, stored: str) -> str:
    """The `x-gateway-cache-similarity` value the gateway must send for prompt `asked` after `stored`, computed
    the way its index scores a stored row (`ScopeMatrix`)."""
    va, vb = embedder.embed([asked, stored])
    matrix = ScopeMatrix(embedder.dim, 1)
    matrix.add("stored", vb, b"", expires=float("inf"))
    [candidate] = matrix.search(va, 1, now=0.0)
    return f"{candidate.similarity:.4f}"


def purge(gw: RunningGateway, body: dict[str, Any], key: str | None = ADMIN) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{gw.root}/admin/cache/purge", json=body, headers=headers, timeout=30)


def namespace_keys(r: redis.Redis, key: str) -> list[bytes]:
    return sorted(r.scan_iter(match=f"{PREFIX}:{tenant_namespace(tenant_of(key))}:*", count=1000))


def settle_locks(r: redis.Redis) -> None:
    """Wait until the background unlocks of finished requests are done (they run right after the answer)."""
    deadline = time.monotonic() + 5
    while any(k.endswith(b":lock") for k in r.scan_iter(match=f"{PREFIX}:*", count=1000)):
        assert time.monotonic() < deadline, "locks were never released"
        time.sleep(0.02)


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r() -> Iterator[redis.Redis]:
    with flushed_redis(REDIS_URL) as client:
        yield client


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with run_fake_upstream() as url:
        yield url


@pytest.fixture(scope="module")
def gw(r: redis.Redis, upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """Semantic on by default for tenant A only; B and C opt in per request."""
    config = {
        "api_keys": [KEY_A, KEY_B, KEY_C],
        "admin_api_keys": [ADMIN],
        "upstream": {"url": upstream},
        "cache": {
            "key_prefix": PREFIX,
            "timeout_seconds": 1.0,  # generous: a slow moment of this busy machine must not turn a hit into a miss
            "semantic": {"enabled": True, "tenants": [tenant_of(KEY_A)], "deadline_seconds": 2.0},
        },
    }
    with run_gateway("--redis-url", REDIS_URL, config=config, tmp_dir=tmp_path_factory.mktemp("sem")) as g:
        yield g


# -- hits and near misses ------------------------------------------------------------------------------------------
def test_paraphrase_is_a_semantic_hit(gw: RunningGateway, upstream: str, embedder: WordLlamaEmbedder) -> None:
    first, paraphrase, seed = "What is the capital city of France?", "what's the capital of France?", new_scope()
    client = sdk(gw)
    hits = metric(gw, "slm_gateway_semantic_cache_hits_total")
    savings = metric(gw, "slm_gateway_semantic_cache_savings_dollars_total")
    headers, original, usage = ask(client, first, seed)
    assert headers["x-gateway-cache"] == "miss" and original == f"fake answer to: {first}"
    before = calls(upstream)
    headers, text, replayed_usage = ask(client, paraphrase, seed)
    assert calls(upstream) == before  # answered from the cache
    assert headers["x-gateway-cache"] == "semantic-hit"
    assert headers["x-gateway-cache-similarity"] == similarity(embedder, paraphrase, first)
    assert headers["x-gateway-route"] == "cache" and headers["x-gateway-cache-tier"] == "upstream"
    assert headers["x-gateway-model"] == "gpt-4o-mini"
    assert text == original
    assert (replayed_usage.prompt_tokens, replayed_usage.completion_tokens) == (
        usage.prompt_tokens, usage.completion_tokens)
    assert metric(gw, "slm_gateway_semantic_cache_hits_total") == hits + 1
    saved = (usage.prompt_tokens * PRICE_IN + usage.completion_tokens * PRICE_OUT) / 1e6
    assert metric(gw, "slm_gateway_semantic_cache_savings_dollars_total") == pytest.approx(savings + saved, rel=1e-9)
    # the semantic answer is not stored again under the paraphrase's key: a repeat is a semantic hit again
    headers, text, _ = ask(client, paraphrase, seed)
    assert (headers["x-gateway-cache"], text) == ("semantic-hit", original)
    # another seed is another scope: no semantic candidate there
    assert ask(client, paraphrase, seed + 1)[0]["x-gateway-cache"] == "miss"


@pytest.mark.parametrize(
    ("first", "near_miss", "check"),
    [
        ("Convert 5 miles to kilometres", "Convert 50 miles to kilometres", "numbers"),
        ("How do I turn on dark mode?", "How do I turn off dark mode?", "polarity"),
        ("Explain how a hash map works", "Explain how a hash map does not work", "negation"),
    ],
)
def test_near_miss_is_not_served(
    gw: RunningGateway, upstream: str, embedder: WordLlamaEmbedder, first: str, near_miss: str, check: str
) -> None:
    assert float(similarity(embedder, first, near_miss)) >= 0.95  # closer than most true paraphrases
    client, seed = sdk(gw), new_scope()
    # each differs from the stored prompt in one of the guard's exact classes: a `classes` miss, decided from the
    # scope's per-class row counts before embedding or scanning (no candidate to refuse)
    signatures = [LexicalGuard().signature(text).classes[CLASSES.index(check)] for text in (first, near_miss)]
    assert signatures[0] != signatures[1]
    classes = metric(gw, "slm_gateway_semantic_cache_rejected_total", reason="classes")
    refused = metric(gw, "slm_gateway_semantic_cache_guard_refusals_total", check=check)
    assert ask(client, first, seed)[0]["x-gateway-cache"] == "miss"
    before = calls(upstream)
    headers, text, _ = ask(client, near_miss, seed)
    assert headers["x-gateway-cache"] == "miss" and "x-gateway-cache-similarity" not in headers
    assert text == f"fake answer to: {near_miss}"
    assert calls(upstream) == before + 1
    assert metric(gw, "slm_gateway_semantic_cache_rejected_total", reason="classes") == classes + 1
    assert metric(gw, "slm_gateway_semantic_cache_guard_refusals_total", check=check) == refused


def stream(client: openai.OpenAI, text: str, seed: int, **extra: Any) -> tuple[httpx.Headers, str, list[Any]]:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], temperature=0, seed=seed, stream=True,
        **extra,
    ) as response:
        chunks = list(response.parse())
        headers = response.headers
    return headers, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_streamed_paraphrase_is_replayed_as_a_stream(gw: RunningGateway, upstream: str) -> None:
    first, paraphrase, seed = "How do I reverse a list in Python?", "How can I reverse a Python list?", new_scope()
    client = sdk(gw)
    _, original, usage = ask(client, first, seed)
    before = calls(upstream)
    headers, text, chunks = stream(client, paraphrase, seed, stream_options={"include_usage": True})
    assert calls(upstream) == before
    assert headers["x-gateway-cache"] == "semantic-hit" and headers["content-type"].startswith("text/event-stream")
    assert text == original
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        usage.prompt_tokens, usage.completion_tokens)


def test_streamed_miss_is_indexed_when_it_completes(gw: RunningGateway) -> None:
    first, paraphrase, seed = "Why is the sky blue?", "Why does the sky look blue?", new_scope()
    client = sdk(gw)
    headers, streamed, _ = stream(client, first, seed)
    assert headers["x-gateway-cache"] == "miss" and streamed == f"fake answer to: {first}"
    headers, text, _ = ask(client, paraphrase, seed)
    assert (headers["x-gateway-cache"], text) == ("semantic-hit", streamed)


# -- who gets semantic answers -------------------------------------------------------------------------------------
def test_tenants_never_share_semantic_answers(gw: RunningGateway, upstream: str, r: redis.Redis) -> None:
    first, paraphrase, seed = "How do I reverse a list in Python?", "How can I reverse a Python list?", new_scope()
    a, b = sdk(gw, KEY_A), sdk(gw, KEY_B, **{"x-gateway-cache": "semantic"})
    empty = metric(gw, "slm_gateway_semantic_cache_rejected_total", reason="empty")
    ask(a, first, seed)
    assert ask(a, paraphrase, seed)[0]["x-gateway-cache"] == "semantic-hit"  # A's own tenant may reuse it
    before = calls(upstream)
    headers, answer, _ = ask(b, paraphrase, seed)  # tenant B, same prompts, same scope otherwise: never A's answer
    assert (headers["x-gateway-cache"], answer) == ("miss", f"fake answer to: {paraphrase}")
    headers, answer, _ = ask(b, first, seed)
    assert (headers["x-gateway-cache"], answer) == ("semantic-hit", f"fake answer to: {paraphrase}")  # B's own
    assert calls(upstream) == before + 1
    assert metric(gw, "slm_gateway_semantic_cache_rejected_total", reason="empty") == empty + 2  # A's, B's first
    streams = {key: [k for k in namespace_keys(r, key) if b":sem:" in k] for key in (KEY_A, KEY_B)}
    assert len(streams[KEY_A]) >= 1 and len(streams[KEY_B]) == 1
    assert r.xlen(streams[KEY_B][0]) == 1  # only B's own prompt is in B's scope


def test_request_header_chooses_the_cache_kind(gw: RunningGateway) -> None:
    first, paraphrase, seed = "How many legs does a spider have?", "How many legs do spiders have?", new_scope()
    a, b = sdk(gw, KEY_A), sdk(gw, KEY_B)
    ask(a, first, seed)
    assert ask(sdk(gw, KEY_A, **{"x-gateway-cache": "exact"}), paraphrase, seed)[0]["x-gateway-cache"] == "miss"
    assert ask(sdk(gw, KEY_A, **{"x-gateway-cache": "off"}), first, seed)[0]["x-gateway-cache"] == "bypass"
    ask(b, first, seed)  # tenant B is not listed: exact only unless it asks
    assert ask(b, paraphrase, seed)[0]["x-gateway-cache"] == "miss"
    bad = httpx.post(
        f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {KEY_A}", "x-gateway-cache": "fuzzy"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": first}]}, timeout=30,
    )
    assert bad.status_code == 400
    assert bad.json() == {"error": {
        "message": "Header 'x-gateway-cache' must be one of off, exact, semantic; got 'fuzzy'.",
        "type": "invalid_request_error", "param": "x-gateway-cache", "code": "invalid_cache_header"}}


# -- purge ---------------------------------------------------------------------------------------------------------
def test_admin_purge_forgets_one_tenant(gw: RunningGateway, upstream: str, r: redis.Redis) -> None:
    first, paraphrase = "What is the tallest mountain on Earth?", "Which mountain is the tallest on Earth?"
    seed = new_scope()
    c = sdk(gw, KEY_C, **{"x-gateway-cache": "semantic"})
    ask(c, first, seed)
    assert ask(c, paraphrase, seed)[0]["x-gateway-cache"] == "semantic-hit"
    ask(sdk(gw, KEY_A), first, seed)  # another tenant's entry, which the purge keeps
    settle_locks(r)
    assert len(namespace_keys(r, KEY_C)) == 2  # C's entry and C's semantic scope
    kept = namespace_keys(r, KEY_A)

    denied = purge(gw, {"api_key": KEY_C}, key=KEY_C)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_key_required"
    assert purge(gw, {"api_key": KEY_C}, key=None).status_code == 401
    invalid = purge(gw, {"tenant": "t-x", "api_key": KEY_C})
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "tenant"

    done = purge(gw, {"api_key": KEY_C})
    assert done.status_code == 200
    assert done.json() == {"object": "cache.purge", "tenant": tenant_of(KEY_C), "keys_removed": 1,
                           "semantic_scopes_removed": 1}
    assert namespace_keys(r, KEY_C) == [] and namespace_keys(r, KEY_A) == kept
    before = calls(upstream)
    headers, text, _ = ask(c, paraphrase, seed)
    assert (headers["x-gateway-cache"], text, calls(upstream)) == ("miss", f"fake answer to: {paraphrase}", before + 1)


# -- Redis outage --------------------------------------------------------------------------------------------------
def test_redis_outage_turns_semantic_lookups_into_misses(own_redis: OwnRedis, upstream: str, tmp_path: Path) -> None:
    config = {
        "api_keys": [KEY_A], "admin_api_keys": [ADMIN], "upstream": {"url": upstream},
        # generous time limits: before the outage, a slow moment of this busy machine must not make a miss
        "cache": {"key_prefix": "outage", "timeout_seconds": 1.0,
                  "semantic": {"enabled": True, "default": True, "deadline_seconds": 2.0}},
    }
    first, paraphrase, seed = "What is the capital city of Italy?", "what's the capital of Italy?", new_scope()
    with run_gateway("--redis-url", f"redis://{LOOPBACK}:{own_redis.port}/0", config=config, tmp_dir=tmp_path) as gw:
        client = sdk(gw)
        ask(client, "Warm-up: open the connections to Redis", seed + 1)  # a cold pool's first connects may overrun
        ask(client, first, seed)
        assert ask(client, paraphrase, seed)[0]["x-gateway-cache"] == "semantic-hit"

        def failed() -> float:
            return sum(metric(gw, "slm_gateway_semantic_cache_rejected_total", reason=why) for why in ("error", "timeout"))

        before = failed()
        own_redis.kill()
        headers, text, _ = ask(client, paraphrase, seed)
        assert (headers["x-gateway-cache"], text) == ("miss", f"fake answer to: {paraphrase}")
        headers, text, chunks = stream(client, paraphrase, seed)
        assert (headers["x-gateway-cache"], text) == ("miss", f"fake answer to: {paraphrase}")
        headers, text, _ = ask(client, first, seed)
        assert (headers["x-gateway-cache"], text) == ("miss", f"fake answer to: {first}")
        assert failed() == before + 3  # each of the three lookups failed open
        down = purge(gw, {"api_key": KEY_A})
        assert down.status_code == 503 and down.json()["error"]["code"] == "cache_unavailable"


# -- the stream of a hit, byte for byte; requests a semantic answer must never serve ------------------------------
def sse_events(body: bytes) -> list[bytes]:
    """The `data:` payloads of an SSE body, checking its framing: every event one `data: ` line, blank-line ended."""
    assert body.endswith(b"\n\n")
    events = body[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events), body
    return [e.removeprefix(b"data: ") for e in events]


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_streamed_hit_is_valid_sse_with_usage_when_asked(
    gw: RunningGateway, upstream: str, embedder: WordLlamaEmbedder, include_usage: bool
) -> None:
    first, paraphrase, seed = "How do I reverse a list in Python?", "How can I reverse a Python list?", new_scope()
    _, original, usage = ask(sdk(gw), first, seed)
    before = calls(upstream)
    savings = metric(gw, "slm_gateway_semantic_cache_savings_dollars_total")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": paraphrase}], "temperature": 0,
            "seed": seed, "stream": True, **({"stream_options": {"include_usage": True}} if include_usage else {})}
    response = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {KEY_A}", **PIN_UPSTREAM})
    assert (response.status_code, calls(upstream)) == (200, before)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-gateway-cache"] == "semantic-hit"
    assert response.headers["x-gateway-cache-similarity"] == similarity(embedder, paraphrase, first)
    *chunks, done = sse_events(response.content)
    assert done == b"[DONE]"
    decoded = [json.loads(c) for c in chunks]
    assert {(c["id"], c["object"], c["model"]) for c in decoded} == {
        (decoded[0]["id"], "chat.completion.chunk", "gpt-4o-mini")}
    choices = [c["choices"][0] for c in decoded if c["choices"]]
    assert [ch["delta"] for ch in choices] == [{"role": "assistant", "content": ""}, {"content": original}, {}]
    assert [ch["finish_reason"] for ch in choices] == [None, None, "stop"]
    if include_usage:
        assert len(decoded) == 4 and [c["usage"] for c in decoded[:3]] == [None, None, None]
        assert decoded[3]["choices"] == [] and decoded[3]["usage"] == {
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}
    else:
        assert len(decoded) == 3 and not any("usage" in c for c in decoded)
    saved = (usage.prompt_tokens * PRICE_IN + usage.completion_tokens * PRICE_OUT) / 1e6  # a streamed hit saves too
    assert metric(gw, "slm_gateway_semantic_cache_savings_dollars_total") == pytest.approx(savings + saved, rel=1e-9)


def test_n_above_one_and_other_tools_are_never_served_semantically(gw: RunningGateway, upstream: str) -> None:
    first, paraphrase, seed = "What is the capital city of Spain?", "what's the capital of Spain?", new_scope()
    client = sdk(gw, KEY_B, **{"x-gateway-cache": "semantic"})
    empty = metric(gw, "slm_gateway_semantic_cache_rejected_total", reason="empty")
    ask(client, first, seed)
    before = calls(upstream)
    # n > 1: an entry holds one choice, so not cacheable at all, even when asked for (never looked up nor stored)
    headers, _, _ = ask(client, paraphrase, seed, n=2)
    assert (headers["x-gateway-cache"], "x-gateway-cache-similarity" in headers) == ("bypass", False)
    # tools are a generation parameter: another scope; the fake upstream answers a tool call there, which is
    # never stored, so never indexed: the paraphrase with the same tools finds nothing either
    tool = {"type": "function", "function": {"name": "lookup_capital", "parameters": {"type": "object",
                                                                                      "properties": {}}}}
    for text in (first, paraphrase):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}], temperature=0, seed=seed, tools=[tool])
        choice = raw.parse().choices[0]
        assert (raw.headers["x-gateway-cache"], choice.finish_reason, choice.message.tool_calls[0].function.name) == (
            "miss", "tool_calls", "lookup_capital")
    for extra in ({"response_format": {"type": "json_object"}}, {"stop": ["\n"]}, {"logit_bias": {"50256": -100}}):
        headers, text, _ = ask(client, paraphrase, seed, **extra)
        assert (headers["x-gateway-cache"], text) == ("miss", f"fake answer to: {paraphrase}")
    assert calls(upstream) == before + 6
    # the first prompt; the tools' scope twice (its tool call was not indexed); 3 other scopes once each
    assert metric(gw, "slm_gateway_semantic_cache_rejected_total", reason="empty") == empty + 6
    assert ask(client, paraphrase, seed)[0]["x-gateway-cache"] == "semantic-hit"  # the plain one still hits


def test_a_frozen_redis_mid_traffic_gives_misses_within_the_deadline(
    own_redis: OwnRedis, upstream: str, tmp_path: Path
) -> None:
    """Redis accepts connections and never answers (SIGSTOP): every lookup is a miss within the store's timeout,
    never an error; after SIGCONT the paraphrase is a semantic hit again."""
    config = {
        "api_keys": [KEY_A], "upstream": {"url": upstream},
        "cache": {"key_prefix": "frozen", "timeout_seconds": 0.25,
                  "semantic": {"enabled": True, "default": True, "deadline_seconds": 0.5}},
    }
    first, paraphrase, seed = "What is the capital city of Italy?", "what's the capital of Italy?", new_scope()
    with run_gateway("--redis-url", f"redis://{LOOPBACK}:{own_redis.port}/0", config=config, tmp_dir=tmp_path) as gw:
        client = sdk(gw)

        def hit_again() -> None:  # a slow moment of this busy machine may overrun 0.25 s: ask until it hits
            deadline = time.monotonic() + 20
            while ask(client, paraphrase, seed)[0]["x-gateway-cache"] != "semantic-hit":
                assert time.monotonic() < deadline, "no semantic hit"
                time.sleep(0.1)

        ask(client, first, seed)
        hit_again()
        before = metric(gw, "slm_gateway_semantic_cache_hits_total")
        own_redis.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            answers = [ask(client, paraphrase, seed)[:2] for _ in range(5)]
            elapsed = time.monotonic() - started
        finally:
            own_redis.signal(signal.SIGCONT)
        assert [(h["x-gateway-cache"], t) for h, t in answers] == [("miss", f"fake answer to: {paraphrase}")] * 5
        assert elapsed < 10, f"5 requests took {elapsed:.1f}s with Redis frozen"
        assert metric(gw, "slm_gateway_semantic_cache_hits_total") == before
        hit_again()


def test_redis_killed_while_semantic_requests_are_in_flight(own_redis: OwnRedis, upstream: str, tmp_path: Path) -> None:
    """40 paraphrase requests, 8 at a time, Redis killed while the third 8 are in flight: each is answered 200, a
    semantic hit with a stored answer or a miss with the upstream's answer to it (streamed or not); after the kill,
    only misses."""
    import asyncio

    config = {
        "api_keys": [KEY_A], "upstream": {"url": upstream},
        # generous time limits: before the outage, a slow moment of this busy machine must not make a miss
        "cache": {"key_prefix": "inflight", "timeout_seconds": 1.0,
                  "semantic": {"enabled": True, "default": True, "deadline_seconds": 2.0}},
    }
    first, paraphrase, seed = "What is the capital city of Italy?", "what's the capital of Italy?", new_scope()
    with run_gateway("--redis-url", f"redis://{LOOPBACK}:{own_redis.port}/0", config=config, tmp_dir=tmp_path) as gw:
        client = sdk(gw)
        _, original, _ = ask(client, first, seed)
        deadline = time.monotonic() + 20
        while ask(client, paraphrase, seed)[0]["x-gateway-cache"] != "semantic-hit":  # a busy moment may overrun
            assert time.monotonic() < deadline, "no semantic hit before the outage"

        async def traffic(texts: list[str], kill_in_batch: int | None = None) -> list[httpx.Response]:
            """8 requests at a time; Redis is killed while batch `kill_in_batch` is in flight."""
            headers = {"authorization": f"Bearer {KEY_A}", **PIN_UPSTREAM}
            async with httpx.AsyncClient(timeout=30) as http:
                out: list[httpx.Response] = []
                for batch, start in enumerate(range(0, len(texts), 8)):
                    requests = [
                        http.post(f"{gw.base_url}/chat/completions", headers=headers, json={
                            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
                            "temperature": 0, "seed": seed, "stream": i % 2 == 1})
                        for i, text in enumerate(texts[start:start + 8], start)]
                    if batch == kill_in_batch:
                        *responses, _ = await asyncio.gather(*requests, asyncio.to_thread(own_redis.kill))
                    else:
                        responses = await asyncio.gather(*requests)
                    out += responses
                return out

        def outcome(response: httpx.Response, text: str) -> str:
            assert response.status_code == 200, response.text
            kind = response.headers["x-gateway-cache"]
            # a hit's answer is the stored one's, or another variant's that missed (a lookup over its deadline) and
            # was stored and indexed before Redis died
            expected = {original, *answers} if kind == "semantic-hit" else {f"fake answer to: {text}"}
            if response.headers["content-type"].startswith("text/event-stream"):
                *chunks, done = sse_events(response.content)
                assert done == b"[DONE]"
                body = "".join(c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, chunks)
                               if c["choices"])
            else:
                body = response.json()["choices"][0]["message"]["content"]
            assert body in expected, (kind, body)
            return kind

        texts = [paraphrase + " " * i for i in range(1, 41)]  # another exact key each, the same embedding
        answers = {f"fake answer to: {t}" for t in texts}
        kinds = [outcome(r, t) for r, t in zip(asyncio.run(traffic(texts, kill_in_batch=2)), texts)]
        assert kinds[:16] == ["semantic-hit"] * 16, kinds  # before the outage
        assert len(kinds) == 40 and set(kinds[16:24]) <= {"semantic-hit", "miss"}  # in flight when Redis died
        assert kinds[24:] == ["miss"] * 16, kinds

"""The response cache end to end: `slm-gateway serve` subprocesses on a REAL Redis (DB 15 by default, flushed
at start; `SLM_TEST_REDIS_URL` overrides), the fake upstream, and the official `openai` SDK over HTTP."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.devtools.process import run_fake_upstream
from tests.conftest import BUNDLED_MODEL_ID, RunningGateway, run_gateway, flushed_redis

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY_A, KEY_B = "sk-tenant-a", "sk-tenant-b"
PIN_UPSTREAM = {"x-gateway-route": "upstream"}


def prompt(tag: str = "") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{tag} question {uuid.uuid4().hex}"}]


def stats(upstream: str) -> dict[str, Any]:
    return httpx.get(upstream.removesuffix("/v1") + "/_fake/stats").json()


def calls(upstream: str) -> int:
    return int(stats(upstream)["chat_completions"])


def sdk(gw: RunningGateway, key: str = KEY_A, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.base_url, api_key=key, max_retries=0, timeout=60, default_headers={**PIN_UPSTREAM, **headers}
    )


def ask(client: openai.OpenAI, messages: list[dict[str, str]], **extra: Any) -> tuple[httpx.Headers, str]:
    """One non-streamed request: (response headers, answer text)."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, **{"temperature": 0, **extra}  # type: ignore[arg-type]
    )
    return raw.headers, raw.parse().choices[0].message.content or ""


def ask_stream(client: openai.OpenAI, messages: list[dict[str, str]], **extra: Any) -> tuple[httpx.Headers, str, list[Any]]:
    """One streamed request: (response headers, joined content, chunks)."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=messages, stream=True, **{"temperature": 0, **extra}  # type: ignore[arg-type]
    ) as response:
        chunks = list(response.parse())
        headers = response.headers
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return headers, text, chunks


def entries(r: redis.Redis, prefix: str) -> list[bytes]:
    return [k for k in r.scan_iter(match=f"{prefix}:*", count=1000) if not k.endswith(b":lock")]


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{gw.root}/metrics").text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r() -> Iterator[redis.Redis]:
    with flushed_redis(REDIS_URL) as client:
        yield client


@pytest.fixture(scope="module")
def fast_upstream() -> Iterator[str]:
    with run_fake_upstream(echo_chars=20000) as url:
        yield url


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    with run_fake_upstream(latency_ms=400, chunk_delay_ms=150, chunks=8) as url:
        yield url


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache-configs")


def _config(upstream: str, prefix: str, **cache: Any) -> dict[str, Any]:
    return {
        "api_keys": [KEY_A, KEY_B],
        "upstream": {"url": upstream},
        "cache": {"key_prefix": prefix, "timeout_seconds": 0.25, **cache},
    }


@pytest.fixture(scope="module")
def gw(r: redis.Redis, fast_upstream: str, config_dir: Path) -> Iterator[RunningGateway]:
    """The main gateway: Redis given with --redis-url."""
    with run_gateway("--redis-url", REDIS_URL, config=_config(fast_upstream, "t:main"), tmp_dir=config_dir) as g:
        yield g


@pytest.fixture(scope="module")
def gw_small(r: redis.Redis, fast_upstream: str, config_dir: Path) -> Iterator[RunningGateway]:
    """One-second TTL, 600-byte entries."""
    config = _config(fast_upstream, "t:small", redis_url=REDIS_URL, ttl_seconds=1, max_entry_bytes=600)
    with run_gateway(config=config, tmp_dir=config_dir) as g:
        yield g


@pytest.fixture(scope="module")
def replicas(r: redis.Redis, slow_upstream: str, config_dir: Path) -> Iterator[tuple[RunningGateway, RunningGateway]]:
    """Two gateways sharing one Redis and prefix, in front of a slow upstream."""
    config = _config(slow_upstream, "t:slow", redis_url=REDIS_URL)
    with run_gateway(config=config, tmp_dir=config_dir) as a, run_gateway(config=config, tmp_dir=config_dir) as b:
        yield a, b


# -- hits, misses, tenants -----------------------------------------------------------------------------------------
def test_miss_then_hit(gw: RunningGateway, fast_upstream: str, r: redis.Redis) -> None:
    client, messages = sdk(gw), prompt("hit")
    before = calls(fast_upstream)
    headers, first = ask(client, messages)
    assert headers["x-gateway-cache"] == "miss" and headers["x-gateway-route"] == "upstream"
    headers, second = ask(client, messages)
    assert headers["x-gateway-cache"] == "hit" and headers["x-gateway-route"] == "cache"
    assert headers["x-gateway-cache-tier"] == "upstream" and headers["x-gateway-model"] == "gpt-4o-mini"
    assert first == second == f"fake answer to: {messages[0]['content']}"
    assert calls(fast_upstream) == before + 1
    ttl = r.pttl(entries(r, "t:main")[0])
    assert 0 < ttl <= 3600 * 1000
    assert metric(gw, "slm_gateway_requests_total", tier="cache") >= 1
    assert metric(gw, "slm_gateway_savings_dollars_total", tier="cache") > 0
    assert metric(gw, "slm_gateway_cache_lookups_total", result="hit") >= 1


def test_tenants_never_hit_each_other(gw: RunningGateway, fast_upstream: str, r: redis.Redis) -> None:
    messages = prompt("tenant")
    before = calls(fast_upstream)
    assert ask(sdk(gw, KEY_A), messages)[0]["x-gateway-cache"] == "miss"
    assert ask(sdk(gw, KEY_B), messages)[0]["x-gateway-cache"] == "miss"
    assert ask(sdk(gw, KEY_B), messages)[0]["x-gateway-cache"] == "hit"
    assert ask(sdk(gw, KEY_A), messages)[0]["x-gateway-cache"] == "hit"
    assert calls(fast_upstream) == before + 2
    namespaces = {k.split(b":")[2] for k in entries(r, "t:main")}
    assert len(namespaces) == 2


def test_nondeterministic_requests_bypass(gw: RunningGateway, fast_upstream: str) -> None:
    client, messages = sdk(gw), prompt("hot")
    before = calls(fast_upstream)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, temperature=0.9)  # type: ignore[arg-type]
        assert raw.headers["x-gateway-cache"] == "bypass"
    assert ask(client, messages, seed=7, temperature=0.9)[0]["x-gateway-cache"] == "miss"  # a seed: deterministic
    assert ask(client, messages, seed=7, temperature=0.9)[0]["x-gateway-cache"] == "hit"
    assert calls(fast_upstream) == before + 3


def test_local_tier_answers_are_cached_with_their_tier(gw: RunningGateway) -> None:
    client = sdk(gw, **{"x-gateway-route": "local"})
    messages = [{"role": "user", "content": f"Say hi. ({uuid.uuid4().hex[:6]})"}]
    headers, first = ask(client, messages, max_tokens=4)
    assert headers["x-gateway-cache"] == "miss" and headers["x-gateway-route"] == "local"
    headers, second = ask(client, messages, max_tokens=4)
    assert headers["x-gateway-cache"] == "hit" and headers["x-gateway-cache-tier"] == "local"
    assert headers["x-gateway-model"] == BUNDLED_MODEL_ID and first == second
    _, streamed, _ = ask_stream(client, messages, max_tokens=4)
    assert streamed == first


# -- streaming -----------------------------------------------------------------------------------------------------
def test_stream_miss_is_stored_and_replayed(gw: RunningGateway, fast_upstream: str) -> None:
    client, messages = sdk(gw), prompt("stream")
    before = calls(fast_upstream)
    headers, original, _ = ask_stream(client, messages)
    assert headers["x-gateway-cache"] == "miss"
    headers, replayed, chunks = ask_stream(client, messages)
    assert headers["x-gateway-cache"] == "hit" and replayed == original
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is None
    _, _, with_usage = ask_stream(client, messages, stream_options={"include_usage": True})
    assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens == len(original.split())
    headers, text = ask(client, messages)  # non-streamed requests share the entry
    assert headers["x-gateway-cache"] == "hit" and text == original
    assert calls(fast_upstream) == before + 1


def test_client_leaving_mid_stream_leaves_no_entry(
    replicas: tuple[RunningGateway, RunningGateway], slow_upstream: str, r: redis.Redis
) -> None:
    gw, _ = replicas
    messages = prompt("leave")
    before = set(entries(r, "t:slow"))
    body = {"model": "gpt-4o-mini", "messages": messages, "temperature": 0, "stream": True}
    headers = {"authorization": f"Bearer {KEY_A}", **PIN_UPSTREAM}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{gw.base_url}/chat/completions", json=body, headers=headers) as response:
            assert response.headers["x-gateway-cache"] == "miss"
            lines = response.iter_lines()
            got = [line for line in (next(lines) for _ in range(4)) if line.startswith("data:")]
            assert got  # a couple of chunks arrived, then the client hangs up
    time.sleep(8 * 0.15 + 1.0)  # longer than the rest of the stream would have taken
    assert set(entries(r, "t:slow")) == before
    assert ask(sdk(gw), messages)[0]["x-gateway-cache"] == "miss"


# -- headers, TTL, size, garbage -----------------------------------------------------------------------------------
def test_no_cache_and_no_store(gw: RunningGateway, fast_upstream: str) -> None:
    messages = prompt("cc")
    before = calls(fast_upstream)
    assert ask(sdk(gw, **{"cache-control": "no-store"}), messages)[0]["x-gateway-cache"] == "miss"
    assert ask(sdk(gw, **{"cache-control": "no-store"}), messages)[0]["x-gateway-cache"] == "miss"  # nothing stored
    assert ask(sdk(gw, **{"cache-control": "no-cache"}), messages)[0]["x-gateway-cache"] == "bypass"  # stored
    assert ask(sdk(gw, **{"cache-control": "no-cache"}), messages)[0]["x-gateway-cache"] == "bypass"
    assert ask(sdk(gw), messages)[0]["x-gateway-cache"] == "hit"
    assert calls(fast_upstream) == before + 4


def test_entries_expire_after_their_ttl(gw_small: RunningGateway, fast_upstream: str, r: redis.Redis) -> None:
    client, messages = sdk(gw_small), prompt("ttl")
    assert ask(client, messages)[0]["x-gateway-cache"] == "miss"
    assert ask(client, messages)[0]["x-gateway-cache"] == "hit"
    assert all(0 < r.pttl(k) <= 1000 for k in entries(r, "t:small"))
    time.sleep(1.3)
    assert ask(client, messages)[0]["x-gateway-cache"] == "miss"


def test_oversize_entries_are_not_stored(gw_small: RunningGateway, fast_upstream: str, r: redis.Redis) -> None:
    client = sdk(gw_small)
    big = [{"role": "user", "content": "x" * 2000 + uuid.uuid4().hex}]
    before = set(entries(r, "t:small"))
    assert ask(client, big)[0]["x-gateway-cache"] == "miss"
    headers, text = ask(client, big)
    assert headers["x-gateway-cache"] == "miss" and len(text) > 2000
    assert set(entries(r, "t:small")) == before


def test_garbage_in_redis_is_a_miss_not_an_error(gw: RunningGateway, r: redis.Redis) -> None:
    client, messages = sdk(gw), prompt("garbage")
    before = set(entries(r, "t:main"))
    ask(client, messages)
    (key,) = set(entries(r, "t:main")) - before
    decode_errors = metric(gw, "slm_gateway_cache_errors_total", operation="decode")
    for garbage in (b"\x00\xffnot an entry", b'{"json": "but not ours"}', b""):
        r.set(key, garbage, px=60_000)
        headers, text = ask(client, messages)
        assert headers["x-gateway-cache"] == "miss" and text.startswith("fake answer to:")
        r.set(key, garbage, px=60_000)
        headers, streamed, _ = ask_stream(client, messages)
        assert headers["x-gateway-cache"] == "miss" and streamed == text
    assert metric(gw, "slm_gateway_cache_errors_total", operation="decode") == decode_errors + 6
    assert ask(client, messages)[0]["x-gateway-cache"] == "hit"  # the last miss rewrote the entry


# -- collapsing ------------------------------------------------------------------------------------------------------
async def _burst(urls: list[str], messages: list[dict[str, str]], n: int, stream_every: int = 3) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {KEY_A}", **PIN_UPSTREAM}
    async with httpx.AsyncClient(timeout=60) as http:
        return await asyncio.gather(
            *(
                http.post(
                    f"{urls[i % len(urls)]}/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": messages, "temperature": 0, "stream": i % stream_every == 1},
                    headers=headers,
                )
                for i in range(n)
            )
        )


def test_concurrent_identical_misses_make_one_upstream_call(
    replicas: tuple[RunningGateway, RunningGateway], slow_upstream: str
) -> None:
    gw, _ = replicas
    messages = prompt("burst")
    before = calls(slow_upstream)
    responses = asyncio.run(_burst([gw.base_url], messages, 12))
    assert all(resp.status_code == 200 for resp in responses)
    assert calls(slow_upstream) == before + 1
    assert sorted(resp.headers["x-gateway-cache"] for resp in responses) == ["hit"] * 11 + ["miss"]


def test_identical_misses_collapse_across_replicas(
    replicas: tuple[RunningGateway, RunningGateway], slow_upstream: str
) -> None:
    a, b = replicas
    messages = prompt("replicas")
    before = calls(slow_upstream)
    responses = asyncio.run(_burst([a.base_url, b.base_url], messages, 12))
    assert all(resp.status_code == 200 for resp in responses)
    assert calls(slow_upstream) == before + 1
    assert [resp.headers["x-gateway-cache"] for resp in responses].count("miss") == 1


# -- the embedded store --------------------------------------------------------------------------------------------
def test_without_redis_the_in_process_store_has_the_same_semantics(
    fast_upstream: str, slow_upstream: str, config_dir: Path
) -> None:
    config = {**_config(slow_upstream, "t:mem", tenant_header="x-team", ttl_seconds=1), "workers": 1}
    with run_gateway(config=config, tmp_dir=config_dir) as gw:
        messages = prompt("mem")
        before = calls(slow_upstream)
        responses = asyncio.run(_burst([gw.base_url], messages, 6))
        assert calls(slow_upstream) == before + 1
        assert [resp.headers["x-gateway-cache"] for resp in responses].count("hit") == 5
        assert ask(sdk(gw, KEY_B), messages)[0]["x-gateway-cache"] == "miss"  # another key: another tenant
        assert ask(sdk(gw, KEY_A, **{"x-team": "red"}), messages)[0]["x-gateway-cache"] == "miss"  # sub-tenant
        assert ask(sdk(gw, KEY_A, **{"x-team": "red"}), messages)[0]["x-gateway-cache"] == "hit"
        time.sleep(1.3)
        assert ask(sdk(gw, KEY_A, **{"x-team": "red"}), messages)[0]["x-gateway-cache"] == "miss"  # TTL

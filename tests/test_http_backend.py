"""The OpenAI-compatible HTTP tier over both transports (aiohttp, httpx), against the fake upstream process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgspec
import pytest

from gateway.openai.request import parse_chat_request
from gateway.devtools.process import free_port, run_fake_upstream
from gateway.errors import TierUnavailable
from gateway.tiers.http import OpenAIHTTPBackend

CLIENTS = ["aiohttp", "httpx"]


def chat(**fields: object) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "ping"}], **fields}
    return msgspec.json.encode(body)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with run_fake_upstream(api_key="sk-up") as url:
        yield url


@pytest.fixture(params=CLIENTS)
def backend_for(request: pytest.FixtureRequest) -> Iterator[Callable[..., OpenAIHTTPBackend]]:
    def make(url: str, **kwargs: object) -> OpenAIHTTPBackend:
        return OpenAIHTTPBackend("upstream", url, client=request.param, **kwargs)  # type: ignore[arg-type]

    yield make


async def test_complete_passes_the_body_through(backend_for, upstream: str) -> None:
    backend = backend_for(upstream, api_key="sk-up")
    try:
        completion = await backend.complete(parse_chat_request(chat(seed=3)), "gpt-4o-mini")
        body = msgspec.json.decode(completion.body)
        assert body["model"] == completion.model == "gpt-4o-mini"
        assert body["choices"][0]["message"]["content"].startswith("fake answer to: ping")
        assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
        assert await backend.ready()
    finally:
        await backend.close()


async def test_stream_yields_chunks_and_a_usage_chunk(backend_for, upstream: str) -> None:
    backend = backend_for(upstream, api_key="sk-up")
    try:
        batches = [batch async for batch in backend.stream(parse_chat_request(chat(stream=True)), "m")]
        assert all(batches), "a batch is never empty"
        payloads = [msgspec.json.decode(p) for batch in batches for p in batch]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in payloads if c["choices"])
        assert text.startswith("fake answer to: ping")
        assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] > 0
    finally:
        await backend.close()


async def test_wrong_key_is_an_upstream_auth_failure_not_a_401(backend_for, upstream: str) -> None:
    backend = backend_for(upstream, api_key="sk-wrong")
    try:
        with pytest.raises(TierUnavailable) as caught:
            await backend.complete(parse_chat_request(chat()), "m")
        assert (caught.value.status_code, caught.value.kind, caught.value.code) == (502, "auth", "upstream_auth_failed")
        assert msgspec.json.decode(caught.value.body())["error"]["type"] == "upstream_error"
        assert await backend.probe() == "auth_failed"
    finally:
        await backend.close()


async def test_nothing_listening_is_a_connect_failure(backend_for) -> None:
    backend = backend_for(f"http://127.0.0.1:{free_port()}/v1")
    try:
        with pytest.raises(TierUnavailable) as caught:
            await backend.complete(parse_chat_request(chat()), "m")
        assert caught.value.kind == "connect" and caught.value.status_code == 502
        assert not await backend.ready()
    finally:
        await backend.close()


async def test_slow_answer_is_a_timeout(backend_for) -> None:
    with run_fake_upstream(latency_ms=2000) as slow:
        backend = backend_for(slow, read_timeout=0.3)
        try:
            with pytest.raises(TierUnavailable) as caught:
                await backend.complete(parse_chat_request(chat()), "m")
            assert caught.value.kind == "timeout" and caught.value.status_code == 504
        finally:
            await backend.close()


async def test_a_stream_pause_longer_than_the_read_timeout_is_a_timeout(backend_for) -> None:
    with run_fake_upstream(chunk_delay_ms=50, chunks=20) as url:
        backend = backend_for(url, read_timeout=0.02)  # the pause between events outlasts the read timeout
        try:
            with pytest.raises(TierUnavailable) as caught:
                async for _ in backend.stream(parse_chat_request(chat(stream=True)), "m"):
                    pass
            assert caught.value.kind == "timeout"
        finally:
            await backend.close()


async def test_events_that_arrive_apart_come_in_separate_batches(backend_for) -> None:
    with run_fake_upstream(chunk_delay_ms=30, chunks=3) as url:
        backend = backend_for(url)
        try:
            batches = [batch async for batch in backend.stream(parse_chat_request(chat(stream=True)), "m")]
            assert len(batches) >= 4  # role, three content pieces, finish + usage: 30 ms apart
            assert sum(len(batch) for batch in batches) == 6
        finally:
            await backend.close()

"""Passed-through requests are counted with the tokens and cost the upstream reports.

`UsageScan` reads the usage of a body as it is relayed (JSON whole or by its tail, gzip, server-sent events);
then an in-process gateway forwards to the real fake upstream over loopback and `Accounting` counts exact tokens
and dollars for embeddings, Responses (stream and not), legacy completions and a moderation (which has no usage).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from gateway.devtools.fake_backend import FakeBackend
from gateway.openai.wire import Usage
from gateway.passthrough import forwarded_request_headers
from gateway.upstream_usage import UsageScan

JSON = "application/json"


def scan(content_type: str, pieces: list[bytes], encoding: str = "", **limits: int) -> UsageScan:
    watcher = UsageScan(content_type, encoding, **limits)
    for piece in pieces:
        watcher.feed(piece)
    watcher.finish()
    return watcher


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


CHAT = json.dumps({"id": "x", "model": "gpt-4o-2024-08-06", "choices": [],
                   "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}}).encode()
RESPONSE = json.dumps({"id": "resp_1", "object": "response", "model": "gpt-4o", "metadata": {"usage": "mine"},
                       "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0},
                                 "output_tokens": 4, "total_tokens": 13}}).encode()


def test_a_json_body_in_pieces_gives_its_usage_and_model() -> None:
    watched = scan("application/json; charset=utf-8", split(CHAT, 7))
    assert (watched.usage, watched.model) == (Usage(12, 6), "gpt-4o-2024-08-06")
    watched = scan(JSON, [RESPONSE])
    assert (watched.usage, watched.model) == (Usage(9, 4), "gpt-4o")


def test_a_gzip_body_is_read_inflated() -> None:
    watched = scan(JSON, split(gzip.compress(CHAT), 5), "gzip")
    assert watched.usage == Usage(12, 6)


def test_a_large_body_is_read_by_its_tail() -> None:
    data = [{"object": "embedding", "index": i, "embedding": [0.25] * 64} for i in range(400)]
    body = json.dumps({"object": "list", "data": data, "model": "text-embedding-3-small",
                       "usage": {"prompt_tokens": 800, "total_tokens": 800}}).encode()
    assert len(body) == 175_207  # past max_whole_bytes: only the last 1 KiB is kept
    watched = scan(JSON, split(body, 4096), max_whole_bytes=32 * 1024, tail_bytes=1024)
    assert watched.usage == Usage(800, 0)


def test_event_streams_give_the_last_usage() -> None:
    chunks = [{"model": "gpt-4o-mini", "choices": [{"delta": {"content": "hi"}}]},
              {"model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}]
    stream = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks) + b"data: [DONE]\r\n\r\n"
    watched = scan("text/event-stream", split(stream, 3))
    assert (watched.usage, watched.model) == (Usage(3, 1), "gpt-4o-mini")
    done = {"type": "response.completed", "response": json.loads(RESPONSE)}
    events = (b'event: response.created\ndata: {"type":"response.created","response":{"model":"gpt-4o","usage":null}}'
              b"\n\nevent: response.completed\ndata: " + json.dumps(done).encode())  # no final blank line
    assert scan("text/event-stream", [events]).usage == Usage(9, 4)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, b'{"id": "modr-1", "results": []}'),  # no usage
        (JSON, b'{"usage": {"prompt_tokens": -1, "completion_tokens": 2}}'),
        (JSON, b'{"usage": {"prompt_tokens": "3"}}'),
        (JSON, b'{"usage": "lots"}'),
        (JSON, b'{"usage": {"prompt_tokens": 3'),  # cut off
        ("application/octet-stream", CHAT),  # a file's content that happens to look like an answer
    ],
)
def test_no_usage_is_read_where_none_is_reported(content_type: str, body: bytes) -> None:
    assert scan(content_type, [body]).usage is None


def test_the_upstream_is_asked_only_for_encodings_the_gateway_reads() -> None:
    sent = forwarded_request_headers([("Accept-Encoding", "gzip, deflate, br, zstd")], {})
    assert sent == {"accept-encoding": "gzip, deflate"}
    assert forwarded_request_headers([("accept-encoding", "br")], {}) == {}


# -- counted through Accounting (in-process gateway, real fake upstream on loopback) --------------------------
PRICES = {
    "local_per_million_tokens": 0.0,
    "local_per_hour": 0.0,
    "upstream": {
        "gpt-4o": {"input_per_million": 2.5, "output_per_million": 10.0},
        "gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6},
        "text-embedding-3-small": {"input_per_million": 0.02, "output_per_million": 0.0},
    },
}


def dollars(value: float) -> Any:
    return pytest.approx(value, rel=1e-12, abs=1e-18)


@pytest.fixture
async def gw(app_factory: Any, fake_upstream: str) -> Any:
    config = {"costs": PRICES, "upstream": {"url": fake_upstream, "api_key": "sk-upstream-secret"}}
    return await app_factory(upstream=FakeBackend(), config=config)


async def test_passthrough_embeddings_count_tokens_and_cost(gw: Any) -> None:
    answer = await gw.client.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                          "input": ["one two three", "four five"]})
    assert answer.status_code == 200 and answer.json()["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="200", reason="passthrough") == 1
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="upstream", model="text-embedding-3-small") == 5
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="text-embedding-3-small") == 0
    assert gw.metric("slm_gateway_cost_dollars_total", tier="upstream") == dollars(5 * 0.02 / 1e6)


async def test_passthrough_responses_count_tokens_and_cost_stream_and_not(gw: Any) -> None:
    body = {"model": "gpt-4o", "input": "Hi there"}
    whole = await gw.client.post("/v1/responses", json=body)
    assert whole.status_code == 200 and whole.headers["x-gateway-route"] == "upstream"
    assert whole.json()["usage"]["input_tokens"] == 2 and whole.json()["usage"]["output_tokens"] == 5
    streamed = await gw.client.post("/v1/responses", json={**body, "stream": True})
    assert streamed.status_code == 200 and streamed.text.count("event: response.completed") == 1
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="200", reason="default") == 2
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="upstream", model="gpt-4o") == 4
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="gpt-4o") == 10
    assert gw.metric("slm_gateway_cost_dollars_total", tier="upstream") == dollars(2 * (2 * 2.5 + 5 * 10.0) / 1e6)


async def test_passthrough_legacy_completion_stream_counts_the_usage_chunk(gw: Any) -> None:
    body = {"model": "gpt-4o-mini", "prompt": "Once upon a time", "stream": True,
            "stream_options": {"include_usage": True}}
    answer = await gw.client.post("/v1/completions", json=body)
    assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="upstream", model="gpt-4o-mini") == 4
    assert gw.metric("slm_gateway_completion_tokens_total", tier="upstream", model="gpt-4o-mini") == 7
    assert gw.metric("slm_gateway_cost_dollars_total", tier="upstream") == dollars((4 * 0.15 + 7 * 0.6) / 1e6)


async def test_a_passthrough_without_usage_is_counted_without_tokens(gw: Any) -> None:
    answer = await gw.client.post("/v1/moderations", json={"model": "omni-moderation-latest", "input": "hi"})
    assert answer.status_code == 200 and answer.json()["id"] == "modr-fake"
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="200", reason="passthrough") == 1
    registry = gw.pipeline.metrics.registry
    assert registry.get_sample_value("slm_gateway_cost_dollars_total", {"tier": "upstream"}) is None
    assert gw.metric("slm_gateway_prompt_tokens_total", tier="upstream", model="omni-moderation-latest") == 0

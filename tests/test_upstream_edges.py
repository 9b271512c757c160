"""The upstream is untrusted: echoed keys are scrubbed from relayed errors, an upstream 401 is not the client's
401, bad usage data never cuts a stream or fails a request, oversized answers are refused, Retry-After survives.
Through running gateways against fake upstreams that misbehave on purpose (gateway/devtools/fake_upstream.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from gateway.openai.wire import MAX_REPORTED_TOKENS, Usage, chunk_usage
from gateway.tiers.upstream_errors import KeyScrubber
from tests.conftest import RunningGateway

KEY = "sk-edge-Upstream0123456789abcdef"
HELLO = [{"role": "user", "content": "say hi"}]
UPSTREAM = {"model": "upstream", "messages": HELLO}
KEY_ENV = {"SLM_GATEWAY_UPSTREAM_API_KEY": KEY}
AUTH_FAILED = {
    "message": "The upstream refused this gateway's upstream credentials (HTTP 401); "
    "the gateway operator must check upstream.api_key.",
    "type": "upstream_error",
    "param": None,
    "code": "upstream_auth_failed",
}


def post(gw: RunningGateway, body: dict) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=60)


def events(response: httpx.Response) -> list[object]:
    """The data of each SSE event of a stream, decoded (`[DONE]` kept as the string)."""
    out: list[object] = []
    for block in response.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else msgspec.json.decode(data))
    return out


def metric(gw: RunningGateway, sample: str) -> float:
    for line in httpx.get(f"{gw.root}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not exposed")


# -- keys in relayed errors, upstream auth failures ---------------------------------------------------------------
def test_an_upstream_401_is_a_502_upstream_auth_failed_without_the_echoed_key(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str], tmp_path: Path
) -> None:
    upstream = upstream_factory(api_key="sk-the-key-the-upstream-wants", echo_key="message")
    key_file = tmp_path / "upstream.key"
    key_file.write_text(f"{KEY}\n")  # the wrong key, from a file (upstream.api_key_file)
    gw = gateway_factory(config={"upstream": {"url": upstream, "api_key_file": str(key_file)}})

    plain = post(gw, UPSTREAM)
    stream = post(gw, {**UPSTREAM, "stream": True})
    for response in (plain, stream):
        assert response.status_code == 502
        assert response.json() == {"error": AUTH_FAILED}
        assert KEY not in response.text
    assert metric(gw, 'slm_gateway_upstream_errors_total{kind="auth"}') == 2.0
    received = httpx.get(upstream.removesuffix("/v1") + "/_fake/requests").json()["data"]
    assert received[-1]["headers"]["authorization"] == f"Bearer {KEY}"  # the file's key, whitespace dropped


@pytest.mark.parametrize(
    ("echo", "expected"),
    [
        ("message", {"message": "Injected error (status 400): [redacted].", "type": "invalid_request_error",
                     "param": None, "code": None}),
        ("field", {"message": "Injected error (status 400).", "type": "invalid_request_error",
                   "param": "[redacted]", "code": None}),
    ],
)
def test_a_key_the_upstream_echoes_in_an_error_is_scrubbed(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str], echo: str, expected: dict
) -> None:
    upstream = upstream_factory(error_rate=1.0, error_status=400, echo_key=echo)
    gw = gateway_factory("--upstream-url", upstream, env=KEY_ENV)
    response = post(gw, UPSTREAM)
    assert response.status_code == 400
    assert response.json() == {"error": expected}  # rebuilt: the upstream's extra `debug` object is not relayed
    assert KEY not in response.text and KEY not in str(response.headers)


def test_a_key_echoed_in_a_streamed_error_event_is_scrubbed(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    upstream = upstream_factory(echo_key="stream")
    gw = gateway_factory("--upstream-url", upstream, env=KEY_ENV)
    response = post(gw, {**UPSTREAM, "stream": True})
    assert response.status_code == 200
    first, error = events(response)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert error == {"error": {"message": "The upstream stream failed: Stream failed: [redacted].",
                               "type": "upstream_error", "param": None, "code": "upstream_stream_error"}}
    assert KEY not in response.text


def test_the_scrubber_redacts_the_configured_key_and_anything_key_shaped() -> None:
    scrub = KeyScrubber(["my-own-secret-token"])
    assert scrub("bad key my-own-secret-token given") == "bad key [redacted] given"
    assert scrub("keys sk-proj-AbC123_xyz-789 and sk-ant-api03-QQQQQQ") == "keys [redacted] and [redacted]"
    assert scrub("Authorization: Bearer abcdef123456") == "Authorization: [redacted]"
    assert scrub("masked sk-abc***********wxyz stays") == "masked sk-abc***********wxyz stays"
    assert scrub.optional(42) is None and scrub.optional("") is None


# -- untrusted usage ------------------------------------------------------------------------------------------------
def test_chunk_usage_is_total() -> None:
    assert chunk_usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == Usage(3, 4)
    assert chunk_usage({"usage": {"prompt_tokens": -3, "completion_tokens": "4"}}) == Usage(0, 0)
    assert chunk_usage({"usage": {"prompt_tokens": True, "completion_tokens": 2.5}}) == Usage(0, 0)
    assert chunk_usage({"usage": {"prompt_tokens": 10**12, "completion_tokens": 1}}) == Usage(MAX_REPORTED_TOKENS, 1)
    assert chunk_usage({"usage": "lots"}) is None
    assert chunk_usage({"usage": None}) is None
    assert chunk_usage(["not", "a", "chunk"]) is None


def test_negative_upstream_usage_is_counted_as_zero(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    gw = gateway_factory("--upstream-url", upstream_factory(usage="negative"))
    plain = post(gw, UPSTREAM)
    assert plain.status_code == 200, plain.text  # was a 500: a negative Counter increment
    stream = post(gw, {**UPSTREAM, "stream": True, "stream_options": {"include_usage": True}})
    assert stream.status_code == 200
    *_, usage_chunk, done = events(stream)
    assert done == "[DONE]"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    sample = 'slm_gateway_prompt_tokens_total{model="gpt-4o-mini",tier="upstream"}'
    assert metric(gw, sample) == 0.0
    # the non-streamed one and the finished stream
    assert metric(gw, 'slm_gateway_requests_total{reason="pin-upstream",status="200",tier="upstream"}') == 2.0


def test_a_malformed_usage_chunk_ends_the_stream_with_an_error_event(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    gw = gateway_factory("--upstream-url", upstream_factory(usage="malformed"))
    stream = post(gw, {**UPSTREAM, "stream": True})
    assert stream.status_code == 200
    got = events(stream)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in got[:-1])
    assert text == "fake answer to: say hi"
    assert got[-1] == {"error": {"message": "The upstream sent a malformed stream chunk.", "type": "upstream_error",
                                 "param": None, "code": "upstream_protocol_error"}}
    plain = post(gw, UPSTREAM)  # a body that is not JSON at all
    assert plain.status_code == 502
    assert plain.json()["error"]["type"] == "upstream_error"


def test_usage_that_is_not_an_object_is_ignored(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    gw = gateway_factory("--upstream-url", upstream_factory(usage="not_object"))
    assert post(gw, UPSTREAM).status_code == 200
    stream = post(gw, {**UPSTREAM, "stream": True, "stream_options": {"include_usage": True}})
    got = events(stream)
    assert got[-1] == "[DONE]"
    assert all(c["choices"] for c in got[:-1])  # the usage-only chunk carried nothing usable: dropped
    assert metric(gw, 'slm_gateway_requests_total{reason="pin-upstream",status="200",tier="upstream"}') == 2.0


# -- size limit, Retry-After ----------------------------------------------------------------------------------------
def test_an_upstream_answer_over_the_size_limit_is_a_502(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    upstream = upstream_factory(pad_bytes=200_000)
    gw = gateway_factory(config={"upstream": {"url": upstream, "max_response_bytes": 100_000}})
    response = post(gw, UPSTREAM)
    assert response.status_code == 502
    assert response.json() == {"error": {
        "message": "The upstream answer is larger than this gateway accepts (100000 bytes).",
        "type": "upstream_error", "param": None, "code": "upstream_response_too_large"}}
    assert post(gw, {**UPSTREAM, "stream": True}).status_code == 200  # streams are bounded per event instead


def test_an_upstream_429_keeps_its_retry_after(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    upstream = upstream_factory(error_rate=1.0, error_status=429, retry_after="7")
    gw = gateway_factory("--upstream-url", upstream)
    for body in (UPSTREAM, {**UPSTREAM, "stream": True}):
        response = post(gw, body)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"]["type"] == "rate_limit_error"


def test_a_chunk_that_only_contains_the_word_error_is_not_an_error_event() -> None:
    from gateway.tiers.http import OpenAIHTTPBackend

    backend = OpenAIHTTPBackend("upstream", "http://127.0.0.1:9/v1", KEY)
    word = b'{"choices":[{"index":0,"delta":{"content":"error"},"logprobs":{"content":[{"token":"error"}]}}]}'
    error_event = b'{"error":{"message":"boom ' + KEY.encode() + b'","type":"server_error"}}'
    assert backend._vetted([word, b"[DONE]"]) == ([word], True, None)
    passed, done, failure = backend._vetted([word, error_event, word])
    assert (passed, done) == ([word], False)
    assert failure is not None and failure.message == "The upstream stream failed: boom [redacted]"

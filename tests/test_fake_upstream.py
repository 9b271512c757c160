"""The fake OpenAI-compatible upstream, run as a subprocess exactly as the gateway tests run it."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.devtools.process import (
    ServerStartError,
    fake_upstream_argv,
    free_port,
    run_fake_upstream,
    spawn_server,
)

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]
EXPECTED = "fake answer to: What is the capital of France?"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_fake_upstream() as url:
        yield url


@pytest.fixture(scope="module")
def root_url(base_url: str) -> str:
    return base_url.removesuffix("/v1")


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=10) as c:
        yield c


def test_non_streaming_answer_is_deterministic_and_openai_shaped(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    second = client.chat.completions.create(model="my-own-model", messages=MESSAGES)
    assert first.object == "chat.completion"
    assert first.id.startswith("chatcmpl-") and first.id != second.id
    assert first.created > 0
    assert first.model == "gpt-4o-mini" and second.model == "my-own-model"
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].message.content == EXPECTED == second.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None
    assert first.usage.prompt_tokens == 3 + 6  # words of every message
    assert first.usage.completion_tokens == len(EXPECTED.split())
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


def test_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)
    assert resp.choices[0].message.content == "fake answer"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 2


def test_list_content_parts_are_read(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]
    resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": parts}])
    assert resp.choices[0].message.content == "fake answer to: part one part two"


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-fake-chunks": "5"},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == 9 + len(EXPECTED.split())
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_usage_ends_with_done(base_url: str) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    with httpx.Client(base_url=base_url) as http:
        resp = http.post("/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [e for e in resp.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert '"usage"' not in resp.text


def test_latency_and_chunk_delay_headers(base_url: str) -> None:
    body = {"model": "m", "messages": MESSAGES}
    with httpx.Client(base_url=base_url) as http:
        start = time.perf_counter()
        assert http.post("/chat/completions", json=body, headers={"x-fake-latency-ms": "150"}).status_code == 200
        assert time.perf_counter() - start >= 0.15
        start = time.perf_counter()
        headers = {"x-fake-chunks": "3", "x-fake-chunk-delay-ms": "40"}
        resp = http.post("/chat/completions", json={**body, "stream": True}, headers=headers)
        # role, 3 content, finish and [DONE]: 5 gaps of 40 ms
        assert time.perf_counter() - start >= 0.2
        assert resp.text.count("data: ") == 6


def test_status_header_gives_openai_shaped_errors(client: openai.OpenAI, base_url: str) -> None:
    with pytest.raises(openai.RateLimitError) as rate_limited:
        client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-fake-status": "429"})
    assert rate_limited.value.status_code == 429
    assert rate_limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError) as unavailable:
        client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-fake-status": "503"})
    assert unavailable.value.status_code == 503
    with httpx.Client(base_url=base_url) as http:
        resp = http.post("/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True},
                         headers={"x-fake-status": "500", "x-fake-retry-after": "2"})
    assert resp.status_code == 500
    assert resp.headers["retry-after"] == "2"
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    with httpx.Client(base_url=base_url) as http:  # the delayed path answers the same error
        late = http.post("/chat/completions", json={"model": "m", "messages": MESSAGES},
                         headers={"x-fake-status": "503", "x-fake-latency-ms": "5", "x-fake-retry-after": "3"})
    assert (late.status_code, late.headers["retry-after"]) == (503, "3")
    assert late.json()["error"]["message"] == "Injected error (status 503)."


def test_bad_requests_are_400(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as http:
        assert http.post("/chat/completions", content=b"{nope").status_code == 400
        missing = http.post("/chat/completions", json={"model": "m"})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
        assert http.get("/chat/completions").status_code == 405
        assert http.get("/nothing-here").status_code == 404


def test_drop_after_chunks_closes_mid_stream(base_url: str) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    received: list[str] = []
    headers = {"x-fake-drop-after-chunks": "2"}
    with httpx.Client(base_url=base_url) as http:
        with pytest.raises(httpx.RemoteProtocolError), http.stream("POST", "/chat/completions", json=body,
                                                                   headers=headers) as r:
            assert r.status_code == 200
            received.extend(line for line in r.iter_lines() if line)
        assert len(received) == 2
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/chat/completions", json={**body, "stream": False}, headers={"x-fake-drop-after-chunks": "0"})


def test_drop_surfaces_as_openai_error(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_headers={"x-fake-drop-after-chunks": "3"}
    )
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(stream)


def test_hang_never_answers(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/chat/completions", json={"model": "m", "messages": MESSAGES}, headers={"x-fake-hang": "1"})
        # the server is still fine afterwards
        assert http.get("/models").status_code == 200


def test_models_and_health(client: openai.OpenAI, root_url: str) -> None:
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o", "fake-model"]
    assert httpx.get(f"{root_url}/health").json() == {"status": "ok"}


def test_records_requests_with_headers_and_stats(client: openai.OpenAI, root_url: str) -> None:
    with httpx.Client(base_url=root_url) as http:
        assert http.delete("/_fake/requests").status_code == 200
        before = http.get("/_fake/stats").json()["requests"]
        client.chat.completions.create(model="rec-model", messages=MESSAGES, extra_headers={"x-trace": "abc"},
                                       temperature=0.25)
        client.models.list()
        recorded = http.get("/_fake/requests").json()["data"]
        assert [r["path"] for r in recorded] == ["/v1/chat/completions", "/v1/models"]
        chat = recorded[0]
        assert chat["method"] == "POST"
        assert chat["body"]["model"] == "rec-model" and chat["body"]["temperature"] == 0.25
        assert chat["body"]["messages"] == MESSAGES
        assert chat["headers"]["authorization"] == "Bearer sk-test"
        assert chat["headers"]["x-trace"] == "abc"
        assert http.get("/_fake/requests", params={"limit": 1}).json()["data"][0]["path"] == "/v1/models"
        assert http.get("/_fake/stats").json()["requests"] == before + 2
        assert http.delete("/_fake/requests").status_code == 200
        assert http.get("/_fake/requests").json()["data"] == []


def test_pipelined_requests_are_answered_in_order(root_url: str) -> None:
    port = int(root_url.rsplit(":", 1)[1])
    slow = (b'{"model":"slow","messages":[{"role":"user","content":"one"}]}', b"x-fake-latency-ms: 60\r\n")
    fast = (b'{"model":"fast","messages":[{"role":"user","content":"two"}]}', b"")
    raw = b"".join(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + extra + b"content-length: %d\r\n\r\n" % len(body) + body
        for body, extra in (slow, fast)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    assert data.index(b'"model":"slow"') < data.index(b'"model":"fast"')


def test_api_key_required_when_configured() -> None:
    with run_fake_upstream(api_key="sk-secret") as url:
        with openai.OpenAI(base_url=url, api_key="sk-wrong", max_retries=0) as wrong, \
                pytest.raises(openai.AuthenticationError) as denied:
            wrong.chat.completions.create(model="m", messages=MESSAGES)
        assert denied.value.status_code == 401
        assert denied.value.code == "invalid_api_key"
        with openai.OpenAI(base_url=url, api_key="sk-secret", max_retries=0) as right:
            assert right.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == EXPECTED
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200


def test_error_rate_injects_configured_status() -> None:
    with run_fake_upstream(error_rate=1.0, error_status=503) as url:
        with openai.OpenAI(base_url=url, api_key="x", max_retries=0) as c:
            for _ in range(3):
                with pytest.raises(openai.InternalServerError) as failed:
                    c.chat.completions.create(model="m", messages=MESSAGES)
                assert failed.value.status_code == 503
        stats = httpx.get(url.removesuffix("/v1") + "/_fake/stats").json()
        assert stats["errors_injected"] == 3


def test_spawn_server_stops_cleanly_and_reports_failures() -> None:
    port = free_port()
    with spawn_server(fake_upstream_argv(port, latency_ms=1), f"http://127.0.0.1:{port}/health") as server:
        assert server.proc.poll() is None
        assert "listening" in server.output()
    assert server.proc.returncode == 0
    failing = [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
    with pytest.raises(ServerStartError, match="boom"), spawn_server(failing, "http://127.0.0.1:9/x"):
        pass


def test_a_killed_parent_takes_its_spawned_servers_with_it() -> None:
    import signal
    import subprocess

    script = "import time\nfrom gateway.devtools.process import run_fake_upstream\n" \
             "with run_fake_upstream() as url:\n    print(url, flush=True)\n    time.sleep(60)\n"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        url = parent.stdout.readline().strip()  # type: ignore[union-attr]
        assert httpx.get(url + "/models").status_code == 200
        parent.send_signal(signal.SIGKILL)  # no teardown runs in the parent
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(url + "/models", timeout=1)
            except httpx.ConnectError:
                break
            assert time.monotonic() < deadline, "the spawned server outlived its parent"
            time.sleep(0.1)
    finally:
        parent.kill()
        parent.wait()

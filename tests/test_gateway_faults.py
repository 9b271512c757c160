"""Failure handling: auth, body limits, upstream down / slow / failing, local overload, long prompts, disconnects,
bad settings. Every error is OpenAI-shaped and nothing crashes the worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from gateway.devtools.process import free_port
from tests.conftest import REPO_ROOT, RunningGateway

HELLO = [{"role": "user", "content": "Reply with one word: hello."}]
LONG_ANSWER = [{"role": "user", "content": "Write a very long story about a dragon, at least 2000 words."}]
COST_SAVER = REPO_ROOT / "policies" / "cost-saver.yaml"
BATCH = {"x-gateway-tag": "batch"}  # cost-saver's batch-jobs-local rule: local, spills upstream (not a pin)


def post(gw: RunningGateway, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=120)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert response.headers.get("x-request-id")
    return error


def metric_value(gw: RunningGateway, name: str) -> float:
    text = httpx.get(f"{gw.root}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not exposed")


async def wait_for_metrics(http: httpx.AsyncClient, gw: RunningGateway, wanted: dict[str, float]) -> None:
    """Poll /metrics until every named (unlabelled) metric has the wanted value (bounded: 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        text = (await http.get(f"{gw.root}/metrics")).text
        values = {
            line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split(" ")[0] in wanted
        }
        if values == wanted:
            return
        assert time.monotonic() < deadline, f"metrics never reached {wanted}: {values}"
        await asyncio.sleep(0.05)


# -- auth ------------------------------------------------------------------------------------------------------
def test_gateway_keys_guard_the_api(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory("--api-key", "sk-team-a", "--api-key", "sk-team-b")
    body = {"model": "local", "messages": HELLO, "max_tokens": 2}
    assert assert_openai_error(post(gw, body), 401)["code"] == "missing_api_key"
    assert assert_openai_error(post(gw, body, authorization="Bearer sk-wrong"), 401)["code"] == "invalid_api_key"
    assert post(gw, body, authorization="Bearer sk-team-b").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.base_url, api_key="sk-nope", max_retries=0).models.list()
    ids = [m.id for m in openai.OpenAI(base_url=gw.base_url, api_key="sk-team-a").models.list()]
    assert "local" in ids
    assert httpx.get(f"{gw.root}/healthz").status_code == 200  # probes stay open


def test_open_gateway_says_so_at_start(gateway: RunningGateway) -> None:
    assert "OPEN" in gateway.server.output(tail=1_000_000)  # the whole log: access-log lines follow the warning


# -- body limits -------------------------------------------------------------------------------------------------
def test_body_over_the_limit_is_refused(gateway_factory: Callable[..., RunningGateway], tmp_path) -> None:
    gw = gateway_factory(config={"max_body_bytes": 4096})
    big = {"model": "local", "messages": [{"role": "user", "content": "x" * 10_000}]}
    error = assert_openai_error(post(gw, big), 413)
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert "4096" in error["message"]
    assert post(gw, {"model": "local", "messages": HELLO, "max_tokens": 2}).status_code == 200
    counted = 'slm_gateway_requests_total{reason="invalid",status="413",tier="none"} 1.0'
    assert counted in httpx.get(f"{gw.root}/metrics").text


# -- upstream failures -------------------------------------------------------------------------------------------
def test_upstream_down_is_a_502(gateway_factory: Callable[..., RunningGateway]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = gateway_factory("--upstream-url", dead, "--upstream-api-key", "sk-secret-upstream", wait_path="/healthz")

    response = post(gw, {"model": "upstream", "messages": HELLO})
    error = assert_openai_error(response, 502)
    assert error["code"] == "upstream_unreachable"
    assert "sk-secret-upstream" not in response.text
    stream = post(gw, {"model": "upstream", "messages": HELLO, "stream": True})
    assert_openai_error(stream, 502)
    ready = httpx.get(f"{gw.root}/readyz")  # the local tier can still serve: ready, and says what is down
    assert ready.status_code == 200
    assert ready.json()["tiers"] == {"local": "ready", "upstream": "unreachable"}
    assert metric_value(gw, 'slm_gateway_upstream_errors_total{kind="connect"}') >= 2


def test_slow_upstream_is_a_504(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    slow = upstream_factory(latency_ms=3000)
    gw = gateway_factory(config={"upstream": {"url": slow, "read_timeout": 0.5}})
    started = time.monotonic()
    error = assert_openai_error(post(gw, {"model": "upstream", "messages": HELLO}), 504)
    assert error["code"] == "upstream_timeout"
    assert time.monotonic() - started < 2.5


def test_upstream_error_status_and_body_pass_through(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    failing = upstream_factory(error_rate=1.0, error_status=429)
    gw = gateway_factory("--upstream-url", failing)
    with pytest.raises(openai.RateLimitError) as caught:
        openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="gpt-4o", messages=HELLO, extra_headers={"x-gateway-route": "upstream"}
        )
    assert caught.value.status_code == 429
    assert caught.value.body["type"] == "rate_limit_error"


def test_busy_local_tier_spills_upstream(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    # Local queue of 0 and one slot: a second concurrent local request spills to the upstream. Requests are sent
    # local by cost-saver's `batch-jobs-local` rule (tag batch), not pinned: a pinned request never spills.
    upstream = upstream_factory()
    gw = gateway_factory(
        config={"upstream": {"url": upstream}, "policy": str(COST_SAVER),
                "local": {"max_concurrency": 1, "max_queue": 0, "spill_to_upstream": True}}
    )

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, headers=BATCH) as http:
            body = {"model": "gpt-4o", "messages": LONG_ANSWER, "max_tokens": 48}
            first = asyncio.create_task(http.post(f"{gw.base_url}/chat/completions", json=body))
            await wait_for_metrics(http, gw, {"slm_gateway_local_inflight": 1})
            second = await http.post(f"{gw.base_url}/chat/completions", json={**body, "max_tokens": 4})
            return [await first, second]

    first, second = asyncio.run(scenario())
    assert first.status_code == 200 and first.headers["x-gateway-route"] == "local"
    assert second.status_code == 200 and second.headers["x-gateway-route"] == "upstream"
    assert metric_value(gw, 'slm_gateway_fallbacks_total{from_tier="local",to_tier="upstream"}') == 1


# -- local overload and limits -----------------------------------------------------------------------------------
def test_full_local_queue_answers_429_with_retry_after(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(config={"local": {"max_concurrency": 1, "max_queue": 1}})

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as http:
            body = {"model": "local", "messages": LONG_ANSWER, "max_tokens": 32}
            tasks = [asyncio.create_task(http.post(f"{gw.base_url}/chat/completions", json=body)) for _ in range(2)]
            await wait_for_metrics(http, gw, {"slm_gateway_local_inflight": 1, "slm_gateway_local_queue_depth": 1})
            third = await http.post(f"{gw.base_url}/chat/completions", json=body)
            return [*(await asyncio.gather(*tasks)), third]

    first, second, third = asyncio.run(scenario())
    assert first.status_code == 200 and second.status_code == 200  # one ran, one waited in the queue
    error = assert_openai_error(third, 429)
    assert error["code"] == "local_queue_full"
    assert int(third.headers["retry-after"]) >= 1


def test_prompt_longer_than_the_context_is_a_clear_400(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(config={"local": {"context_size": 256}})
    long_prompt = [{"role": "user", "content": "word " * 400}]
    error = assert_openai_error(post(gw, {"model": "local", "messages": long_prompt}), 400)
    assert error["code"] == "context_length_exceeded"
    assert "256" in error["message"]


def test_long_prompt_spills_upstream_when_one_exists(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    upstream = upstream_factory()
    gw = gateway_factory(config={"upstream": {"url": upstream}, "policy": str(COST_SAVER), "local": {"context_size": 256}})
    long_prompt = [{"role": "user", "content": "word " * 400}]
    response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "gpt-4o", "messages": long_prompt},
                          headers=BATCH, timeout=120)
    assert (response.status_code, response.headers["x-gateway-route"]) == (200, "upstream")
    # pinned local: the pin is not overridden, the client gets the local tier's answer
    error = assert_openai_error(post(gw, {"model": "local", "messages": long_prompt}), 400)
    assert (error["param"], error["code"]) == ("messages", "context_length_exceeded")


def test_client_disconnect_stops_local_generation(gateway: RunningGateway) -> None:
    body = {"model": "local", "messages": LONG_ANSWER, "max_tokens": 1500, "stream": True}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{gateway.base_url}/chat/completions", json=body) as response:
            lines = response.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in got)
            assert metric_value(gateway, "slm_gateway_local_inflight") == 1
    # 1500 tokens would take ~30 s; a stopped generation frees the slot at the next token.
    deadline = time.monotonic() + 10
    while metric_value(gateway, "slm_gateway_local_inflight") != 0:
        assert time.monotonic() < deadline, "generation kept running after the client left"
        time.sleep(0.1)
    ok = post(gateway, {"model": "local", "messages": HELLO, "max_tokens": 2})
    assert ok.status_code == 200


def test_client_leaving_an_upstream_stream_is_counted_and_the_gateway_moves_on(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    upstream = upstream_factory(chunk_delay_ms=100, chunks=50)  # a 5 s stream
    gw = gateway_factory(config={"upstream": {"url": upstream}})
    body = {"model": "upstream", "messages": HELLO, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{gw.base_url}/chat/completions", json=body) as response:
            assert next(response.iter_lines()).startswith("data: ")
    left = 'slm_gateway_requests_total{reason="pin-upstream",status="499",tier="upstream"}'
    deadline = time.monotonic() + 10
    while left + " 1.0" not in httpx.get(f"{gw.root}/metrics").text:  # counted when the client leaves, not when the 5 s stream would end
        assert time.monotonic() < deadline, "a stream the client left was not counted as 499"
        time.sleep(0.1)
    ok = post(gw, {"model": "upstream", "messages": HELLO})
    assert ok.status_code == 200


# -- start-up ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--upstream-url", "ftp://example/v1"], "upstream.url"),
        (["--upstream-url", "http://127.0.0.1:9/v1#top"], "upstream.url"),  # a fragment (a path without /v1 is fine)
        (["--port", "70000"], "port"),
        (["--local-model", "/nonexistent/model.gguf"], "no such file"),
        (["--config", "/nonexistent/config.yaml"], "config file not found"),
    ],
)
def test_bad_settings_fail_at_start_with_one_line(args: list[str], needle: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("slm-gateway: error:") and needle in lines[0]


def test_bad_config_file_names_the_setting(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("local:\n  max_queue: lots\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "local.max_queue" in done.stderr and str(config) in done.stderr
    assert "Traceback" not in done.stderr


def test_not_a_gguf_fails_clearly(tmp_path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model at all")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--local-model", str(fake)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "not a GGUF file" in done.stderr and "Traceback" not in done.stderr

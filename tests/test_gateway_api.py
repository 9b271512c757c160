"""The OpenAI API surface, driven over real HTTP with the official `openai` SDK against both tiers.

Local answers come from the real bundled model; upstream answers from the fake upstream subprocess.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import BUNDLED_MODEL_ID, RunningGateway

HELLO = [{"role": "user", "content": "Reply with one word: hello."}]


def client(gw: RunningGateway, key: str = "sk-anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=120)


def aclient(gw: RunningGateway, key: str = "sk-anything") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=120)


# -- local tier -----------------------------------------------------------------------------------------------
def test_local_non_streaming_answer_from_the_bundled_model(gateway: RunningGateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(  # no-cache: other tests ask the same
        model="local", messages=HELLO, max_tokens=8, temperature=0, extra_headers={"cache-control": "no-cache"}
    )
    completion = raw.parse()
    assert raw.headers["x-gateway-route"] == "local"
    assert raw.headers["x-gateway-model"] == BUNDLED_MODEL_ID
    assert raw.headers["x-request-id"]
    assert completion.model == BUNDLED_MODEL_ID
    assert completion.choices[0].message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 5
    assert 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_local_streaming_matches_non_streaming_with_exact_usage(gateway: RunningGateway) -> None:
    api = aclient(gateway)
    full = await api.chat.completions.create(model="local", messages=HELLO, max_tokens=8, temperature=0)
    stream = await api.chat.completions.create(
        model="local",
        messages=HELLO,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage = None
    finish = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage is not None
    assert usage.prompt_tokens == full.usage.prompt_tokens
    assert usage.completion_tokens == full.usage.completion_tokens


def test_local_stream_without_include_usage_sends_no_usage_chunk(gateway: RunningGateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="local", messages=HELLO, max_tokens=4, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_header_pins_the_local_tier_for_any_model_name(gateway: RunningGateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, max_tokens=4, extra_headers={"x-gateway-route": "local"}
    )
    assert raw.headers["x-gateway-route"] == "local"
    assert raw.parse().model == BUNDLED_MODEL_ID


def test_stop_sequences_are_honoured_locally(gateway: RunningGateway) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 10 separated by commas."}]
    done = client(gateway).chat.completions.create(
        model="local", messages=messages, max_tokens=40, temperature=0, stop=["5"]
    )
    text = done.choices[0].message.content
    assert "5" not in text and "4" in text
    assert done.choices[0].finish_reason == "stop"


# -- upstream tier --------------------------------------------------------------------------------------------
def test_upstream_non_streaming_passes_model_and_usage(gateway: RunningGateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="upstream", messages=HELLO, max_tokens=8
    )
    completion = raw.parse()
    assert raw.headers["x-gateway-route"] == "upstream"
    assert completion.model == "gpt-4o-mini"  # the upstream default model
    assert completion.choices[0].message.content.startswith("fake answer to:")
    assert completion.usage.total_tokens > 0


async def test_upstream_streaming_with_usage(gateway: RunningGateway) -> None:
    stream = await aclient(gateway).chat.completions.create(
        model="some-model", messages=HELLO, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-gateway-route": "upstream"},
    )
    text, usage, models = "", None, set()
    async for chunk in stream:
        models.add(chunk.model)
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text.startswith("fake answer to:")
    assert models == {"some-model"}
    assert usage is not None and usage.completion_tokens > 0


def test_upstream_stream_hides_usage_the_client_did_not_ask_for(gateway: RunningGateway) -> None:
    chunks = list(
        client(gateway).chat.completions.create(
            model="upstream", messages=HELLO, stream=True
        )
    )
    assert chunks and all(c.usage is None for c in chunks)


def test_unknown_fields_pass_through_and_keys_stay_separate(gateway: RunningGateway, fake_upstream: str) -> None:
    root = fake_upstream.removesuffix("/v1")
    httpx.delete(f"{root}/_fake/requests")
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
    client(gateway, key="sk-client-key").chat.completions.create(
        model="upstream",
        messages=HELLO,
        tools=tools,
        response_format={"type": "json_object"},
        seed=7,
        logprobs=True,
        extra_body={"vendor_extension": {"a": [1, 2]}},
    )
    received = httpx.get(f"{root}/_fake/requests").json()
    received = received["data"]
    body = received[-1]["body"]
    headers = {k.lower(): v for k, v in received[-1]["headers"].items()}
    assert body["tools"] == tools
    assert body["response_format"] == {"type": "json_object"}
    assert body["seed"] == 7 and body["logprobs"] is True
    assert body["vendor_extension"] == {"a": [1, 2]}
    assert body["model"] == "gpt-4o-mini"
    assert headers["authorization"] == "Bearer sk-upstream-secret"  # never the client's key


def test_upstream_key_is_never_returned(gateway: RunningGateway) -> None:
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "upstream", "messages": HELLO},
    )
    assert "sk-upstream-secret" not in response.text
    assert "sk-upstream-secret" not in str(response.headers)


# -- API surface ----------------------------------------------------------------------------------------------
def test_models_health_and_readiness(gateway: RunningGateway) -> None:
    ids = [m.id for m in client(gateway).models.list()]
    assert {"auto", "local", "upstream", "gpt-4o-mini"} <= set(ids)
    assert httpx.get(f"{gateway.root}/healthz").status_code == 200
    ready = httpx.get(f"{gateway.root}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "tiers": {"local": "ready", "upstream": "reachable"},
        "cache": {"backend": "memory", "status": "up"},
    }


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b'{"model": "local"}', "messages", "missing_required_parameter"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "missing_required_parameter"),
        (b'{"model": "local", "messages": "hi"}', "messages", "invalid_type"),
        (b'{"model": "local", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role", "invalid_type"),
        (b'{"model": "local", "messages": [], "max_tokens": 3}', "messages", "invalid_value"),
        (b'{"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "3"}', "max_tokens", "invalid_type"),
        (b'{"model": "local", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature", "invalid_type"),
    ],
)
def test_bad_requests_get_openai_shaped_400s(gateway: RunningGateway, body: bytes, param: str | None, code: str) -> None:
    response = httpx.post(
        f"{gateway.base_url}/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and error["code"] == code
    assert response.headers["x-request-id"]


def test_sdk_raises_bad_request_for_invalid_input(gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="local", messages=[{"role": "wizard", "content": "x"}])
    assert caught.value.status_code == 400


def test_unknown_path_and_method_are_openai_shaped(gateway: RunningGateway) -> None:
    missing = httpx.get(f"{gateway.root}/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    relayed = httpx.get(f"{gateway.base_url}/nothing-here")  # under /v1: passed through, the upstream's own 404
    assert relayed.status_code == 404 and relayed.json()["error"]["message"] == "Unknown path /v1/nothing-here."
    wrong = httpx.get(f"{gateway.base_url}/chat/completions")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_request_id_is_echoed(gateway: RunningGateway) -> None:
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "upstream", "messages": HELLO},
        headers={"x-request-id": "trace-123"},
    )
    assert response.headers["x-request-id"] == "trace-123"


def test_gateway_still_serves_after_bad_input(gateway: RunningGateway) -> None:
    for _ in range(3):
        httpx.post(f"{gateway.base_url}/chat/completions", content=b"\xff\xfe garbage")
    ok = client(gateway).chat.completions.create(model="upstream", messages=HELLO)
    assert ok.choices[0].message.content


def _requests_with_status(gw: RunningGateway, tier: str, status: str) -> float:
    total = 0.0
    for line in httpx.get(f"{gw.root}/metrics").text.splitlines():
        if line.startswith("slm_gateway_requests_total{") and f'tier="{tier}"' in line and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_errors_are_counted_in_the_request_metrics(gateway: RunningGateway) -> None:
    before = _requests_with_status(gateway, "none", "400")
    httpx.post(f"{gateway.base_url}/chat/completions", content=b"{broken")
    httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "local"})
    assert _requests_with_status(gateway, "none", "400") == before + 2

"""A demanding client's edge cases of `POST /v1/chat/completions`, through a running gateway (bundled local model,
fake upstream on loopback): OpenAI's bounds and message shapes are exact 400s on every tier, fields the local model
cannot honour go upstream (or are refused when the request is pinned local), and local answers carry exactly what
llama.cpp itself generates and counts for the same request (text, finish_reason, usage; stream and not; penalties).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import llama_cpp
import openai
import pytest

from gateway.tiers.bundled_model import ensure_bundled_model
from tests.conftest import BUNDLED_MODEL_ID, RunningGateway

SAY_HI = [{"role": "user", "content": "Say hi"}]
CATS = [{"role": "user", "content": "Write the word cat ten times, separated by spaces."}]
FRESH = {"cache-control": "no-cache"}


def post(gw: RunningGateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=300)


@pytest.fixture(scope="module")
def reference() -> Iterator[llama_cpp.Llama]:
    """The bundled model loaded by llama-cpp-python itself: what the local tier must match."""
    llm = llama_cpp.Llama(str(ensure_bundled_model()), n_ctx=2048, n_threads=1, verbose=False)
    yield llm
    llm.close()


# -- bad input: OpenAI's 400s, whichever tier the request would go to -----------------------------------------
@pytest.mark.parametrize(("extra", "param", "code", "message"), [
    ({"temperature": 5}, "temperature", "invalid_value",
     "Invalid 'temperature': value above maximum value. Expected a value <= 2, but got 5.0 instead."),
    ({"temperature": -0.5}, "temperature", "invalid_value",
     "Invalid 'temperature': value below minimum value. Expected a value >= 0, but got -0.5 instead."),
    ({"top_p": 1.5}, "top_p", "invalid_value",
     "Invalid 'top_p': value above maximum value. Expected a value <= 1, but got 1.5 instead."),
    ({"presence_penalty": 2.5}, "presence_penalty", "invalid_value",
     "Invalid 'presence_penalty': value above maximum value. Expected a value <= 2, but got 2.5 instead."),
    ({"frequency_penalty": -3}, "frequency_penalty", "invalid_value",
     "Invalid 'frequency_penalty': value below minimum value. Expected a value >= -2, but got -3.0 instead."),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value",
     "Invalid 'top_logprobs': value above maximum value. Expected a value <= 20, but got 21 instead."),
    ({"n": 129}, "n", "invalid_value",
     "Invalid 'n': value above maximum value. Expected a value <= 128, but got 129 instead."),
    ({"logit_bias": {"hello": 5}}, "logit_bias", "invalid_value",
     "Invalid 'logit_bias': keys must be token ids and values between -100 and 100 (got 'hello': 5.0)."),
    ({"logit_bias": {"50256": -101}}, "logit_bias", "invalid_value",
     "Invalid 'logit_bias': keys must be token ids and values between -100 and 100 (got '50256': -101.0)."),
    ({"max_tokens": 5, "max_completion_tokens": 0}, "max_completion_tokens", "invalid_value",
     "'max_completion_tokens' must be at least 1."),
    ({"max_tokens": -1, "max_completion_tokens": 5}, "max_tokens", "invalid_value", "'max_tokens' must be at least 1."),
    ({"stream_options": {"include_usage": True}}, "stream_options", None,
     "The 'stream_options' parameter is only allowed when 'stream' is enabled."),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "invalid_value",
     "Invalid value for 'messages[0].content': a user message needs content, got null."),
    ({"messages": [{"role": "developer", "content": None}, *SAY_HI]}, "messages[0].content", "invalid_value",
     "Invalid value for 'messages[0].content': a developer message needs content, got null."),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content", "empty_array",
     "Invalid 'messages[0].content': empty array. Expected an array with minimum length 1."),
    ({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "messages[0].content[0].type",
     "missing_required_parameter", "Missing required parameter: 'messages[0].content[0].type'."),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text",
     "invalid_type", "Invalid 'messages[0].content[0].text': expected a string."),
    ({"messages": [*SAY_HI, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "sunny"}]}, "messages[2].tool_call_id", "missing_required_parameter",
     "Missing required parameter: 'messages[2].tool_call_id'."),
])
@pytest.mark.parametrize("model", ["gpt-4o-mini", "local", "upstream"])
def test_bad_input_is_the_openai_400_on_every_tier(
    gateway: RunningGateway, model: str, extra: dict[str, Any], param: str, code: str | None, message: str
) -> None:
    response = post(gateway, {"model": model, "messages": SAY_HI, "max_tokens": 3, **extra})
    assert response.status_code == 400
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                         "code": code}}


def test_the_sdk_raises_bad_request_with_the_param(gateway: RunningGateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="local", messages=SAY_HI, temperature=3)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert caught.value.param == "temperature"  # type: ignore[attr-defined]
    assert caught.value.code == "invalid_value"  # type: ignore[attr-defined]


# -- fields only the upstream can honour ----------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "param"), [
    ({"logit_bias": {"1234": -100}}, "logit_bias"),  # token ids of the upstream's tokenizer
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"store": True}, "store"),  # read back later by id: only the upstream keeps it
    ({"web_search_options": {}}, "web_search_options"),
])
def test_a_field_the_local_model_cannot_honour_goes_upstream_or_is_refused_when_pinned(
    gateway: RunningGateway, fake_upstream: str, extra: dict[str, Any], param: str
) -> None:
    request_id = f"edge-{param}"
    routed = httpx.post(f"{gateway.base_url}/chat/completions", headers={"x-request-id": request_id}, timeout=60,
                        json={"model": "gpt-4o-mini", "messages": SAY_HI, **extra})
    assert routed.status_code == 200
    assert routed.headers["x-gateway-route"] == "upstream"
    assert routed.headers["x-gateway-route-reason"] == f"the local tier cannot honour '{param}': upstream (rule 'auto')"
    assert routed.json()["choices"][0]["message"]["content"] == "fake answer to: Say hi"
    received = httpx.get(f"{fake_upstream.removesuffix('/v1')}/_fake/requests", timeout=10).json()["data"]
    sent = [r["body"] for r in received if r["headers"].get("x-request-id") == request_id]
    assert sent == [{"model": "gpt-4o-mini", "messages": SAY_HI, **extra}]  # the field reached the upstream as given

    pinned = post(gateway, {"model": "local", "messages": SAY_HI, "max_tokens": 3, **extra})
    assert pinned.status_code == 400
    assert pinned.json() == {"error": {
        "message": f"The request is pinned to the local tier (model 'local'), which does not support '{param}'.",
        "type": "invalid_request_error", "param": param, "code": "unsupported_on_local"}}


def test_a_store_request_is_never_answered_from_the_cache(gateway: RunningGateway, fake_upstream: str) -> None:
    """`store` is not part of the cache key: a `store: true` request was replayed from the cached answer of an
    identical unstored one, so the provider never kept it and its id could not be read back."""
    messages = [{"role": "user", "content": "Store me, please."}]

    def send(store: bool, attempt: int) -> tuple[str, str]:
        request_id = f"edge-store-{store}-{attempt}"
        response = httpx.post(f"{gateway.base_url}/chat/completions", headers={"x-request-id": request_id},
                              json={"model": "upstream", "messages": messages, "temperature": 0, "store": store},
                              timeout=60)
        assert response.status_code == 200
        received = httpx.get(f"{fake_upstream.removesuffix('/v1')}/_fake/requests", timeout=10).json()["data"]
        reached = sum(r["headers"].get("x-request-id") == request_id for r in received)
        return response.headers["x-gateway-cache"], f"upstream saw it {reached} time(s)"

    assert [send(False, 0), send(False, 1)] == [("miss", "upstream saw it 1 time(s)"), ("hit", "upstream saw it 0 time(s)")]
    assert [send(True, 0), send(True, 1)] == [("bypass", "upstream saw it 1 time(s)")] * 2


@pytest.mark.parametrize("extra", [{"store": False}, {"modalities": ["text"]}, {"logit_bias": {}},
                                   {"audio": None}, {"user": "u-1", "metadata": {"team": "a"}, "seed": 7}])
def test_fields_that_ask_for_nothing_the_local_model_lacks_stay_local(
    gateway: RunningGateway, extra: dict[str, Any]
) -> None:
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=FRESH, timeout=300,
                          json={"model": "local", "messages": SAY_HI, "max_tokens": 3, "temperature": 0, **extra})
    assert response.status_code == 200
    assert response.headers["x-gateway-route"] == "local"
    assert response.json()["choices"][0]["message"]["content"] == "Hello! How"


# -- the local model sees every message ------------------------------------------------------------------------
def test_a_developer_message_is_the_local_models_system_prompt(gateway: RunningGateway) -> None:
    """The Qwen template skips a role it does not know: `developer` was silently dropped (19 -> 31 tokens, the
    template's default system prompt instead of the client's)."""
    def usage(messages: list[dict[str, Any]]) -> dict[str, int]:
        response = post(gateway, {"model": "local", "messages": messages, "max_tokens": 1, "temperature": 0})
        assert response.status_code == 200
        return response.json()["usage"]["prompt_tokens"]

    french = {"content": "Answer in French."}
    assert usage([{"role": "developer", **french}, *SAY_HI]) == usage([{"role": "system", **french}, *SAY_HI]) == 19
    assert usage(SAY_HI) == 31


def test_a_legacy_function_result_reaches_the_local_model(gateway: RunningGateway, reference: llama_cpp.Llama) -> None:
    messages = [{"role": "user", "content": "x"}, {"role": "function", "name": "f", "content": "RESULT1"}]
    response = post(gateway, {"model": "local", "messages": messages, "max_tokens": 1, "temperature": 0})
    assert response.status_code == 200
    as_tool = [messages[0], {"role": "tool", "tool_call_id": "c1", "content": "RESULT1"}]
    expected = reference.create_chat_completion(messages=as_tool, max_tokens=1, temperature=0)  # type: ignore[arg-type]
    assert response.json()["usage"]["prompt_tokens"] == expected["usage"]["prompt_tokens"] == 46  # type: ignore[index]


def test_an_earlier_refusal_part_is_text_to_the_local_model(gateway: RunningGateway) -> None:
    """OpenAI's assistant content parts are `text` or `refusal`; a refusal part was taken for an image (a 400 when
    pinned local, upstream when routed)."""
    def prompt_tokens(said: object) -> int:
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": said},
                    {"role": "user", "content": "ok"}]
        response = post(gateway, {"model": "local", "messages": messages, "max_tokens": 1, "temperature": 0})
        assert response.status_code == 200
        assert response.headers["x-gateway-route"] == "local"
        return response.json()["usage"]["prompt_tokens"]

    assert prompt_tokens([{"type": "refusal", "refusal": "I cannot help."}]) == prompt_tokens("I cannot help.") == 45


def test_the_stored_completions_list_reaches_the_upstream(gateway: RunningGateway, fake_upstream: str) -> None:
    """`GET /v1/chat/completions` (stored completions, `store: true`) was a 405 from the gateway's POST route."""
    response = httpx.get(f"{gateway.base_url}/chat/completions?limit=2", headers={"x-request-id": "edge-list"},
                         timeout=30)
    assert response.headers["x-gateway-route"] == "upstream"
    assert response.status_code == 405  # the fake upstream's own answer, relayed: it keeps no stored completions
    assert response.json()["error"]["message"] == "Method GET not allowed on /v1/chat/completions."
    received = httpx.get(f"{fake_upstream.removesuffix('/v1')}/_fake/requests", timeout=10).json()["data"]
    sent = [(r["method"], r["path"], r["headers"]["authorization"]) for r in received
            if r["headers"].get("x-request-id") == "edge-list"]
    assert sent == [("GET", "/v1/chat/completions?limit=2", "Bearer sk-upstream-secret")]


# -- local answers: exactly what llama.cpp generates and counts ------------------------------------------------
@pytest.mark.parametrize(("messages", "extra"), [
    (SAY_HI, {}),  # ends on its own: stop
    (CATS, {}),  # cut by max_tokens: length
    (CATS, {"frequency_penalty": 2.0}),  # the penalty changes the answer as llama.cpp's own sampler does
    (CATS, {"presence_penalty": 2.0}),
    (SAY_HI, {"stop": ["!"]}),  # cut by a stop string: the stop string is not in the text
    (SAY_HI, {"stop": "How can"}),  # a stop string of two tokens
])
def test_local_answers_and_usage_equal_llama_cpp(
    gateway: RunningGateway, reference: llama_cpp.Llama, messages: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    expected: Any = reference.create_chat_completion(messages=messages, max_tokens=12, temperature=0, **extra)  # type: ignore[arg-type]
    want_text = expected["choices"][0]["message"]["content"]
    want_reason = expected["choices"][0]["finish_reason"]
    body = {"model": "local", "messages": messages, "max_tokens": 12, "temperature": 0, **extra}

    answer = post(gateway, body).json()
    assert answer["choices"][0]["message"]["content"] == want_text
    assert answer["choices"][0]["finish_reason"] == want_reason
    assert answer["usage"] == expected["usage"]

    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True},
                                                 extra_headers=FRESH))  # generated, not the cached answer replayed
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want_text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [want_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.model_dump(exclude_none=True) == expected["usage"]
    assert {c.model for c in chunks} == {BUNDLED_MODEL_ID}


def test_the_penalties_change_the_local_answer(reference: llama_cpp.Llama) -> None:
    """The control of the test above: without the penalty llama.cpp repeats 'cat' to the limit."""
    plain: Any = reference.create_chat_completion(messages=CATS, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    penalised: Any = reference.create_chat_completion(messages=CATS, max_tokens=12, temperature=0,  # type: ignore[arg-type]
                                                      frequency_penalty=2.0)
    assert plain["choices"][0]["message"]["content"] == " ".join(["cat"] * 12)
    assert plain["choices"][0]["finish_reason"] == "length"
    assert penalised["choices"][0]["message"]["content"] != plain["choices"][0]["message"]["content"]


def test_the_sdk_stream_helper_accumulates_a_local_answer(gateway: RunningGateway, reference: llama_cpp.Llama) -> None:
    expected: Any = reference.create_chat_completion(messages=SAY_HI, max_tokens=40, temperature=0)  # type: ignore[arg-type]
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with client.chat.completions.stream(
        model="local", messages=SAY_HI, max_tokens=40, temperature=0,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, extra_headers=FRESH,
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.model_dump(exclude_none=True) == expected["usage"]


def test_a_legacy_completion_honours_the_penalties_like_llama_cpp(
    gateway: RunningGateway, reference: llama_cpp.Llama
) -> None:
    """`/v1/completions` on the local tier ignored presence/frequency penalties."""
    prompt = "cat cat cat cat"
    expected: Any = reference.create_completion(prompt, max_tokens=8, temperature=0, frequency_penalty=2.0)
    plain: Any = reference.create_completion(prompt, max_tokens=8, temperature=0)
    assert expected["choices"][0]["text"] != plain["choices"][0]["text"]  # the control: the penalty matters here
    response = httpx.post(f"{gateway.base_url}/completions", headers=FRESH, timeout=300, json={
        "model": "local", "prompt": prompt, "max_tokens": 8, "temperature": 0, "frequency_penalty": 2.0})
    assert response.status_code == 200
    answer = response.json()
    assert answer["choices"][0]["text"] == expected["choices"][0]["text"]
    assert answer["choices"][0]["finish_reason"] == expected["choices"][0]["finish_reason"]
    assert answer["usage"] == expected["usage"]

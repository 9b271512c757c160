"""Structured output and tool calls on the local tier, through a running gateway with the official `openai` SDK and
the real bundled model (pinned with `model: "local"`): grammar-constrained JSON that parses and validates, and
tool calls in OpenAI's exact shape, streamed and not."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from gateway.tiers.base import RESPONSE_FORMAT as RESPONSE_FORMAT_FEATURE, TOOLS as TOOLS_FEATURE
from gateway.tiers.local import LlamaCppBackend
from tests.conftest import RunningGateway

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "languages": {"type": "array", "items": {"type": "string", "enum": ["en", "fr", "de"]}, "maxItems": 3},
    },
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}
EXTRACT = [{"role": "user", "content": "Extract the person as JSON: Alice is 31 and speaks English and French."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
LOCAL_TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS = [WEATHER, LOCAL_TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]


def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="sk-test", max_retries=0, timeout=300)


def streamed(gw: RunningGateway, **body: Any) -> tuple[str, list[Any], str | None, Any]:
    """(content, the chunks' tool-call deltas, finish_reason, usage) of a streamed local answer."""
    stream = client(gw).chat.completions.create(
        model="local", stream=True, stream_options={"include_usage": True}, temperature=0, **body
    )
    content, deltas, finish, usage = "", [], None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    return content, deltas, finish, usage


def assert_valid_calls(calls: list[Any]) -> list[tuple[str, dict]]:
    """Every call is OpenAI-shaped with JSON-string arguments valid for its function; returns (name, args)."""
    out = []
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[call.function.name])
        out.append((call.function.name, args))
    return out


def test_local_backend_declares_the_features_it_honours() -> None:
    assert LlamaCppBackend.features == frozenset({TOOLS_FEATURE, RESPONSE_FORMAT_FEATURE}) == {"tools", "response_format"}


# -- response_format -------------------------------------------------------------------------------------------
def test_json_object_mode_parses(gateway: RunningGateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="local", messages=EXTRACT, response_format={"type": "json_object"}, max_tokens=48, temperature=0
    )
    out = raw.parse()
    assert raw.headers["x-gateway-route"] == "local"
    assert out.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_json_object_mode_streamed_parses(gateway: RunningGateway) -> None:
    content, deltas, finish, usage = streamed(
        gateway, messages=EXTRACT, response_format={"type": "json_object"}, max_tokens=48
    )
    assert finish == "stop" and deltas == []
    assert isinstance(json.loads(content), dict)
    assert usage.completion_tokens <= 48


@pytest.mark.parametrize("strict", [True, False])
def test_json_schema_output_validates(gateway: RunningGateway, strict: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "strict": strict, "schema": PERSON}}
    out = client(gateway).chat.completions.create(
        model="local", messages=EXTRACT, response_format=fmt, max_tokens=48, temperature=0
    )
    assert out.choices[0].finish_reason == "stop"
    person = json.loads(out.choices[0].message.content)
    jsonschema.validate(person, PERSON)
    assert person["age"] == 31


def test_json_schema_streamed_validates(gateway: RunningGateway) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}}
    content, _, finish, _ = streamed(gateway, messages=EXTRACT, response_format=fmt, max_tokens=48)
    assert finish == "stop"
    jsonschema.validate(json.loads(content), PERSON)


UNENFORCEABLE = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]}


def test_schema_the_local_model_cannot_enforce_is_a_clear_400(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory()  # no upstream to fall back to
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": UNENFORCEABLE}}
    response = httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": "local", "messages": EXTRACT, "response_format": fmt},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "response_format: $.properties.n: keyword 'minimum' is not supported here by the local model",
            "type": "invalid_request_error",
            "param": "response_format.json_schema.schema",
            "code": "unsupported_schema",
        }
    }


def test_schema_the_local_model_cannot_enforce_goes_upstream_when_the_policy_falls_back(
    gateway_factory: Callable[..., RunningGateway], fake_upstream: str, tmp_path: Any
) -> None:
    policy = tmp_path / "json-local.yaml"
    policy.write_text(
        "rules:\n  - name: json-local\n    when: {response_format: true}\n    action: local\n"
        "    fallback: to_upstream\n"
    )
    gw = gateway_factory("--upstream-url", fake_upstream, "--policy", str(policy))
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": UNENFORCEABLE}}
    raw = client(gw).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=EXTRACT, response_format=fmt)
    assert raw.headers["x-gateway-route"] == "upstream"  # json-local's fallback: to_upstream


def test_a_pinned_local_request_with_a_schema_it_cannot_enforce_is_a_400_not_a_spill(gateway: RunningGateway) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": UNENFORCEABLE}}
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="local", messages=EXTRACT, response_format=fmt)
    assert caught.value.status_code == 400 and caught.value.body["code"] == "unsupported_schema"


# -- tools ---------------------------------------------------------------------------------------------------------
def test_tool_choice_auto_calls_the_tool(gateway: RunningGateway) -> None:
    out = client(gateway).chat.completions.create(model="local", messages=PARIS, tools=TOOLS, max_tokens=48, temperature=0)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [name for name, _ in assert_valid_calls(choice.message.tool_calls)] == ["get_weather"]
    assert assert_valid_calls(choice.message.tool_calls)[0][1]["city"] == "Paris"


def test_tool_choice_auto_may_answer_in_text(gateway: RunningGateway) -> None:
    out = client(gateway).chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Write a haiku about the sea."}], tools=[WEATHER],
        max_tokens=24, temperature=0,
    )
    assert out.choices[0].message.tool_calls is None
    assert out.choices[0].finish_reason in ("stop", "length")
    assert not out.choices[0].message.content.lstrip().startswith("<tool_call>")


def test_tool_choice_required_streams_openai_shaped_deltas(gateway: RunningGateway) -> None:
    content, deltas, finish, usage = streamed(gateway, messages=PARIS, tools=TOOLS, tool_choice="required", max_tokens=48)
    assert content == "" and finish == "tool_calls"
    head, body = deltas[0], deltas[1]
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function"
    assert head.function.name == "get_weather" and head.function.arguments == ""
    assert body.index == 0 and body.id is None
    args = json.loads("".join(d.function.arguments or "" for d in deltas if d.index == 0))
    jsonschema.validate(args, SCHEMAS["get_weather"])
    assert usage.completion_tokens <= 48


def test_named_tool_choice_forces_that_function(gateway: RunningGateway) -> None:
    out = client(gateway).chat.completions.create(
        model="local", messages=PARIS, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=32, temperature=0,
    )
    assert out.choices[0].finish_reason == "tool_calls"
    assert assert_valid_calls(out.choices[0].message.tool_calls) == [("get_time", {"city": "Paris"})]


def test_parallel_tool_calls(gateway: RunningGateway) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris and what is the weather in Tokyo?"}]
    out = client(gateway).chat.completions.create(
        model="local", messages=question, tools=[WEATHER], tool_choice="required", max_tokens=80, temperature=0
    )
    calls = assert_valid_calls(out.choices[0].message.tool_calls)
    assert [(name, args["city"]) for name, args in calls] == [("get_weather", "Paris"), ("get_weather", "Tokyo")]
    assert len({c.id for c in out.choices[0].message.tool_calls}) == 2


def test_a_parallel_call_cut_by_max_tokens_finishes_with_length(gateway: RunningGateway) -> None:
    """max_tokens 40 stops the second call (63 tokens in all at temperature 0) after the complete first one, before
    the second's name is whole: the complete call only, and `length` as OpenAI reports a generation stopped by
    max_tokens (not `tool_calls`). max_tokens 52 stops it inside its arguments: as OpenAI, the complete call and the
    cut one as a partial entry (its name, its arguments as truncated JSON). Streamed alike, the cut call at index 1."""
    question = [{"role": "user", "content": "What is the weather in Paris and what is the weather in Tokyo?"}]
    ask = {"messages": question, "tools": [WEATHER], "tool_choice": "required"}
    whole = client(gateway).chat.completions.create(model="local", max_tokens=80, temperature=0, **ask)
    assert (whole.choices[0].finish_reason, whole.usage.completion_tokens) == ("tool_calls", 63)
    paris = ("get_weather", '{"city": "Paris", "unit": "celsius"}')
    for max_tokens, calls in ((40, [paris]), (52, [paris, ("get_weather", '{"city": "Tokyo",')])):
        cut = client(gateway).chat.completions.create(model="local", max_tokens=max_tokens, temperature=0, **ask)
        choice = cut.choices[0]
        assert (choice.finish_reason, choice.message.content, cut.usage.completion_tokens) == ("length", None, max_tokens)
        assert [(c.function.name, c.function.arguments) for c in choice.message.tool_calls] == calls
        assert all(c.id.startswith("call_") and c.type == "function" for c in choice.message.tool_calls)
        assert len({c.id for c in choice.message.tool_calls}) == len(calls)
        content, deltas, finish, usage = streamed(gateway, max_tokens=max_tokens, **ask)
        assert (content, finish, usage.completion_tokens) == ("", "length", max_tokens)
        assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [
            x for i, (name, arguments) in enumerate(calls) for x in ((i, name, ""), (i, None, arguments))]
        assert [d.id is not None and d.id.startswith("call_") for d in deltas] == [True, False] * len(calls)


@pytest.mark.parametrize(("tool_choice", "so_far"), [("required", '{"city'), ("auto", '{"city": "')])
def test_a_first_call_cut_by_max_tokens_is_a_partial_call_not_markup(
    gateway: RunningGateway, tool_choice: str, so_far: str
) -> None:
    """max_tokens 16 stops the first call inside its arguments: as OpenAI, `length` and the call so far (its name,
    its arguments as truncated JSON), `content` null; never the model's `<tool_call>` markup. Streamed alike. (The two
    choices reach different points in 16 tokens at temperature 0.) Cut before the name is whole: no call at all."""
    ask = {"messages": PARIS, "tools": [WEATHER], "tool_choice": tool_choice, "max_tokens": 16}
    cut = client(gateway).chat.completions.create(model="local", temperature=0, **ask)
    choice = cut.choices[0]
    assert (choice.finish_reason, choice.message.content, cut.usage.completion_tokens) == ("length", None, 16)
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", so_far)
    content, deltas, finish, usage = streamed(gateway, **ask)
    assert (content, finish, usage.completion_tokens) == ("", "length", 16)
    assert [(d.index, d.function.name) for d in deltas] == [(0, "get_weather"), (0, None)]
    assert deltas[0].id.startswith("call_") and deltas[0].function.arguments == ""
    assert deltas[1].function.arguments == so_far
    early = client(gateway).chat.completions.create(model="local", temperature=0, **{**ask, "max_tokens": 3})
    assert (early.choices[0].finish_reason, early.choices[0].message.content) == ("length", None)
    assert early.choices[0].message.tool_calls is None
    assert streamed(gateway, **{**ask, "max_tokens": 3})[:3] == ("", [], "length")


def test_tool_round_trip_ends_in_an_answer(gateway: RunningGateway) -> None:
    """call -> role:tool result -> final answer. The final turn uses tool_choice "none": the 0.5B model, given the
    tools again, repeats its call instead of answering (measured at temperature 0)."""
    api = client(gateway)
    first = api.chat.completions.create(model="local", messages=PARIS, tools=TOOLS, max_tokens=48, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *PARIS,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 18, "sky": "sunny"})},
    ]
    final = api.chat.completions.create(
        model="local", messages=messages, tools=TOOLS, tool_choice="none", max_tokens=40, temperature=0
    )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.tool_calls is None
    assert "18" in final.choices[0].message.content  # the tool's result reached the model

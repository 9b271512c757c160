"""LangChain's `ChatOpenAI.bind_tools(...)` and `with_structured_output(...)` against a running gateway, answered by
the real bundled model on the local tier (`model: "local"`, greedy decoding): tool calls and structured output
come back in the shapes LangChain parses, streamed and not, including a full tool round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.conftest import BUNDLED_MODEL_ID, RunningGateway

langchain_openai = pytest.importorskip("langchain_openai")
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return json.dumps({"city": city, "temperature_c": 22, "sky": "sunny"})


@tool
def get_time(city: str) -> str:
    """Current local time in a city."""
    return f"It is 14:05 in {city}."


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="The person's first name")
    age: int = Field(description="Age in years")


PARIS = "What is the weather in Paris?"
FINAL_ANSWER = '{"name": "get_weather", "arguments": {"city": "Paris"}}\n{"temperature_c": 22, "sky": "sunny"}'
"""The 0.5B model's greedy final turn: it restates its call and the tool's result as text (the protocol round trip
is what is under test; a larger SLM tier writes prose here)."""
ALICE = "Extract the person: Alice is 31 years old and lives in Lyon."


def chat_model(gw: RunningGateway, **kwargs: Any) -> Any:
    return langchain_openai.ChatOpenAI(
        model="local", base_url=gw.base_url, api_key="sk-test", temperature=0, max_retries=0, timeout=300,
        max_tokens=96, **kwargs,
    )


def only_call(message: AIMessage) -> dict[str, Any]:
    assert message.invalid_tool_calls == []
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call["id"].startswith("call_") and call["type"] == "tool_call"
    return {"name": call["name"], "args": call["args"]}


def test_bind_tools_auto_calls_the_weather_tool(gateway: RunningGateway) -> None:
    message = chat_model(gateway).bind_tools([get_weather, get_time]).invoke(PARIS)
    assert only_call(message) == {"name": "get_weather", "args": {"city": "Paris"}}
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.response_metadata["model_name"] == BUNDLED_MODEL_ID  # the local tier answered


def test_bind_tools_with_a_named_tool_choice(gateway: RunningGateway) -> None:
    message = chat_model(gateway).bind_tools([get_weather, get_time], tool_choice="get_time").invoke(PARIS)
    assert only_call(message) == {"name": "get_time", "args": {"city": "Paris"}}


def test_bind_tools_required_streamed(gateway: RunningGateway) -> None:
    bound = chat_model(gateway, stream_usage=True).bind_tools([get_weather, get_time], tool_choice="required")
    merged = None
    for chunk in bound.stream(PARIS):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert only_call(merged) == {"name": "get_weather", "args": {"city": "Paris"}}
    assert merged.response_metadata["finish_reason"] == "tool_calls"
    # greedy: the streamed usage is exactly that of the same request answered whole
    whole = bound.invoke(PARIS).usage_metadata
    counts = ("input_tokens", "output_tokens", "total_tokens")
    assert {k: merged.usage_metadata[k] for k in counts} == {k: whole[k] for k in counts}
    assert whole["total_tokens"] == whole["input_tokens"] + whole["output_tokens"]


def test_tool_round_trip_ends_in_an_answer(gateway: RunningGateway) -> None:
    """call -> ToolMessage -> final answer. The final turn binds the tool with tool_choice "none": the 0.5B model,
    offered the tool again, repeats its call instead of answering (as in test_local_structured)."""
    model = chat_model(gateway)
    messages: list[Any] = [HumanMessage(PARIS)]
    first = model.bind_tools([get_weather]).invoke(messages)
    assert only_call(first) == {"name": "get_weather", "args": {"city": "Paris"}}
    call = first.tool_calls[0]
    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = model.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert final.tool_calls == []
    assert final.response_metadata["finish_reason"] == "stop"
    assert final.content == FINAL_ANSWER


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output_gives_the_pydantic_object(gateway: RunningGateway, method: str) -> None:
    structured = chat_model(gateway).with_structured_output(Person, method=method, include_raw=True)
    result = structured.invoke(ALICE)
    assert result["parsing_error"] is None
    assert result["parsed"] == Person(name="Alice", age=31)
    assert result["raw"].response_metadata["model_name"] == BUNDLED_MODEL_ID


def test_with_structured_output_json_schema_streamed(gateway: RunningGateway) -> None:
    structured = chat_model(gateway).with_structured_output(Person, method="json_schema")
    parts = list(structured.stream(ALICE))
    assert parts[-1] == Person(name="Alice", age=31)

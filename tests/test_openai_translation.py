"""Responses <-> chat and legacy completion translations, as plain functions (no server)."""

from __future__ import annotations

import msgspec
import pytest

from gateway.errors import InvalidRequest
from gateway.openai.completions import parse_completion
from gateway.openai.responses import ResponseEvents, to_chat, to_response
from gateway.passthrough import UpstreamURL, forwarded_request_headers, upstream_auth_headers

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def test_string_input_and_instructions_become_system_and_user_messages() -> None:
    out = to_chat({"model": "m", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 9,
                   "temperature": 0.2})
    assert out.blockers == []
    assert out.chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_tokens": 9,
        "temperature": 0.2,
    }


def test_items_function_calls_and_outputs_translate_to_chat_tool_messages() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "developer", "content": "sys"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
        "stream": True,
    }
    out = to_chat(body)
    assert out.blockers == []
    assert out.chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]
    assert out.chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER_TOOL["parameters"], "description": "Weather in a city.",
        "strict": True}}]
    assert out.chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert out.chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "w", "schema": {"type": "object"}, "strict": True}}
    assert out.chat["stream"] is True and out.chat["stream_options"] == {"include_usage": True}


def test_stateful_fields_and_builtin_tools_are_blockers() -> None:
    out = to_chat({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}],
                   "previous_response_id": "resp_1", "tools": [{"type": "web_search"}]})
    assert out.blockers == ["previous_response_id", "input[0].type=item_reference", "tools[0].type=web_search"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ],
)
def test_malformed_requests_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        to_chat(body)
    assert err.value.param == param and err.value.status_code == 400


def test_completion_with_text_and_tool_call_becomes_a_response() -> None:
    completion = {
        "id": "chatcmpl-1", "created": 1700000000, "model": "qwen",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_9", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"fake"}'}}]}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
    }
    response = to_response(completion, {"model": "auto", "input": "x", "tools": [WEATHER_TOOL]}, "resp_1")
    assert response["id"] == "resp_1" and response["object"] == "response" and response["status"] == "completed"
    assert response["model"] == "qwen" and response["created_at"] == 1700000000
    message, call = response["output"]
    assert message["type"] == "message" and message["content"][0] == {
        "type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}
    assert {k: call[k] for k in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": '{"city":"fake"}',
        "status": "completed"}
    assert response["usage"] == {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 0},
                                 "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0},
                                 "total_tokens": 15}
    assert response["tools"] == [WEATHER_TOOL]


def test_length_finish_is_an_incomplete_response() -> None:
    completion = {"model": "m", "choices": [{"finish_reason": "length", "message": {"content": "a b"}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    response = to_response(completion, {"model": "m", "input": "x", "max_output_tokens": 2})
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


def _decode_events(frames: list[bytes]) -> list[dict]:
    events = []
    for frame in frames:
        head, data = frame.split(b"\n", 1)
        event = msgspec.json.decode(data.removeprefix(b"data: ").strip())
        assert head == b"event: " + event["type"].encode()
        events.append(event)
    return events


def test_stream_events_follow_the_responses_sequence() -> None:
    events = ResponseEvents({"model": "m", "input": "x"}, "m", "resp_s")
    frames = events.start()
    frames += events.feed({"model": "qwen", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    frames += events.feed({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    frames += events.feed({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]})
    frames += events.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    frames += events.finish()
    decoded = _decode_events(frames)
    assert [e["type"] for e in decoded] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert [e["sequence_number"] for e in decoded] == list(range(10))
    assert decoded[6]["text"] == "Hello"
    final = decoded[-1]["response"]
    assert final["status"] == "completed" and final["model"] == "qwen"
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 2


def test_stream_events_for_a_tool_call() -> None:
    events = ResponseEvents({"model": "m", "input": "x"}, "m")
    frames = events.start()
    frames += events.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}]})
    frames += events.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '{"a":1}'}}]}, "finish_reason": "tool_calls"}]})
    frames += events.finish()
    decoded = _decode_events(frames)
    assert [e["type"] for e in decoded] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]
    assert decoded[4]["arguments"] == '{"a":1}' and decoded[4]["name"] == "f"
    assert decoded[-1]["response"]["output"] == [{"type": "function_call", "id": decoded[2]["item"]["id"],
                                                  "call_id": "call_1", "name": "f", "arguments": '{"a":1}',
                                                  "status": "completed"}]


def test_legacy_completion_parsing_and_local_blockers() -> None:
    plain = parse_completion({"model": "m", "prompt": "Once upon", "max_tokens": 5})
    assert plain.text == "Once upon" and plain.blockers == []
    assert parse_completion({"model": "m", "prompt": ["one"]}).text == "one"
    tokens = parse_completion({"model": "m", "prompt": [1, 2, 3], "echo": True, "logprobs": 2, "n": 2})
    assert tokens.text is None and tokens.blockers == ["logprobs", "n", "echo", "prompt"]
    with pytest.raises(InvalidRequest) as err:
        parse_completion({"model": "m"})
    assert err.value.param == "prompt"
    with pytest.raises(InvalidRequest) as err:
        parse_completion({"model": "m", "prompt": "x", "max_tokens": "many"})
    assert err.value.param == "max_tokens"


@pytest.mark.parametrize(
    ("base", "path", "query", "url"),
    [
        ("https://api.openai.com/v1", "files", "", "https://api.openai.com/v1/files"),
        ("https://api.openai.com/v1/", "models/gpt-4o", "", "https://api.openai.com/v1/models/gpt-4o"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "chat/completions", "",
         "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"),
        ("https://api.deepseek.com", "chat/completions", "", "https://api.deepseek.com/chat/completions"),
        ("https://x.openai.azure.com/openai/v1?api-version=preview", "files", "limit=2",
         "https://x.openai.azure.com/openai/v1/files?api-version=preview&limit=2"),
    ],
)
def test_upstream_urls_join_paths_and_keep_their_query(base: str, path: str, query: str, url: str) -> None:
    assert UpstreamURL.parse(base).join(path, query) == url


def test_forwarded_headers_drop_client_credentials_and_hop_by_hop_ones() -> None:
    headers = [("Authorization", "Bearer client"), ("x-api-key", "k"), ("api-key", "k"), ("Host", "gw"),
               ("Connection", "keep-alive"), ("Content-Type", "application/json"), ("x-gateway-route", "local"),
               ("OpenAI-Beta", "assistants=v2")]
    out = forwarded_request_headers(headers, upstream_auth_headers("sk-up"))
    assert out == {"content-type": "application/json", "openai-beta": "assistants=v2",
                   "authorization": "Bearer sk-up"}
    assert upstream_auth_headers("sk-az", "api-key") == {"api-key": "sk-az"}
    assert upstream_auth_headers(None) == {}

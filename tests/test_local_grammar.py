"""Grammar building and tool-call parsing for the local tier, without the model: which schemas are enforceable,
how the opening of an answer is classified, and how tool calls are parsed and streamed."""

from __future__ import annotations

import json

import msgspec
import pytest

from gateway.openai.request import parse_chat_request
from gateway.errors import InvalidRequest
from gateway.tiers.grammar import UnsupportedSchema, check_supported, schema_grammar, tool_calls_grammar
from gateway.tiers.structured import DeltaStream, LocalCannotServe, parse_tool_calls, plan_output
from gateway.tiers.tool_probe import ToolCallProbe


def request(**body: object):
    return parse_chat_request(msgspec.json.encode({"model": "local", "messages": [{"role": "user", "content": "x"}], **body}))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[a-z]+$"}}, "required": ["a"]},
        {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}, "additionalProperties": False},
        {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "maxItems": 2},
        {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/p"}], "$defs": {"p": {"type": "integer"}}},
        {"type": ["string", "null"], "title": "t", "description": "d"},
    ],
)
def test_enforceable_schemas_are_accepted(schema: dict) -> None:
    check_supported(schema)
    assert "root ::=" in schema_grammar(schema)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integer", "minimum": 1}, "$: keyword 'minimum' is not supported here by the local model"),
        ({"oneOf": [{"type": "string"}]}, "$: keyword 'oneOf' is not supported here by the local model"),
        ({"type": "string", "pattern": "^a$", "minLength": 2}, "$: keyword 'minLength' is not supported here by the local model"),
        ({"type": "object", "properties": {}, "required": ["x"]}, "$: required properties ['x'] are not in 'properties'"),
        ({"type": "object", "properties": {"a": {"type": "uuid"}}}, "$.properties.a: unknown type 'uuid'"),
        ({"$ref": "https://example.com/s.json"}, "$: only local $refs ('#/...') are supported"),
    ],
)
def test_unenforceable_schemas_are_refused_naming_the_keyword(schema: dict, message: str) -> None:
    with pytest.raises(UnsupportedSchema) as caught:
        check_supported(schema)
    assert str(caught.value) == message


def test_unanchored_pattern_is_refused_by_the_converter() -> None:
    with pytest.raises(UnsupportedSchema, match="cannot compile"):
        schema_grammar({"type": "string", "pattern": "[a-z]+"})


def test_tool_grammars_name_each_function_and_keep_definitions_apart() -> None:
    defs = {"$defs": {"p": {"type": "string"}}, "type": "object", "properties": {"v": {"$ref": "#/$defs/p"}}}
    other = {"$defs": {"p": {"type": "integer"}}, "type": "object", "properties": {"v": {"$ref": "#/$defs/p"}}}
    whole, rest = tool_calls_grammar([{"name": "f", "parameters": defs}, {"name": "g", "parameters": other}], parallel=True)
    assert 'root ::= "<tool_call>" tool-calls-rest' in whole and rest.endswith("root ::= tool-calls-rest")
    assert 'fn0-call ::= "{\\"name\\": \\"f\\", \\"arguments\\": " fn0-arguments "}"' in whole
    assert "fn0-arguments-v ::= string" in whole and "fn1-arguments-v ::= integer" in whole


@pytest.mark.parametrize(
    ("opening", "verdict"),
    [
        ("<tool_call>", True),
        ("<tool", None),
        ('```json\n{\n  "name": "get_weather"', True),
        ('{"name": "get_w', None),
        ('{"name": "hello"', False),
        ("Hello", False),
        ("```python\nx", False),
        ('{"city"', False),
    ],
)
def test_probe_classifies_the_opening_of_an_answer(opening: str, verdict: bool | None) -> None:
    assert ToolCallProbe(("get_weather", "get_time")).classify(opening) is verdict


def test_tool_calls_parse_and_stream_in_openai_shape() -> None:
    text = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
    calls = parse_tool_calls(text)
    assert [(c["type"], c["function"]) for c in calls] == [
        ("function", {"name": "f", "arguments": '{"a": 1}'}),
        ("function", {"name": "g", "arguments": "{}"}),
    ]
    stream = DeltaStream(calls_tools=True)
    deltas = [d for piece in (text[:5], text[5:40], text[40:]) for d in stream.feed(piece)]
    assert [json.dumps({k: v for k, v in d["tool_calls"][0].items() if k != "id"}) for d in deltas] == [
        json.dumps({"index": 0, "type": "function", "function": {"name": "f", "arguments": ""}}),
        json.dumps({"index": 0, "function": {"arguments": '{"a": 1}'}}),
        json.dumps({"index": 1, "type": "function", "function": {"name": "g", "arguments": ""}}),
        json.dumps({"index": 1, "function": {"arguments": "{}"}}),
    ]
    assert stream.finish("stop") == ([], "tool_calls")
    text_stream = DeltaStream(calls_tools=True)
    assert text_stream.feed("He") == [{"content": "He"}] and text_stream.finish("stop") == ([], "stop")


FIRST = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'


@pytest.mark.parametrize(("later", "cut"), [
    ('<tool_call>\n{"name": "g", "arguments": {"city": "Par', ("g", '{"city": "Par')),  # inside the arguments
    ('<tool_call>\n{"name": "g", "arg', ("g", "")),  # the name whole, the arguments not started
    ('<tool_call>\n{"name": "g", "arguments": {"b": 2}}\n</tool', ("g", '{"b": 2}')),  # only the close cut
    ('<tool_call>\n{"name": "g', None),  # the name not whole: no entry
    ("<tool_", None),
    ("", None),
])
def test_a_later_call_cut_by_max_tokens_is_a_partial_entry(later: str, cut: tuple[str, str] | None) -> None:
    """A call that max_tokens cut after a complete one is a partial `tool_calls` entry (its name, its arguments so
    far), as OpenAI returns it, after the complete call, with `length`; streamed alike, at its own index. A call
    whose name is not whole yet is no entry; without `length` (a stop) nothing is added."""
    plan = plan_output(request(tools=[{"type": "function", "function": {"name": n}} for n in ("f", "g")],
                               tool_choice="required"))
    expected = [("f", '{"a": 1}')] + ([cut] if cut else [])
    message, finish = plan.message(FIRST + later, "length")
    assert (finish, message["content"]) == ("length", None)
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == expected
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in message["tool_calls"])
    assert len({c["id"] for c in message["tool_calls"]}) == len(expected)
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in plan.message(FIRST, "stop")[0]["tool_calls"]] \
        == [("f", '{"a": 1}')]
    stream = plan.deltas()
    text = FIRST + later
    deltas = [d for i in range(0, len(text), 7) for d in stream.feed(text[i:i + 7])]
    rest, finish = stream.finish("length")
    calls = [d["tool_calls"][0] for d in deltas + rest]
    assert finish == "length"
    assert [(c["index"], c.get("function", {}).get("name"), c["function"]["arguments"]) for c in calls] == [
        (0, "f", ""), (0, None, '{"a": 1}'), *([(1, cut[0], ""), (1, None, cut[1])] if cut else [])]
    ids = [c["id"] for c in calls if "id" in c]
    assert len(set(ids)) == len(ids) == len(expected)


def test_plans_follow_tool_choice() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    assert plan_output(request(tools=tools, tool_choice="none")).tools is None
    auto = plan_output(request(tools=tools))
    assert auto.probe_names == ("f",) and auto.grammar is None and auto.calls_tools
    assert plan_output(request(tools=tools, tool_choice="required")).grammar.endswith('root ::= "<tool_call>" tool-calls-rest')
    with pytest.raises(InvalidRequest) as caught:
        plan_output(request(tools=tools, tool_choice={"type": "function", "function": {"name": "nope"}}))
    assert (caught.value.param, caught.value.message) == ("tool_choice", "'tool_choice' names 'nope', which is not in 'tools'.")
    with pytest.raises(InvalidRequest) as caught:
        plan_output(request(tools=tools, tool_choice={"type": "function", "function": "f"}))
    assert caught.value.param == "tool_choice"
    with pytest.raises(LocalCannotServe) as refused:
        plan_output(request(functions=[{"name": "f"}]))
    assert refused.value.param == "functions"

"""What the local tier must produce for a request: free text, JSON (`response_format`), or tool calls (`tools`).

`plan_output` validates the request's `response_format` / `tools` / `tool_choice` / `parallel_tool_calls` and
returns an `OutputPlan`: the grammar(s) for generation, the tools to render into the prompt, and how to turn the
generated text into OpenAI's message (`tool_calls`, `finish_reason: "tool_calls"`) or streamed deltas.

Tool calls use the model's own format (Qwen2.5: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`).
`tool_choice: "auto"` lets the model choose: it starts writing freely and a `ToolCallProbe` reads the opening
(`<tool_call>`, a ```json block or a bare `{"name": ...}` naming a given function); a call is restarted as
`<tool_call>` plus grammar-constrained calls, anything else stays free text (or, with `response_format`, is
restarted under the answer's grammar). `"required"` and a named function constrain the output from the start;
`"none"` renders no tools and generates text.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import msgspec

from gateway.openai.request import ParsedRequest
from gateway.errors import InvalidRequest
from gateway.tiers import grammar as g
from gateway.tiers.tool_probe import ToolCallProbe

_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CALL = re.compile(re.escape(g.TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(g.TOOL_CALL_CLOSE), re.DOTALL)
# A call max_tokens cut before its `</tool_call>`: its (complete) name and the arguments written so far.
_CUT_CALL = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")(?:\s*,\s*"arguments"\s*:\s*(.*))?', re.DOTALL)


class LocalCannotServe(InvalidRequest):
    """A request the local model cannot honour (400); a policy's upstream fallback may serve it instead."""

    recoverable = True


class OutputPlan(msgspec.Struct, kw_only=True):
    """How to generate and present one request's answer."""

    grammar: str | None = None
    probe_names: tuple[str, ...] = ()  # tool_choice auto: the functions the model may decide to call
    call_grammar: str | None = None  # ... the grammar of the calls after an opening `<tool_call>`
    text_grammar: str | None = None  # ... the grammar of an answer that is not a call (`response_format`)
    tools: list[dict[str, Any]] | None = None  # rendered into the prompt
    calls_tools: bool = False  # the answer may be tool calls

    def message(self, text: str, finish_reason: str) -> tuple[dict[str, Any], str]:
        """The assistant message and finish reason for the generated `text` (`max_tokens` cutting a later call
        after complete ones: those calls, the cut one as a partial call, and `length`, as OpenAI returns them)."""
        calls = parse_tool_calls(text) if self.calls_tools else None
        if calls:
            if finish_reason == "length" and (cut := cut_tool_call(after_calls(text))) is not None:
                calls.append(cut)
            return {"role": "assistant", "content": None, "tool_calls": calls}, calls_finish_reason(finish_reason)
        if self.calls_tools and finish_reason == "length" and is_cut_call(text, self.probe_names):
            cut = cut_tool_call(text)  # the first call cut: OpenAI's partial call, never the model's markup
            return {"role": "assistant", "content": None, **({"tool_calls": [cut]} if cut else {})}, finish_reason
        return {"role": "assistant", "content": text}, finish_reason

    def deltas(self) -> DeltaStream:
        """A converter from streamed text to `delta` objects for this plan."""
        return DeltaStream(self.calls_tools, self.probe_names)


def calls_finish_reason(finish_reason: str) -> str:
    """The finish reason of an answer that has tool calls: `tool_calls`, or `length` when max_tokens stopped it."""
    return "length" if finish_reason == "length" else "tool_calls"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """OpenAI `tool_calls` from the model's complete `<tool_call>` blocks; None when `text` is not tool calls."""
    if not text.lstrip().startswith(g.TOOL_CALL_OPEN):
        return None
    calls = []
    for block in _CALL.findall(text):
        call = _tool_call(block)
        if call is None:
            return None
        calls.append(call)
    return calls or None


def after_calls(text: str) -> str:
    """What follows the last complete `<tool_call>` block of `text` (a later call that max_tokens cut)."""
    end = 0
    for match in _CALL.finditer(text):
        end = match.end()
    return text[end:]


def is_cut_call(text: str, probe_names: tuple[str, ...]) -> bool:
    """Whether `text`, cut by max_tokens without a complete call, is the start of a call: it opens with
    `<tool_call>` (or a start of it), or (`tool_choice: "auto"`) an opening the probe could not tell yet."""
    head = text.lstrip()
    if head.startswith(g.TOOL_CALL_OPEN) or g.TOOL_CALL_OPEN.startswith(head):
        return True
    return bool(probe_names) and ToolCallProbe(probe_names).classify(head) is None


def cut_tool_call(text: str) -> dict[str, Any] | None:
    """The call in `text` (`<tool_call>` and a block that max_tokens cut before `</tool_call>`) as OpenAI returns a
    call cut by max_tokens: its name and the `arguments` written so far (truncated JSON, "" before they start);
    None before the name is complete."""
    head = text.lstrip()
    if not head.startswith(g.TOOL_CALL_OPEN):
        return None
    block = head[len(g.TOOL_CALL_OPEN) :]
    whole = _tool_call(_without_cut_close(block).strip())
    if whole is not None:  # cut between the call's JSON and the end of `</tool_call>`
        return whole
    match = _CUT_CALL.match(block)
    if match is None:
        return None
    name, arguments = json.loads(match.group(1)), match.group(2) or ""
    return {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}


def _without_cut_close(block: str) -> str:
    """`block` without the start of a `</tool_call>` it ends with."""
    close = g.TOOL_CALL_CLOSE
    for size in range(len(close), 0, -1):
        if block.endswith(close[:size]):
            return block[:-size]
    return block


def _tool_call(block: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(block)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
        return None
    arguments = json.dumps(parsed.get("arguments", {}), ensure_ascii=False)
    return {"id": new_call_id(), "type": "function", "function": {"name": parsed["name"], "arguments": arguments}}


class DeltaStream:
    """Turns streamed text into `chat.completion.chunk` deltas: content deltas, or (once the answer opens with
    `<tool_call>`) one call per complete `<tool_call>` block, as OpenAI streams them: `{index, id, type,
    function: {name, arguments: ""}}` then `{index, function: {arguments}}`."""

    def __init__(self, calls_tools: bool, probe_names: tuple[str, ...] = ()) -> None:
        self.mode: str | None = None if calls_tools else "text"
        self.probe_names = probe_names
        self.buffer = ""
        self.calls = 0

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self.mode == "text":
            return [{"content": text}] if text else []
        self.buffer += text
        if self.mode is None:
            head = self.buffer.lstrip()
            if head.startswith(g.TOOL_CALL_OPEN):
                self.mode = "tools"
            elif head and not is_cut_call(head, self.probe_names):  # text (a call's start stays buffered)
                self.mode, text, self.buffer = "text", self.buffer, ""
                return [{"content": text}]
            else:
                return []
        out: list[dict[str, Any]] = []
        while (match := _CALL.search(self.buffer)) is not None:
            self.buffer = self.buffer[match.end() :]
            call = _tool_call(match.group(1))
            if call is not None:
                out += self._call_deltas(call)
        return out

    def _call_deltas(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index, self.calls = self.calls, self.calls + 1
        head = {"index": index, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        body = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        return [{"tool_calls": [head]}, {"tool_calls": [body]}]

    def finish(self, finish_reason: str) -> tuple[list[dict[str, Any]], str]:
        """Deltas for whatever is left, and the final finish reason."""
        rest, self.buffer = self.buffer, ""
        if self.mode == "tools" and self.calls:  # a later call cut by max_tokens: its partial call too
            cut = cut_tool_call(rest) if finish_reason == "length" else None
            return (self._call_deltas(cut) if cut else []), calls_finish_reason(finish_reason)
        if self.mode != "text" and finish_reason == "length":  # the first call cut: its partial call, no markup
            cut = cut_tool_call(rest)
            return (self._call_deltas(cut) if cut else []), finish_reason
        return ([{"content": rest}] if rest else []), finish_reason


# -- validation and planning -----------------------------------------------------------------------------------
def plan_output(request: ParsedRequest) -> OutputPlan:
    """Validate the request's structured-output fields and decide how the local model answers it."""
    raw = request.raw
    if raw.get("functions") is not None or raw.get("function_call") is not None:
        raise LocalCannotServe(
            "The local model serves 'tools', not the deprecated 'functions'.", param="functions", code="unsupported_parameter"
        )
    answer = _answer_schema(request.chat.response_format)
    tools = _functions(request.chat.tools)
    choice = _tool_choice(raw.get("tool_choice"), tools)
    parallel = raw.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise InvalidRequest("'parallel_tool_calls' must be a boolean.", param="parallel_tool_calls", code="invalid_type")
    answer_grammar = _grammar_for_answer(answer)
    if not tools or choice == "none":
        return OutputPlan(grammar=answer_grammar, tools=None)
    named = choice not in ("auto", "required")
    chosen = [f for f in tools if f["name"] == choice] if named else tools
    try:
        whole, rest = g.tool_calls_grammar(chosen, parallel=parallel and not named)
    except g.UnsupportedSchema as exc:
        raise LocalCannotServe(f"Tool parameters: {exc}", param="tools", code="unsupported_schema") from None
    prompt_tools = [{"type": "function", "function": f} for f in tools]
    if choice != "auto":
        return OutputPlan(grammar=whole, tools=prompt_tools, calls_tools=True)
    names = tuple(f["name"] for f in tools)
    return OutputPlan(
        probe_names=names, call_grammar=rest, text_grammar=answer_grammar, tools=prompt_tools, calls_tools=True
    )


def _answer_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """`{}`-free view of `response_format`: None (free text), `{"type": "object"}` (JSON mode) or the schema."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "'response_format.json_schema.schema' must be a JSON schema object.",
                param="response_format.json_schema.schema",
                code="invalid_value",
            )
        return schema
    raise InvalidRequest(
        f"'response_format.type' must be 'text', 'json_object' or 'json_schema', not {kind!r}.",
        param="response_format.type",
        code="invalid_value",
    )


def _grammar_for_answer(schema: dict[str, Any] | None) -> str | None:
    if schema is None:
        return None
    try:
        return g.schema_grammar(schema)
    except g.UnsupportedSchema as exc:
        raise LocalCannotServe(
            f"response_format: {exc}", param="response_format.json_schema.schema", code="unsupported_schema"
        ) from None


def _functions(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools or ()):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest(f"'tools[{i}]' must be a function tool.", param=f"tools[{i}]", code="invalid_value")
        name = function.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise InvalidRequest(
                f"'tools[{i}].function.name' must match ^[a-zA-Z0-9_-]{{1,64}}$.",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
        out.append(function)
    return out


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> str:
    """'none' | 'auto' | 'required' | the name of the function the request forces."""
    if choice is None:
        return "auto"
    if not tools:
        raise InvalidRequest("'tool_choice' is only allowed when 'tools' are given.", param="tool_choice", code="invalid_value")
    if choice in ("none", "auto", "required"):
        return choice
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            "'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}.",
            param="tool_choice",
            code="invalid_value",
        )
    if name not in {f["name"] for f in tools}:
        raise InvalidRequest(f"'tool_choice' names {name!r}, which is not in 'tools'.", param="tool_choice", code="invalid_value")
    return name

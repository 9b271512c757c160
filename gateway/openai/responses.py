"""OpenAI's Responses API, stateless subset, translated onto chat completions (framework-free).

`to_chat(body)` turns a `POST /v1/responses` body into a chat completion body plus the list of things the chat
path cannot honour (`blockers`: stored state, built-in tools, ...; such a request goes to the upstream as-is,
or is refused naming the field). `to_response(completion, body)` turns the chat completion that answered it
into a `response` object, and `ResponseEvents` turns the chat chunks of a stream into the Responses event
sequence (`response.created` ... `response.completed`) that the SDKs parse.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from gateway.errors import InvalidRequest

_MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})
_IGNORED_ITEMS = frozenset({"reasoning"})  # model-internal; carries nothing a chat model can use
_STATEFUL_FIELDS = ("previous_response_id", "conversation", "prompt")
_encode = msgspec.json.encode


class ChatTranslation(msgspec.Struct):
    """A Responses request as a chat completion body, and what the chat path could not honour."""

    chat: dict[str, Any]
    blockers: list[str]
    """Fields (Responses names) that only the upstream's own /responses can serve; empty when none."""


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: `resp_...`, `msg_...`, `fc_...`."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _text_parts(content: Any, param: str, *, images_ok: bool) -> str | list[dict[str, Any]]:
    """Responses content (a string or input parts) as chat content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid("'content' must be a string or an array of content parts.", param, "invalid_type")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise _invalid("A content part must be an object.", where, "invalid_type")
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise _invalid(f"A '{kind}' part needs a string 'text'.", f"{where}.text", "invalid_type")
            parts.append({"type": "text", "text": text})
        elif kind == "input_image" and images_ok:
            url = part.get("image_url")
            if not isinstance(url, str):
                raise _invalid("'input_image' needs an 'image_url' (file_id images need the upstream).", where)
            image: dict[str, Any] = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _invalid(f"Content part type {kind!r} is not supported here.", f"{where}.type")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts) if len(parts) == 1 else parts
    return parts


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        content = _text_parts(output, param, images_ok=False)
        return content if isinstance(content, str) else "".join(p["text"] for p in content)
    raise _invalid("'output' must be a string or an array of text parts.", param, "invalid_type")


def _messages(body: dict[str, Any], blockers: list[str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _invalid("'instructions' must be a string.", "instructions", "invalid_type")
        messages.append({"role": "system", "content": instructions})
    given = body.get("input")
    if given is None:
        raise _invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
        return messages
    if not isinstance(given, list) or not given:
        raise _invalid("'input' must be a string or a non-empty array of items.", "input", "invalid_type")
    for i, item in enumerate(given):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _invalid("An input item must be an object.", where, "invalid_type")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _MESSAGE_ROLES:
                raise _invalid(f"Unknown role {role!r}.", f"{where}.role")
            content = _text_parts(item.get("content"), f"{where}.content", images_ok=role == "user")
            if role == "assistant" and not isinstance(content, str):
                content = "".join(p["text"] for p in content)
            messages.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
            if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
                raise _invalid("A 'function_call' item needs string 'call_id', 'name' and 'arguments'.", where)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # parallel calls: one assistant message
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _invalid("A 'function_call_output' item needs a string 'call_id'.", f"{where}.call_id")
            output = _tool_output(item.get("output"), f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind in _IGNORED_ITEMS:
            continue
        else:
            blockers.append(f"{where}.type={kind}")
    return messages


def _tools(body: dict[str, Any], blockers: list[str]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array.", "tools", "invalid_type")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _invalid("A tool must be an object.", f"tools[{i}]", "invalid_type")
        if tool.get("type") != "function":
            blockers.append(f"tools[{i}].type={tool.get('type')}")
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("A function tool needs a 'name'.", f"tools[{i}].name", "missing_required_parameter")
        function: dict[str, Any] = {"name": name, "parameters": tool.get("parameters") or {"type": "object"}}
        if tool.get("description") is not None:
            function["description"] = tool["description"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out or None


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    text = body.get("text")
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _invalid("'text.format' must be an object.", "text.format", "invalid_type")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _invalid(f"Unknown text format type {kind!r}.", "text.format.type")


def to_chat(body: dict[str, Any]) -> ChatTranslation:
    """A Responses request as a chat completion body; `InvalidRequest` naming the field when it is malformed."""
    blockers = [field for field in _STATEFUL_FIELDS if body.get(field) is not None]
    if body.get("background"):
        blockers.append("background")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    chat: dict[str, Any] = {"model": model, "messages": _messages(body, blockers)}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for same in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(same) is not None:
            chat[same] = body[same]
    tools = _tools(body, blockers)
    if tools:
        chat["tools"] = tools
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
    response_format = _response_format(body)
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return ChatTranslation(chat, blockers)


# -- answers ---------------------------------------------------------------------------------------------------
def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _text_format(body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        return {"format": text["format"]}
    return {"format": {"type": "text"}}


def response_shell(body: dict[str, Any], response_id: str, model: str, created_at: int) -> dict[str, Any]:
    """The `response` object for `body` before any output (status `in_progress`)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": body.get("temperature", 1.0),
        "text": _text_format(body),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant `message` output item holding one `output_text` part."""
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _finish(response: dict[str, Any], finish_reason: str | None) -> None:
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def to_response(completion: dict[str, Any], body: dict[str, Any], response_id: str | None = None) -> dict[str, Any]:
    """The `response` object for the chat completion that answered the Responses request `body`."""
    created = int(completion.get("created") or time.time())
    response = response_shell(body, response_id or new_id("resp"), completion.get("model") or body["model"], created)
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    content = message.get("content")
    tool_calls = message.get("tool_calls") or []
    if content or not tool_calls:
        output.append(message_item(new_id("msg"), content or ""))
    for call in tool_calls:
        function = call.get("function") or {}
        output.append(
            function_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name", ""),
                               function.get("arguments") or "")
        )
    response["output"] = output
    usage = completion.get("usage") or {}
    response["usage"] = _usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    _finish(response, choice.get("finish_reason"))
    return response


class _Call(msgspec.Struct):
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str = ""


class ResponseEvents:
    """Turns a chat completion stream into the Responses event stream, one chunk at a time.

    `start()` gives the opening events; `feed(chunk)` the events a chat chunk causes; `finish()` the closing
    ones (`response.completed`, or `response.incomplete` when the answer was cut at `max_output_tokens`);
    `fail(message, code)` a `response.failed` in place of that. Each event is SSE-framed bytes.
    """

    def __init__(self, body: dict[str, Any], model: str, response_id: str | None = None) -> None:
        self.response = response_shell(body, response_id or new_id("resp"), model, int(time.time()))
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._text: str | None = None
        self._message_id = ""
        self._message_index = -1
        self._calls: dict[int, _Call] = {}
        self._finish_reason: str | None = None
        self._usage = _usage(0, 0)

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encode(payload) + b"\n\n"

    def start(self) -> list[bytes]:
        return [
            self._event("response.created", response=self.response),
            self._event("response.in_progress", response=self.response),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        if chunk.get("model"):
            self.response["model"] = chunk["model"]
        usage = chunk.get("usage")
        if usage:
            self._usage = _usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                events += self._text_delta(text)
            for call in delta.get("tool_calls") or ():
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def _open_message(self) -> list[bytes]:
        events = []
        if self._text is None:
            self._text = ""
            self._message_id = new_id("msg")
            self._message_index = len(self._output)
            item = message_item(self._message_id, "", "in_progress")
            item["content"] = []
            self._output.append(item)
            events.append(self._event("response.output_item.added", output_index=self._message_index, item=item))
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._message_id,
                    output_index=self._message_index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
        return events

    def _text_delta(self, text: str) -> list[bytes]:
        events = self._open_message()
        self._text = (self._text or "") + text
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message_id,
                output_index=self._message_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _call_delta(self, delta: dict[str, Any]) -> list[bytes]:
        events = []
        index = int(delta.get("index", 0))
        function = delta.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            call = _Call(new_id("fc"), len(self._output), delta.get("id") or new_id("call"), function.get("name", ""))
            self._calls[index] = call
            item = function_call_item(call.item_id, call.call_id, call.name, "", "in_progress")
            self._output.append(item)
            events.append(self._event("response.output_item.added", output_index=call.output_index, item=item))
        piece = function.get("arguments") or ""
        if piece:
            call.arguments += piece
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=piece,
                )
            )
        return events

    def _close_items(self) -> list[bytes]:
        events = []
        if self._text is None and not self._calls:
            events += self._open_message()  # an empty answer still has its (empty) message item
        if self._text is not None:
            item = message_item(self._message_id, self._text)
            self._output[self._message_index] = item
            part = item["content"][0]
            where = {"item_id": self._message_id, "output_index": self._message_index, "content_index": 0}
            events.append(self._event("response.output_text.done", **where, text=self._text, logprobs=[]))
            events.append(self._event("response.content_part.done", **where, part=part))
            events.append(self._event("response.output_item.done", output_index=self._message_index, item=item))
        for call in self._calls.values():
            item = function_call_item(call.item_id, call.call_id, call.name, call.arguments)
            self._output[call.output_index] = item
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    name=call.name,
                    arguments=call.arguments,
                )
            )
            events.append(self._event("response.output_item.done", output_index=call.output_index, item=item))
        return events

    def finish(self) -> list[bytes]:
        events = self._close_items()
        self.response["output"] = self._output
        self.response["usage"] = self._usage
        _finish(self.response, self._finish_reason)
        kind = "response.completed" if self.response["status"] == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self.response))
        return events

    def fail(self, message: str, code: str | None) -> list[bytes]:
        self.response["status"] = "failed"
        self.response["output"] = self._output
        self.response["error"] = {"code": code or "server_error", "message": message}
        return [self._event("response.failed", response=self.response)]

"""The fake upstream's other OpenAI endpoints: Responses, legacy completions, embeddings, moderations, files.

Deterministic like its chat answers. Tool calls: a chat (or Responses) request that offers function tools and
whose last message is not a tool result is answered with a call of the first tool (or the one `tool_choice`
names), its arguments filled from the JSON schema (strings "fake", numbers 1, booleans true); after a tool
result the answer is "fake answer to: <tool output>".
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections import OrderedDict
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import msgspec

from gateway.openai.responses import ResponseEvents, to_chat, to_response

FAKE_EMBEDDING_DIM = 8
MAX_FILES = 64
_encode = msgspec.json.encode


def _fill(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return "fake"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _fill(sub) for name, sub in props.items()}
    return None


def tool_call_for(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool call the fake model makes for a chat body, or None when it answers in text."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
    messages = body.get("messages") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none" or (messages and isinstance(messages[-1], dict)
                                         and messages[-1].get("role") == "tool"):
        return None
    function = tools[0].get("function") or {}
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        function = next((t["function"] for t in tools if (t.get("function") or {}).get("name") == wanted), function)
    arguments = _encode(_fill(function.get("parameters") or {"type": "object"})).decode()
    digest = hashlib.sha256(_encode(messages)).hexdigest()[:24]
    return {"id": f"call_{digest}", "type": "function", "function": {"name": function.get("name", ""),
                                                                     "arguments": arguments}}


def tool_result_text(body: dict[str, Any]) -> str | None:
    """The content of the last message when it is a tool result (what the fake answer then echoes)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "tool" and isinstance(last.get("content"), str):
        return last["content"]
    return None


def tool_call_completion(completion: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    """`completion` turned into an answer that makes `call`."""
    choice = completion["choices"][0]
    choice["message"] = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
    choice["finish_reason"] = "tool_calls"
    completion["usage"]["completion_tokens"] = 1
    completion["usage"]["total_tokens"] = completion["usage"]["prompt_tokens"] + 1
    return completion


def tool_call_chunks(base: dict[str, Any], call: dict[str, Any], usage: dict[str, Any] | None) -> list[bytes]:
    """The SSE events of a streamed tool call."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _encode({**base, "choices": [choice]}) + b"\n\n"

    head = {"index": 0, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}
    events = [
        chunk({"role": "assistant", "content": None, "tool_calls": [head]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}),
        chunk({}, "tool_calls"),
    ]
    if usage is not None:
        events.append(b"data: " + _encode({**base, "choices": [], "usage": usage}) + b"\n\n")
    return [*events, b"data: [DONE]\n\n"]


# -- Responses ---------------------------------------------------------------------------------------------
def responses_answer(body: dict[str, Any], complete: Any) -> dict[str, Any]:
    """A non-streamed `response` for a Responses body; `complete(chat_body)` is the fake chat model."""
    translation = to_chat(body)
    return to_response(complete(translation.chat), body)


def responses_events(body: dict[str, Any], complete: Any) -> bytes:
    """The whole Responses event stream for `body`, built from the fake chat model's complete answer."""
    chat = dict(to_chat(body).chat)
    chat.pop("stream", None)
    completion = complete(chat)
    events = ResponseEvents(body, completion["model"])
    out = events.start()
    message = completion["choices"][0]["message"]
    if message.get("content"):
        words = message["content"].split(" ")
        for i, word in enumerate(words):
            out += events.feed({"choices": [{"index": 0, "delta": {"content": word if i == 0 else " " + word}}]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        out += events.feed({"choices": [{"index": 0, "delta": {"tool_calls": [{**call, "index": i}]}}]})
    out += events.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": completion["choices"][0]["finish_reason"]}],
                        "usage": completion["usage"]})
    out += events.finish()
    return b"".join(out)


# -- legacy completions ------------------------------------------------------------------------------------
def legacy_completion(body: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """(the `text_completion` object, its SSE events) for a legacy completion body."""
    prompt = body.get("prompt")
    text_in = prompt if isinstance(prompt, str) else " ".join(p for p in prompt or () if isinstance(p, str))
    text = "fake completion of: " + text_in[:200]
    finish = "stop"
    limit = body.get("max_tokens")
    words = text.split(" ")
    if isinstance(limit, int) and 0 < limit < len(words):
        text, finish = " ".join(words[:limit]), "length"
    prompt_tokens = max(1, len(text_in.split()))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
             "total_tokens": prompt_tokens + len(text.split())}
    base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body.get("model")}
    whole = {**base, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
             "usage": usage}
    events = [
        b"data: " + _encode({**base, "choices": [{"text": piece, "index": 0, "logprobs": None,
                                                  "finish_reason": None}]}) + b"\n\n"
        for piece in [words[0], *(" " + w for w in words[1:])]
    ]
    events.append(b"data: " + _encode({**base, "choices": [{"text": "", "index": 0, "logprobs": None,
                                                             "finish_reason": finish}]}) + b"\n\n")
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append(b"data: " + _encode({**base, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return whole, events


# -- embeddings --------------------------------------------------------------------------------------------
def fake_vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for `text`."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dim)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """An embeddings answer: strings, lists of strings, token ids and lists of token ids all accepted."""
    given = body.get("input")
    items: list[Any] = [given] if isinstance(given, str) or (
        isinstance(given, list) and given and isinstance(given[0], int)) else list(given or [])
    dim = int(body.get("dimensions") or FAKE_EMBEDDING_DIM)
    data = []
    tokens = 0
    for i, item in enumerate(items):
        text = item if isinstance(item, str) else " ".join(str(t) for t in item)
        tokens += len(item.split()) if isinstance(item, str) else len(item)
        vector = fake_vector(text, dim)
        embedding: Any = vector
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {"object": "list", "data": data, "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# -- moderations and files ---------------------------------------------------------------------------------
def moderation(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input")
    items = given if isinstance(given, list) else [given]
    result = {"flagged": False, "categories": {"harassment": False, "violence": False},
              "category_scores": {"harassment": 0.0, "violence": 0.0}, "category_applied_input_types": {}}
    return {"id": "modr-fake", "model": body.get("model") or "omni-moderation-latest",
            "results": [dict(result) for _ in items]}


class FakeFiles:
    """Uploaded files (multipart `file` + `purpose`), at most `MAX_FILES`, oldest dropped first."""

    def __init__(self) -> None:
        self.files: OrderedDict[str, tuple[dict[str, Any], bytes]] = OrderedDict()

    def upload(self, content_type: str, body: bytes) -> dict[str, Any] | None:
        message = BytesParser(policy=HTTP).parsebytes(b"content-type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
        if "file" not in fields:
            return None
        filename, content = fields["file"]
        purpose = fields.get("purpose", (None, b"assistants"))[1].decode()
        file_id = "file-" + hashlib.sha256(content).hexdigest()[:24]
        meta = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename or "upload", "purpose": purpose, "status": "processed"}
        self.files[file_id] = (meta, content)
        while len(self.files) > MAX_FILES:
            self.files.popitem(last=False)
        return meta

    def content(self, file_id: str) -> bytes | None:
        found = self.files.get(file_id)
        return None if found is None else found[1]

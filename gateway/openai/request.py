"""The parts of OpenAI's chat completion request the gateway reads, as msgspec structs.

The raw JSON object is kept as well: fields the gateway does not know (tools, response_format, logprobs, ...)
pass through to the upstream untouched.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

import msgspec

from gateway.errors import InvalidRequest

S = TypeVar("S", bound=msgspec.Struct)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(msgspec.Struct, kw_only=True):
    """One chat message; content is a string, a list of content parts, or null (assistant tool calls)."""

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class ChatRequest(msgspec.Struct, kw_only=True):
    """A validated chat completion request (only the fields the gateway acts on)."""

    model: str
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


_decoder = msgspec.json.Decoder()

CACHE_EXTENSION = "x-gateway-cache"
"""A gateway body field (`extra_body={"x-gateway-cache": "semantic"}` in OpenAI's SDK): the header's cache kind."""

MAX_JSON_DEPTH = 64
"""Deepest nesting of objects/arrays accepted in a body (OpenAI's structured-output schemas stop at 10 levels)."""
MAX_MODEL_NAME_CHARS = 256
MODEL_NAME = re.compile(r"[!-~]{1,%d}" % MAX_MODEL_NAME_CHARS)
"""Accepted model names: 1-256 printable ASCII characters without spaces. That covers OpenAI (`gpt-4o-mini`,
`ft:gpt-4o-mini:org::id`), Azure deployment names, Hugging Face / OpenRouter ids (`Qwen/Qwen2.5-7B:free`), Ollama
tags, Bedrock ARNs and Vertex `@` versions, and is always safe in a response header (`x-gateway-model`)."""


class ParsedRequest(msgspec.Struct):
    """A request as received: the raw JSON object (for pass-through) and its validated view."""

    raw: dict[str, Any]
    chat: ChatRequest
    cache_request: Any = None
    """The body extension `"x-gateway-cache"` (like the header: off, exact, semantic), taken out of `raw` so it
    never reaches a tier nor the cache key; validated by `gateway.cache.rules.requested_cache`."""
    size: int = 0
    """The body's length in bytes as received (0: built in process, not received)."""

    @property
    def include_usage(self) -> bool:
        options = self.chat.stream_options
        return bool(options and options.include_usage)

    @property
    def max_new_tokens(self) -> int | None:
        return self.chat.max_completion_tokens or self.chat.max_tokens

    def with_model(self, model: str) -> dict[str, Any]:
        """The raw body with `model` replaced (a shallow copy; the original stays as received)."""
        if self.raw.get("model") == model:
            return self.raw
        body = dict(self.raw)
        body["model"] = model
        return body


def parse_chat_request(body: bytes) -> ParsedRequest:
    """Decode and validate a chat completion body; raise InvalidRequest with the offending field."""
    if not body:
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    # each level opens a bracket: a body with few brackets cannot be too deep, so only bracket-rich ones are walked
    brackets = body.count(b"{") + body.count(b"[")
    try:
        raw = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # msgspec's C decoder counts nesting against the interpreter's recursion limit
        raise _too_deep() from None
    if not isinstance(raw, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    if brackets > MAX_JSON_DEPTH and _deeper_than(raw, MAX_JSON_DEPTH):
        raise _too_deep()
    cache_request = raw.pop(CACHE_EXTENSION, None)
    if "messages" not in raw:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if "model" not in raw:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    try:
        chat = msgspec.convert(raw, ChatRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid request: {exc}", param=_param_of(str(exc)), code="invalid_type") from None
    if not chat.messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages", code="invalid_value")
    if MODEL_NAME.fullmatch(chat.model) is None:
        raise InvalidRequest(
            f"'model' must be 1-{MAX_MODEL_NAME_CHARS} printable ASCII characters without spaces.",
            param="model", code="invalid_value",
        )
    if chat.n is not None and chat.n < 1:
        raise InvalidRequest("'n' must be at least 1.", param="n", code="invalid_value")
    for limit_name in ("max_tokens", "max_completion_tokens"):  # each: a 0 beside a valid other is still a 0
        limit = getattr(chat, limit_name)
        if limit is not None and limit < 1:
            raise InvalidRequest(f"'{limit_name}' must be at least 1.", param=limit_name, code="invalid_value")
    _check_ranges(chat)
    _check_messages(chat.messages)
    if chat.stream_options is not None and not chat.stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    return ParsedRequest(raw=raw, chat=chat, cache_request=cache_request, size=len(body))


RANGES: tuple[tuple[str, float, float], ...] = (
    ("temperature", 0, 2),
    ("top_p", 0, 1),
    ("presence_penalty", -2, 2),
    ("frequency_penalty", -2, 2),
    ("top_logprobs", 0, 20),
    ("n", 1, 128),
)
"""Numeric fields and OpenAI's bounds for them (a value outside is a 400 there, so here on every tier)."""
LOGIT_BIAS_BOUND = 100


def _check_ranges(chat: ChatRequest) -> None:
    """OpenAI's bounds on the sampling fields, checked on every tier (an out-of-range value is a 400)."""
    for name, low, high in RANGES:
        value = getattr(chat, name)
        if value is not None and not low <= value <= high:
            side = "below minimum" if value < low else "above maximum"
            bound = f">= {low}" if value < low else f"<= {high}"
            raise InvalidRequest(
                f"Invalid '{name}': value {side} value. Expected a value {bound}, but got {value} instead.",
                param=name, code="invalid_value",
            )
    for token, bias in (chat.logit_bias or {}).items():
        if not token.isdigit() or not -LOGIT_BIAS_BOUND <= bias <= LOGIT_BIAS_BOUND:
            raise InvalidRequest(
                f"Invalid 'logit_bias': keys must be token ids and values between -{LOGIT_BIAS_BOUND} and "
                f"{LOGIT_BIAS_BOUND} (got {token!r}: {bias}).",
                param="logit_bias", code="invalid_value",
            )


def _check_messages(messages: list[Message]) -> None:
    """What OpenAI requires of each message: content (null only for an assistant), a non-empty parts array of
    typed parts (text parts with a string `text`), and a `tool_call_id` on tool messages."""
    for i, message in enumerate(messages):
        content = message.content
        if content is None:
            if message.role != "assistant":
                raise InvalidRequest(
                    f"Invalid value for 'messages[{i}].content': a {message.role} message needs content, got null.",
                    param=f"messages[{i}].content", code="invalid_value",
                )
        elif type(content) is list:
            if not content:
                raise InvalidRequest(
                    f"Invalid 'messages[{i}].content': empty array. Expected an array with minimum length 1.",
                    param=f"messages[{i}].content", code="empty_array",
                )
            for j, part in enumerate(content):
                kind = part.get("type")
                if type(kind) is not str:
                    raise InvalidRequest(
                        f"Missing required parameter: 'messages[{i}].content[{j}].type'.",
                        param=f"messages[{i}].content[{j}].type", code="missing_required_parameter",
                    )
                if kind == "text" and type(part.get("text")) is not str:
                    raise InvalidRequest(
                        f"Invalid 'messages[{i}].content[{j}].text': expected a string.",
                        param=f"messages[{i}].content[{j}].text", code="invalid_type",
                    )
        if message.role == "tool" and message.tool_call_id is None:
            raise InvalidRequest(
                f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                param=f"messages[{i}].tool_call_id", code="missing_required_parameter",
            )


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"Request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep.", code="invalid_json"
    )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether decoded JSON nests containers more than `limit` deep (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def convert_body(raw: Any, struct: type[S], required: tuple[str, ...], *, default_param: str | None = None) -> S:
    """A decoded JSON body as `struct` (an object holding every `required` field, msgspec-validated), or an
    `InvalidRequest` naming the field at fault (`default_param` when msgspec names none)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    for name in required:
        if name not in raw:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    try:
        return msgspec.convert(raw, struct)
    except msgspec.ValidationError as exc:
        param = _param_of(str(exc))
        raise InvalidRequest(
            f"Invalid request: {exc}", param=default_param if param is None else param, code="invalid_type"
        ) from None


def _param_of(message: str) -> str | None:
    """Turn msgspec's '... - at `$.messages[0].role`' into 'messages[0].role'."""
    marker = "at `$."
    start = message.rfind(marker)
    if start < 0:
        return None
    return message[start + len(marker) :].rstrip("`")


TEXT_PARTS = frozenset({"text", "refusal"})
"""Content part types that are text: `text`, and the `refusal` part of an earlier assistant answer."""


def part_text(part: dict[str, Any]) -> str:
    """The text of a text-like content part (a refusal part keeps it in `refusal`)."""
    return str(part.get("text", "") if part.get("type") == "text" else part.get("refusal", ""))


def message_text(message: Message) -> str:
    """The plain text of a message (text and refusal parts joined; images and other parts skipped)."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part_text(p) for p in content if p.get("type") in TEXT_PARTS)


def has_images(chat: ChatRequest) -> bool:
    """Whether any message carries a non-text content part (image, audio, file)."""
    for message in chat.messages:
        if isinstance(message.content, list):
            for part in message.content:
                if part.get("type") not in TEXT_PARTS:
                    return True
    return False

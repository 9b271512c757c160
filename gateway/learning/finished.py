"""What a finished request leaves for learning: the request, the decision, who served it and what it said."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.openai.request import ParsedRequest
from gateway.tiers.base import Usage


class Finished(msgspec.Struct, kw_only=True):
    """One request whose client has its complete answer (never a cache hit, never an error)."""

    request_id: str
    tenant: str
    request: ParsedRequest
    served_tier: str
    """"local", a named SLM tier or "upstream": the tier that produced the answer (after any fallback)."""
    served_model: str
    answer_text: str
    usage: Usage
    reason: str
    score: float | None = None
    """The router's p_strong at decision time (None when the classifier was not consulted)."""
    requested_model: str = "auto"
    small_tier: str = "local"
    """The weak side of the label: the small-model tier that served (local or a named SLM tier), or, when the
    upstream served, the one the request's rule weighed against it (`RouteDecision.small_tier`)."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def last_user_prompt(request: ParsedRequest) -> str:
    """The text of the request's last user message (what label rows and the judge quote)."""
    for message in reversed(request.raw.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def completion_text(body: bytes) -> str:
    """The first choice's message content of a `chat.completion` body ("" when there is none)."""
    try:
        data = msgspec.json.decode(body)
        return _text(data["choices"][0]["message"].get("content"))
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, AttributeError):
        return ""


class StreamText:
    """Collects the content of the first choice from the SSE bytes a stream sends to its client."""

    __slots__ = ("_parts", "_rest", "usage", "model")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._rest = b""
        self.usage = Usage()
        self.model = ""

    def feed(self, data: bytes) -> None:
        buffer = self._rest + data
        *events, self._rest = buffer.split(b"\n\n")
        for event in events:
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            try:
                chunk = msgspec.json.decode(event[6:])
            except msgspec.DecodeError:
                continue
            if not isinstance(chunk, dict):
                continue
            self.model = chunk.get("model") or self.model
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    content = (choice.get("delta") or {}).get("content")
                    if isinstance(content, str):
                        self._parts.append(content)

    @property
    def text(self) -> str:
        return "".join(self._parts)

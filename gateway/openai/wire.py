"""OpenAI response shapes, built and read in one place: completion body, chunk, usage, id, SSE framing, headers."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

# -- response headers the gateway sets ------------------------------------------------------------------------
REQUEST_ID_HEADER = "x-request-id"
ROUTE_HEADER = "x-gateway-route"
MODEL_HEADER = "x-gateway-model"
ROUTE_REASON_HEADER = "x-gateway-route-reason"
CACHE_HEADER = "x-gateway-cache"
CACHE_TIER_HEADER = "x-gateway-cache-tier"
CACHE_SIMILARITY_HEADER = "x-gateway-cache-similarity"

# -- SSE framing ---------------------------------------------------------------------------------------------
SSE_DATA = b"data: "
SSE_END = b"\n\n"
SSE_DONE = b"data: [DONE]\n\n"


class FinalChunk(bytes):
    """The last bytes of a stream; nothing may follow it (the HTTP layer ends the body in the same write)."""

    __slots__ = ()


def sse_event(payload: bytes) -> bytes:
    """One SSE `data:` event carrying `payload`."""
    return SSE_DATA + payload + SSE_END


# -- usage ---------------------------------------------------------------------------------------------------
class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_dict(usage: Usage) -> dict[str, int]:
    """The `usage` object of a response."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


MAX_REPORTED_TOKENS = 100_000_000
"""Token counts an upstream reports are clamped to [0, this]: usage is untrusted input (it feeds metrics and costs)."""


def token_count(value: object) -> int:
    """A reported token count as a sane int: non-negative integers (up to the cap) pass, anything else is 0."""
    if type(value) is int:  # not bool, not float, not str
        return value if 0 <= value <= MAX_REPORTED_TOKENS else (0 if value < 0 else MAX_REPORTED_TOKENS)
    return 0


def usage_of(usage: object) -> Usage | None:
    """The `usage` object of an answer or chunk as a `Usage`; None when it is absent or not an object. Never raises."""
    if not isinstance(usage, dict) or not usage:
        return None
    return Usage(token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens")))


def chunk_usage(chunk: object) -> Usage | None:
    """The usage carried by a streamed chunk, if any (counts clamped, see `usage_of`). Never raises."""
    return usage_of(chunk.get("usage")) if isinstance(chunk, dict) else None


# -- bodies and chunks ---------------------------------------------------------------------------------------
def completion_id() -> str:
    """A fresh `chatcmpl-...` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(
    *, id: str, created: int, model: str, message: dict[str, Any], finish_reason: str | None, usage: Usage
) -> bytes:
    """A `chat.completion` JSON body with one choice."""
    return msgspec.json.encode(
        {
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage_dict(usage),
            "system_fingerprint": None,
        }
    )


def chunk_json(
    id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None,
    *, usage_null: bool = False,
) -> bytes:
    """A `chat.completion.chunk` with one choice (`usage: null` too when the client asked for usage)."""
    chunk: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage_null:
        chunk["usage"] = None
    return msgspec.json.encode(chunk)


def usage_chunk_json(id: str, created: int, model: str, usage: Usage) -> bytes:
    """The usage-only chunk that ends a stream (`choices: []`)."""
    return msgspec.json.encode(
        {
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [],
            "usage": usage_dict(usage),
        }
    )

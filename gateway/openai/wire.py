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


def chunk_usage(chunk: dict[str, Any]) -> Usage | None:
    """The usage carried by a decoded streamed chunk, if any."""
    usage = chunk.get("usage")
    if not usage:
        return None
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


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

"""The backend protocol every tier implements: the in-process llama.cpp model and any OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

import msgspec

from gateway.api.schemas import ParsedRequest

# Optional request features a tier may honour (`Backend.features`); a tier lacking one never serves a request
# that needs it.
FEATURE_TOOLS = "tools"
FEATURE_RESPONSE_FORMAT = "response_format"
FEATURE_IMAGES = "images"
FEATURE_N = "n"
FEATURE_LOGPROBS = "logprobs"
ALL_FEATURES = frozenset({FEATURE_TOOLS, FEATURE_RESPONSE_FORMAT, FEATURE_IMAGES, FEATURE_N, FEATURE_LOGPROBS})


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(msgspec.Struct):
    """A complete, non-streamed answer: the OpenAI `chat.completion` object as JSON bytes, and its usage."""

    body: bytes
    model: str
    usage: Usage


@runtime_checkable
class Backend(Protocol):
    """A tier that answers chat completions.

    `stream` yields batches: each a non-empty list of the JSON of `chat.completion.chunk`s (without SSE framing)
    that were ready together (a relay forwards a batch in one write). Whenever the tier can count tokens, the
    last chunk is a usage-only chunk (`choices: []`, `usage: {...}`) whether or not the client asked for one: the
    caller forwards it only when the client set `stream_options.include_usage`. Both methods raise
    `TierUnavailable` when the tier cannot answer now (the router may fall back) and `GatewayError`
    subclasses for answers the client must see.
    """

    name: str

    async def complete(self, request: ParsedRequest, model: str) -> Completion: ...

    def stream(self, request: ParsedRequest, model: str) -> AsyncIterator[list[bytes]]: ...

    async def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def chunk_usage(chunk: dict[str, Any]) -> Usage | None:
    """The usage carried by a streamed chunk, if any."""
    usage = chunk.get("usage")
    if not usage:
        return None
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

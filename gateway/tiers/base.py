"""The backend protocol every tier implements: the in-process llama.cpp model and any OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import msgspec

from gateway.api.schemas import ParsedRequest


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

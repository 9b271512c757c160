"""Accumulates a streamed answer, chunk by chunk, into a cache entry."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.cache.entry import CACHEABLE_FINISH_REASONS, NOT_ANSWERING_TIERS, CacheEntry


class _Delta(msgspec.Struct):
    content: Any = None
    tool_calls: Any = None
    function_call: Any = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _ChunkUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(msgspec.Struct):
    model: str | None = None
    created: int | None = None
    choices: list[_ChunkChoice] | None = None
    usage: _ChunkUsage | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


class StreamRecorder:
    """Feed it every `chat.completion.chunk` payload; `entry()` gives the complete answer, or None.

    An answer with tool calls, several choices, an unreadable chunk, or no cacheable finish reason yields None.
    """

    __slots__ = ("_parts", "_finish", "_usage", "_model", "_created", "_spoiled", "fallback_model")

    def __init__(self, fallback_model: str) -> None:
        self.fallback_model = fallback_model
        self._parts: list[str] = []
        self._finish: str | None = None
        self._usage: _ChunkUsage | None = None
        self._model: str | None = None
        self._created: int | None = None
        self._spoiled = False

    def feed(self, payload: bytes) -> None:
        """Take one chunk's JSON (no SSE framing)."""
        if self._spoiled:
            return
        try:
            chunk = _chunk_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._spoiled = True
            return
        if chunk.model and self._model is None:
            self._model = chunk.model
        if chunk.created and self._created is None:
            self._created = chunk.created
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices or ():
            delta = choice.delta
            if choice.index != 0 or (delta is not None and (delta.tool_calls or delta.function_call)):
                self._spoiled = True
                return
            if delta is not None and isinstance(delta.content, str):
                self._parts.append(delta.content)
            if choice.finish_reason:
                self._finish = choice.finish_reason

    def entry(self, tier: str) -> CacheEntry | None:
        """The accumulated answer as an entry, when it is complete and cacheable."""
        if self._spoiled or self._finish not in CACHEABLE_FINISH_REASONS or tier in NOT_ANSWERING_TIERS:
            return None
        usage = self._usage or _ChunkUsage()
        return CacheEntry(
            model=self._model or self.fallback_model,
            content="".join(self._parts),
            finish_reason=self._finish,  # type: ignore[arg-type]
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            tier=tier,
            created=self._created or int(time.time()),
        )

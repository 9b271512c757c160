"""The cached answer: one normalised entry per request, shared by streamed and non-streamed requests.

Entries are msgspec structs encoded as msgpack arrays. Only complete, single-choice text answers become
entries: answers with tool calls (or a legacy function call), several choices, or a finish reason other than
`stop` / `length` are not cached. Replaying an entry gives an OpenAI `chat.completion` body or the SSE events
of a `chat.completion.chunk` stream.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.exchange import NO_TIER
from gateway.openai import wire
from gateway.openai.wire import SSE_DONE, Usage, chunk_json, completion_id, sse_event, usage_chunk_json

CACHEABLE_FINISH_REASONS = frozenset({"stop", "length"})
NOT_ANSWERING_TIERS = frozenset({"cache", NO_TIER})
"""Tier labels that are not a tier that answered (a replay, nobody): never the tier of an entry."""


class CacheEntry(msgspec.Struct, array_like=True, frozen=True):
    """A complete answer: who answered it, what it said, and what it cost in tokens."""

    model: str
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tier: str
    """The tier that answered: `local`, `upstream` or a named SLM tier (the key and scope name it too)."""
    created: int

    def __post_init__(self) -> None:
        if not self.tier or self.tier in NOT_ANSWERING_TIERS:  # decoding: a ValidationError
            raise ValueError(f"an entry's tier is the tier that answered, not {self.tier!r}")


class EntryDecodeError(ValueError):
    """Stored bytes are not a valid entry (garbage, or an older format)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CacheEntry)


def encode_entry(entry: CacheEntry) -> bytes:
    """The stored form of an entry."""
    return _encoder.encode(entry)


def decode_entry(data: bytes) -> CacheEntry:
    """Decode stored bytes; raise EntryDecodeError for anything that is not an entry."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as exc:
        raise EntryDecodeError(str(exc)) from None


# -- building entries from answers ---------------------------------------------------------------------------
class _Message(msgspec.Struct):
    content: Any = None
    tool_calls: Any = None
    function_call: Any = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct):
    model: str = ""
    choices: list[_Choice] = []
    usage: _Usage | None = None
    created: int | None = None


_completion_decoder = msgspec.json.Decoder(_Completion)


def entry_from_completion(body: bytes, tier: str, fallback_model: str) -> CacheEntry | None:
    """The entry for a non-streamed `chat.completion` body, or None when that answer must not be cached."""
    if tier in NOT_ANSWERING_TIERS:
        return None
    try:
        completion = _completion_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(completion.choices) != 1:
        return None
    choice = completion.choices[0]
    message = choice.message
    if message is None or not isinstance(message.content, str) or message.tool_calls or message.function_call:
        return None
    if choice.finish_reason not in CACHEABLE_FINISH_REASONS:
        return None
    usage = completion.usage or _Usage()
    return CacheEntry(
        model=completion.model or fallback_model,
        content=message.content,
        finish_reason=choice.finish_reason,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tier=tier,
        created=completion.created or int(time.time()),
    )


# -- replaying entries ---------------------------------------------------------------------------------------
def completion_body(entry: CacheEntry) -> bytes:
    """A `chat.completion` JSON body replaying the entry (a fresh id; the original `created` and model)."""
    return wire.completion_body(
        id=completion_id(),
        created=entry.created,
        model=entry.model,
        message={"role": "assistant", "content": entry.content, "refusal": None},
        finish_reason=entry.finish_reason,
        usage=Usage(entry.prompt_tokens, entry.completion_tokens),
    )


def stream_events(entry: CacheEntry, include_usage: bool) -> list[bytes]:
    """The SSE events replaying the entry: role, content, finish, usage (when asked for), then [DONE]."""
    cid, created, model = completion_id(), entry.created, entry.model
    events = [sse_event(chunk_json(cid, created, model, {"role": "assistant", "content": ""}, usage_null=include_usage))]
    if entry.content:
        events.append(sse_event(chunk_json(cid, created, model, {"content": entry.content}, usage_null=include_usage)))
    events.append(sse_event(chunk_json(cid, created, model, {}, entry.finish_reason, usage_null=include_usage)))
    if include_usage:
        usage = Usage(entry.prompt_tokens, entry.completion_tokens)
        events.append(sse_event(usage_chunk_json(cid, created, model, usage)))
    events.append(SSE_DONE)
    return events

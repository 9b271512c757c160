"""The backend protocol every tier implements: the in-process llama.cpp model and any OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import msgspec

from gateway.openai.request import ParsedRequest
from gateway.openai.wire import Usage, chunk_usage

__all__ = ["Backend", "Completion", "Usage", "chunk_usage"]

TOOLS = "tools"
"""The request offers `tools` (or legacy `functions`) the model may call."""
RESPONSE_FORMAT = "response_format"
"""The request asks for structured output (`response_format` json_object / json_schema)."""
IMAGES = "images"
"""A message carries a non-text content part (image, audio, file)."""
N = "n"
"""The request asks for more than one choice (`n > 1`)."""
LOGPROBS = "logprobs"
"""The request asks for token log-probabilities (`logprobs` / `top_logprobs`)."""
LOGIT_BIAS = "logit_bias"
"""The request biases token ids (`logit_bias`: ids of the upstream's tokenizer, meaningless to another model)."""
AUDIO = "audio"
"""The request asks for audio output (`modalities` with "audio", or `audio`)."""
STORE = "store"
"""The request asks the provider to keep the completion (`store: true`), to be read back by its id later."""
WEB_SEARCH = "web_search_options"
"""The request asks the model to search the web (`web_search_options`)."""
ALL_FEATURES: frozenset[str] = frozenset(
    {TOOLS, RESPONSE_FORMAT, IMAGES, N, LOGPROBS, LOGIT_BIAS, AUDIO, STORE, WEB_SEARCH}
)
"""Every optional request feature a tier may honour (the fixed vocabulary of `Backend.features`)."""
NO_FEATURES: frozenset[str] = frozenset()


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
    `GatewayError`s: `recoverable` ones (`TierUnavailable`, ...) when the tier cannot answer now (the
    dispatcher may fall back to another tier), others for answers the client must see. `request_id` is the
    gateway's id of the request (an HTTP tier forwards it as `x-request-id`).
    """

    name: str
    features: frozenset[str]
    """The optional request features (from `ALL_FEATURES`) this tier honours; it never serves a request needing
    another one (the router sends it elsewhere or refuses it with a 400)."""

    async def complete(self, request: ParsedRequest, model: str, request_id: str | None = None) -> Completion: ...

    def stream(
        self, request: ParsedRequest, model: str, request_id: str | None = None
    ) -> AsyncIterator[list[bytes]]: ...

    async def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


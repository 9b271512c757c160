"""OpenAI's legacy completions (`POST /v1/completions`): the request's raw prompt and the `text_completion` shapes.

The local tier runs the prompt as given (no chat template); the upstream gets the body as received.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from gateway.errors import InvalidRequest
from gateway.openai.request import convert_body

LEGACY_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
_encode = msgspec.json.encode


class CompletionRequest(msgspec.Struct, kw_only=True):
    """A validated legacy completion request (only the fields the gateway acts on)."""

    model: str
    prompt: str | list[Any]
    """A string, a list of strings, a list of token ids, or a list of lists of token ids."""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stream: bool = False
    echo: bool = False
    stream_options: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ParsedCompletion(msgspec.Struct):
    raw: dict[str, Any]
    request: CompletionRequest
    blockers: list[str]
    """Fields (by name) the local tier cannot honour: such a request needs the upstream."""

    @property
    def text(self) -> str | None:
        """The prompt as one string, when it is one (a string, or a list of exactly one string)."""
        prompt = self.request.prompt
        if isinstance(prompt, str):
            return prompt
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        return None


def parse_completion(raw: Any) -> ParsedCompletion:
    """Validate a decoded legacy completion body; `InvalidRequest` naming the field when it is wrong."""
    request = convert_body(raw, CompletionRequest, ("model", "prompt"))
    if request.max_tokens is not None and request.max_tokens < 1:
        raise InvalidRequest("'max_tokens' must be at least 1.", param="max_tokens", code="invalid_value")
    if isinstance(request.prompt, list):
        if not request.prompt:
            raise InvalidRequest("'prompt' must not be empty.", param="prompt", code="invalid_value")
        if not _uniform_prompt(request.prompt):
            raise InvalidRequest(
                "'prompt' must be a string, a list of strings, of token ids, or of lists of token ids.",
                param="prompt", code="invalid_type",
            )
    blockers = [name for name in ("suffix", "logprobs", "best_of", "logit_bias") if raw.get(name) not in (None, {})]
    if request.n not in (None, 1):
        blockers.append("n")
    if request.echo:
        blockers.append("echo")
    parsed = ParsedCompletion(raw, request, blockers)
    if parsed.text is None:
        blockers.append("prompt")  # token ids (a tokenizer the local model does not share) or several prompts
    return parsed


def _uniform_prompt(items: list[Any]) -> bool:
    if all(isinstance(p, str) for p in items):
        return True
    if all(isinstance(p, int) and not isinstance(p, bool) for p in items):
        return True
    return all(isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p) for p in items)


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> bytes:
    """A complete `text_completion` object."""
    return _encode(
        {
            "id": completion_id(),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            "usage": _usage(prompt_tokens, completion_tokens),
        }
    )


class CompletionChunks:
    """The `data:` payloads of a streamed `text_completion` (one id and timestamp for the whole stream)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = completion_id()
        self.created = int(time.time())

    def text(self, piece: str, finish_reason: str | None = None) -> bytes:
        choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return _encode(
            {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
             "choices": [choice]}
        )

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return _encode(
            {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
             "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}
        )

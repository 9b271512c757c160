"""Raw-prompt generation on the local tier (legacy `/v1/completions`): the prompt as given, no chat template.

Uses the local backend's admission (its slots and queue) and its generation loop, so a legacy completion
waits, is refused (429) and is cancelled exactly like a chat completion.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.tiers.llama_generation import GenerationResult, SamplingParams, generate, sampling_params
from gateway.tiers.local import ContextTooLong

if TYPE_CHECKING:
    from gateway.openai.completions import CompletionRequest
    from gateway.tiers.local import LlamaCppBackend

_DONE = object()


class PromptResult(msgspec.Struct):
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _prepare(backend: LlamaCppBackend, prompt: str, request: CompletionRequest, max_tokens: int) -> tuple[list[int], SamplingParams]:
    tokenizer = backend._tokenizer
    assert tokenizer is not None, "backend not started"
    with backend._tokenize_lock:  # the text is the user's: special-token text in it stays text
        tokens = tokenizer.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
    room = backend.context_size - len(tokens)
    if room < 1:
        raise ContextTooLong(len(tokens), backend.context_size)
    return tokens, sampling_params(request, min(max_tokens, room))


async def _run(backend: LlamaCppBackend, tokens: list[int], params: SamplingParams, emit: Any,
               cancel: threading.Event) -> asyncio.Future[GenerationResult]:
    instance = await backend._acquire()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, generate, instance, tokens, params, emit, cancel)
    future.add_done_callback(lambda _f: backend._release(instance))
    return future


async def complete_prompt(backend: LlamaCppBackend, prompt: str, request: CompletionRequest,
                          max_tokens: int) -> PromptResult:
    """Generate a whole completion of `prompt`."""
    tokens, params = _prepare(backend, prompt, request, max_tokens)
    cancel = threading.Event()
    future = await _run(backend, tokens, params, None, cancel)
    try:
        result = await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        raise
    return PromptResult(result.text, result.finish_reason, len(tokens), result.completion_tokens)


class OpenedPrompt:
    """A generation that has its slot: `pieces()` yields text as it is generated, then `result()`."""

    def __init__(self, future: asyncio.Future[GenerationResult], queue: asyncio.Queue[Any],
                 cancel: threading.Event, prompt_tokens: int) -> None:
        self._future = future
        self._queue = queue
        self._cancel = cancel
        self._prompt_tokens = prompt_tokens

    async def pieces(self) -> AsyncIterator[str]:
        while True:
            item = await self._queue.get()
            if item is _DONE:
                return
            yield item

    def result(self) -> PromptResult:
        result = self._future.result()
        return PromptResult(result.text, result.finish_reason, self._prompt_tokens, result.completion_tokens)

    async def stopped(self) -> PromptResult:
        """The result once the generation has stopped: finished, or cancelled (what it generated until then)."""
        await asyncio.wait([self._future])
        return self.result()

    def cancel(self) -> None:
        self._cancel.set()  # a client that went away stops the generation at the next token


async def stream_prompt(backend: LlamaCppBackend, prompt: str, request: CompletionRequest,
                        max_tokens: int) -> OpenedPrompt:
    """Start generating `prompt` once a slot is free (errors such as a full queue are raised here)."""
    tokens, params = _prepare(backend, prompt, request, max_tokens)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def emit(text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, text)

    future = await _run(backend, tokens, params, emit, cancel)
    future.add_done_callback(lambda _f: loop.call_soon_threadsafe(queue.put_nowait, _DONE))
    return OpenedPrompt(future, queue, cancel, len(tokens))

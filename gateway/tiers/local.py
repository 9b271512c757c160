"""The local tier: a GGUF model run in-process by llama-cpp-python, off the event loop, with bounded concurrency."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import llama_cpp
import msgspec

from gateway.errors import RateLimited
from gateway.openai.request import ParsedRequest
from gateway.openai.wire import chunk_json, completion_body, completion_id, usage_chunk_json
from gateway.tiers.base import RESPONSE_FORMAT, TOOLS, Completion, Usage
from gateway.tiers.grammar import grammar_compiles
from gateway.tiers.grammar_sampler import GrammarFirstLlama
from gateway.tiers.llama_generation import GenerationResult, SamplingParams, generate, sampling_params
from gateway.tiers.prompt import ChatPrompt, control_token_texts
from gateway.tiers.queue_estimate import ServiceTimes
from gateway.tiers.structured import LocalCannotServe, OutputPlan, plan_output

_DONE = object()


def default_threads() -> int:
    """Half the cores: llama.cpp's threads busy-wait on each other, so one that loses its core to the event loop
    (or any other process) stalls the rest. Measured on 2 cores with one competing process: 1 thread generated
    27 tokens/s, 2 threads 1-5 tokens/s."""
    return max(1, (os.cpu_count() or 2) // 2)


class ContextTooLong(LocalCannotServe):
    """The prompt does not fit the local model's context window."""

    def __init__(self, prompt_tokens: int, context_size: int) -> None:
        super().__init__(
            f"This model's maximum context length is {context_size} tokens, but the messages use "
            f"{prompt_tokens} tokens. Shorten the messages.",
            param="messages",
            code="context_length_exceeded",
        )
        self.prompt_tokens = prompt_tokens


class LocalQueueFull(RateLimited):
    """Every local slot is busy and the wait queue is full."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "The local model is busy; retry shortly.",
            code="local_queue_full",
            headers={"retry-after": str(retry_after)},
        )


class _Prepared(msgspec.Struct):
    tokens: list[int]
    params: SamplingParams
    plan: OutputPlan


class LlamaCppBackend:
    """Serves chat completions from a GGUF model with llama-cpp-python.

    `max_concurrency` model instances share the weights (memory-mapped); requests beyond that wait in a queue
    of at most `max_queue`, and past that are refused with `LocalQueueFull` (429, or spilled upstream).
    `response_format` and `tools` are honoured by grammar-constrained decoding (`gateway.tiers.structured`).
    """

    features: frozenset[str] = frozenset({TOOLS, RESPONSE_FORMAT})

    def __init__(
        self,
        model_path: str,
        *,
        name: str = "local",
        served_model_name: str = "local",
        context_size: int = 4096,
        max_concurrency: int = 1,
        max_queue: int = 16,
        threads: int | None = None,
        max_tokens_default: int = 512,
        on_queue_change: Any = None,
    ) -> None:
        self.name = name
        self.model_path = model_path
        self.served_model_name = served_model_name
        self.context_size = context_size
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.threads = threads or default_threads()
        self.max_tokens_default = max_tokens_default
        self._on_queue_change = on_queue_change
        self._pool: asyncio.Queue[llama_cpp.Llama] | None = None
        self._instances: list[llama_cpp.Llama] = []
        self._prompt: ChatPrompt | None = None
        self._tokenizer: llama_cpp.Llama | None = None
        self._tokenize_lock = threading.Lock()
        self.service_times = ServiceTimes()
        self.waiting = 0
        self.inflight = 0

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model instances (in a thread: loading maps ~0.5 GB)."""
        self._instances = await asyncio.to_thread(self._load_all)
        self._pool = asyncio.Queue()
        for instance in self._instances:
            self._pool.put_nowait(instance)
        self._tokenizer = self._instances[0]
        self._prompt = ChatPrompt(
            self._tokenizer.metadata.get("tokenizer.chat_template"), control_token_texts(self._tokenizer), self._tokenize
        )

    def _load_all(self) -> list[llama_cpp.Llama]:
        instances = [
            GrammarFirstLlama(  # grammar checked against the sampled token first (gateway/tiers/grammar_sampler.py)
                self.model_path, n_ctx=self.context_size, n_threads=self.threads, verbose=False, n_batch=512
            )
            for _ in range(self.max_concurrency)
        ]
        for instance in instances:  # touch the weights once, so the first request does not pay for paging them in
            instance.eval(instance.tokenize(b"Hello", add_bos=False))
            instance.reset()
        return instances

    async def close(self) -> None:
        for instance in self._instances:
            instance.close()
        self._instances = []

    async def ready(self) -> bool:
        return bool(self._instances)

    # -- request preparation -------------------------------------------------------------------------------
    def count_prompt_tokens(self, request: ParsedRequest) -> int:
        """Exact prompt tokens of the request under the model's chat template."""
        return len(self._prompt_tokens(request))

    def _tokenize(self, text: str, special: bool) -> list[int]:
        assert self._tokenizer is not None, "backend not started"
        with self._tokenize_lock:
            return self._tokenizer.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def _prompt_tokens(self, request: ParsedRequest, plan: OutputPlan | None = None) -> list[int]:
        assert self._prompt is not None, "backend not started"
        tools = plan.tools if plan is not None else None
        return self._prompt.tokens(request.chat.messages, tools)

    def _prepare(self, request: ParsedRequest) -> _Prepared:
        plan = plan_output(request)
        self._check_grammars(plan)
        tokens = self._prompt_tokens(request, plan)
        room = self.context_size - len(tokens)
        if room < 1:
            raise ContextTooLong(len(tokens), self.context_size)
        wanted = request.max_new_tokens or self.max_tokens_default
        params = sampling_params(
            request.chat,
            min(wanted, room),
            grammar=plan.grammar,
            probe_names=plan.probe_names,
            call_grammar=plan.call_grammar,
            text_grammar=plan.text_grammar,
        )
        return _Prepared(tokens, params, plan)

    def _check_grammars(self, plan: OutputPlan) -> None:
        assert self._tokenizer is not None, "backend not started"
        for grammar in (plan.grammar, plan.call_grammar, plan.text_grammar):
            if grammar is not None and not grammar_compiles(self._tokenizer._model.vocab, grammar):
                raise LocalCannotServe(
                    "The local model cannot compile a grammar for this request's schema.",
                    param="response_format" if plan.tools is None else "tools",
                    code="unsupported_schema",
                )

    # -- admission -----------------------------------------------------------------------------------------
    async def _acquire(self) -> llama_cpp.Llama:
        assert self._pool is not None, "backend not started"
        if self._pool.empty() and self.waiting >= self.max_queue:
            raise LocalQueueFull(retry_after=self.service_times.retry_after(self.waiting, self.max_concurrency))
        self.waiting += 1
        self._changed()
        try:
            instance = await self._pool.get()
        finally:
            self.waiting -= 1
        self.inflight += 1
        self._changed()
        return instance

    def _release(self, instance: llama_cpp.Llama) -> None:
        self.inflight -= 1
        assert self._pool is not None
        self._pool.put_nowait(instance)
        self._changed()

    def _changed(self) -> None:
        if self._on_queue_change is not None:
            self._on_queue_change(self.waiting, self.inflight)

    def _run(
        self, instance: llama_cpp.Llama, prepared: _Prepared, emit: Any, cancel: threading.Event
    ) -> asyncio.Future[GenerationResult]:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        future = loop.run_in_executor(None, generate, instance, prepared.tokens, prepared.params, emit, cancel)

        def done(f: asyncio.Future[GenerationResult]) -> None:
            self._release(instance)
            if not f.cancelled() and f.exception() is None and f.result().finish_reason != "cancelled":
                self.service_times.observe(time.monotonic() - started)  # for retry-after estimates

        future.add_done_callback(done)
        return future

    # -- the Backend protocol ------------------------------------------------------------------------------
    async def complete(self, request: ParsedRequest, model: str, request_id: str | None = None) -> Completion:
        prepared = self._prepare(request)
        instance = await self._acquire()
        cancel = threading.Event()
        try:
            result = await asyncio.shield(self._run(instance, prepared, None, cancel))
        except asyncio.CancelledError:
            cancel.set()  # the client left (or the request was cancelled): stop at the next token
            raise
        usage = Usage(len(prepared.tokens), result.completion_tokens)
        message, finish_reason = prepared.plan.message(result.text, result.finish_reason)
        body = completion_body(
            id=completion_id(),
            created=int(time.time()),
            model=self.served_model_name,
            message=message,
            finish_reason=finish_reason,
            usage=usage,
        )
        return Completion(body=body, model=self.served_model_name, usage=usage)

    async def stream(
        self, request: ParsedRequest, model: str, request_id: str | None = None
    ) -> AsyncIterator[list[bytes]]:
        prepared = self._prepare(request)
        instance = await self._acquire()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        future = self._run(instance, prepared, emit, cancel)
        future.add_done_callback(lambda _f: queue.put_nowait(_DONE))
        chunk_id, created, served = completion_id(), int(time.time()), self.served_model_name
        deltas = prepared.plan.deltas()
        try:
            yield [chunk_json(chunk_id, created, served, {"role": "assistant", "content": ""})]
            finished = False
            while not finished:
                texts = [await queue.get()]
                while not queue.empty():  # tokens generated while the client was being written to: one batch
                    texts.append(queue.get_nowait())
                if texts[-1] is _DONE:
                    texts.pop()
                    finished = True
                batch = [chunk_json(chunk_id, created, served, d) for text in texts for d in deltas.feed(text)]
                if batch:
                    yield batch
            result = future.result()
            rest, finish_reason = deltas.finish(result.finish_reason)
            usage = Usage(len(prepared.tokens), result.completion_tokens)
            yield [
                *(chunk_json(chunk_id, created, served, d) for d in rest),
                chunk_json(chunk_id, created, served, {}, finish_reason),
                usage_chunk_json(chunk_id, created, served, usage),
            ]
        finally:
            cancel.set()  # a client that went away stops the generation at the next token

"""Token-by-token generation with llama.cpp, run in a worker thread: exact token counts, stop strings, cancellation,
a per-request sampling seed, and grammar-constrained decoding (from the start, or once the model opens a tool call)."""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import llama_cpp
import msgspec

from gateway.tiers.tool_probe import TOOL_CALL_OPEN, ToolCallProbe

UNSEEDED = llama_cpp.LLAMA_DEFAULT_SEED  # llama.cpp draws a fresh random seed for a sampler given this value


class SamplingParams(msgspec.Struct, kw_only=True):
    """How to sample one request.

    `grammar` (GBNF) constrains the whole output. With `probe_names`, the model first writes freely while a
    `ToolCallProbe` reads its opening words: if it is calling one of those functions, the output is restarted as
    `call_prefix` followed by text constrained by `call_grammar`; otherwise it is kept as free text, or, when
    `text_grammar` is set, restarted under that grammar.
    """

    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None
    probe_names: tuple[str, ...] = ()
    call_prefix: str = TOOL_CALL_OPEN
    call_grammar: str | None = None
    text_grammar: str | None = None


class SamplingRequest(Protocol):
    """The sampling fields a chat request and a legacy completion request share (as the client sent them)."""

    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: str | list[str] | None
    presence_penalty: float | None
    frequency_penalty: float | None


def sampling_params(
    request: SamplingRequest,
    max_tokens: int,
    *,
    grammar: str | None = None,
    probe_names: tuple[str, ...] = (),
    call_grammar: str | None = None,
    text_grammar: str | None = None,
) -> SamplingParams:
    """How to sample `request`, a chat or a legacy completion request (OpenAI's defaults for what it left out:
    temperature and top_p 1, no penalty), generating at most `max_tokens`, under the output plan's grammars."""
    stop = request.stop
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        seed=request.seed,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        grammar=grammar,
        probe_names=probe_names,
        call_grammar=call_grammar,
        text_grammar=text_grammar,
    )


class GenerationResult(msgspec.Struct):
    text: str
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "cancelled"
    decode_seconds: float = 0.0
    """From the first generated token to the end (prompt evaluation excluded): decode speed is
    `(completion_tokens - 1) / decode_seconds`."""


def sampler_seed(seed: int | None) -> int:
    """The llama.cpp seed for a request: its own `seed` folded into 32 bits, or `UNSEEDED` (fresh randomness).

    The seed is set on every request, so one request's seed never carries over to the next."""
    if seed is None:
        return UNSEEDED
    folded = seed & 0xFFFFFFFF
    return folded if folded != UNSEEDED else UNSEEDED - 1


def is_end_of_generation(llm: llama_cpp.Llama, token: int) -> bool:
    """Whether `token` ends generation (EOS, or any end-of-generation token of the vocabulary)."""
    if token == llm.token_eos():
        return True
    model = llm._model
    vocab = getattr(model, "vocab", None)
    if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
        return bool(llama_cpp.llama_vocab_is_eog(vocab, token))
    return False


class _StopScanner:
    """Holds back text that may be the start of a stop string; reports where a stop string matched."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.emitted = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit now, whether a stop string was reached)."""
        self.text += piece
        if not self.stops:
            out = self.text[self.emitted :]
            self.emitted = len(self.text)
            return out, False
        window_start = max(0, self.emitted - max(len(s) for s in self.stops))
        hits = [i for i in (self.text.find(s, window_start) for s in self.stops) if i >= 0]
        if hits:
            end = min(hits)
            out = self.text[self.emitted : end]
            self.emitted = max(self.emitted, end)
            self.text = self.text[:end]
            return out, True
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        safe_end = len(self.text) - hold
        out = self.text[self.emitted : safe_end] if safe_end > self.emitted else ""
        self.emitted = max(self.emitted, safe_end)
        return out, False

    def flush(self) -> str:
        out = self.text[self.emitted :]
        self.emitted = len(self.text)
        return out


def _sample_args(params: SamplingParams) -> dict[str, Any]:
    greedy = params.temperature <= 0
    return {
        "temp": 0.0 if greedy else params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "top_k": 1 if greedy else 40,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "reset": True,
    }


PROBE_TOKENS = 24  # an opening still undecided after this many tokens is free text


class _Output:
    """The answer being built: its tokens, the stop-string scanner, and where its text goes."""

    def __init__(self, params: SamplingParams, emit: Callable[[str], Any] | None) -> None:
        self.params = params
        self.emit = emit
        self.tokens: list[int] = []
        self.restart()

    def restart(self, tokens: list[int] | None = None, text: str = "") -> None:
        """Drop what was written (not yet emitted) and start again from `tokens` / `text`."""
        self.tokens = list(tokens or [])
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.scanner = _StopScanner(self.params.stop)
        self.parts: list[str] = []
        self.held: list[str] | None = None
        if text:
            self.write(text)

    def write(self, text: str) -> None:
        if self.held is not None:
            self.held.append(text)
            return
        self.parts.append(text)
        if self.emit is not None:
            self.emit(text)

    def release(self) -> None:
        held, self.held = self.held or [], None
        for text in held:
            self.write(text)


def generate(
    llm: llama_cpp.Llama,
    prompt_tokens: list[int],
    params: SamplingParams,
    emit: Callable[[str], Any] | None,
    cancel: threading.Event,
) -> GenerationResult:
    """Generate from `prompt_tokens`, calling `emit(text)` for each new piece of text. Blocking: run in a thread."""
    llm.set_seed(sampler_seed(params.seed))
    out = _Output(params, emit)
    probe = ToolCallProbe(params.probe_names) if params.probe_names and params.call_grammar else None
    grammar = params.grammar if probe is None else None
    if probe is not None:
        out.held = []
    finish = "length"
    hit_stop = False
    restarted = True
    first_token_at: float | None = None
    while restarted:
        restarted = False
        tokens = llm.generate(
            prompt_tokens + out.tokens,
            grammar=llama_cpp.LlamaGrammar.from_string(grammar) if grammar else None,
            **_sample_args(params),
        )
        for token in tokens:
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if cancel.is_set():
                finish = "cancelled"
                break
            if is_end_of_generation(llm, token):
                finish = "stop"
                break
            out.tokens.append(token)
            text, stopped = out.scanner.feed(out.decoder.decode(llm.detokenize([token])))
            if text:
                out.write(text)
            if probe is not None and (text or len(out.tokens) >= PROBE_TOKENS):
                calling = probe.feed(text) if len(out.tokens) < PROBE_TOKENS else bool(probe.feed(text))
                if calling is not None:
                    probe, restarted, grammar = None, True, _decide(out, llm, params, calling)
                    if restarted and grammar is None:  # free text kept: carry on in this generation
                        restarted = False
            if stopped:
                finish, hit_stop = "stop", True
                break
            if len(out.tokens) >= params.max_tokens or restarted:
                break
        tokens.close()
        if not restarted or len(out.tokens) >= params.max_tokens:
            break
    if finish != "cancelled":
        out.release()
        if not hit_stop:
            tail = out.scanner.feed(out.decoder.decode(b"", final=True))[0] + out.scanner.flush()
            if tail:
                out.write(tail)
    decode_seconds = time.perf_counter() - first_token_at if first_token_at is not None else 0.0
    return GenerationResult("".join(out.parts), len(out.tokens), finish, decode_seconds)


def _decide(out: _Output, llm: llama_cpp.Llama, params: SamplingParams, calling: bool) -> str | None:
    """Act on the probe's verdict; return the grammar to restart under (None: keep the free text written so far)."""
    if calling:
        prefix = llm.tokenize(params.call_prefix.encode("utf-8"), add_bos=False, special=True)
        out.restart(prefix, params.call_prefix)
        return params.call_grammar
    if params.text_grammar is not None:
        out.restart()
        return params.text_grammar
    out.release()
    return None

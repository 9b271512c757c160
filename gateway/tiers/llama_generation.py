"""Token-by-token generation with llama.cpp, run in a worker thread: exact token counts, stop strings, cancellation,
a per-request sampling seed, and grammar-constrained decoding (from the start, or once a trigger text appears)."""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp
import msgspec

UNSEEDED = llama_cpp.LLAMA_DEFAULT_SEED  # llama.cpp draws a fresh random seed for a sampler given this value


class SamplingParams(msgspec.Struct, kw_only=True):
    """How to sample one request. `grammar` (GBNF) constrains the whole output; `lazy_grammar` applies only once
    the output starts with `trigger` (the model decides between free text and, say, a tool call)."""

    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None
    trigger: str | None = None
    lazy_grammar: str | None = None


class GenerationResult(msgspec.Struct):
    text: str
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "cancelled"


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


class _Trigger:
    """Watches the start of the output for `trigger` (leading whitespace ignored): undecided while the output is
    a prefix of it, then fired (switch to the lazy grammar) or passed (free text from here on)."""

    def __init__(self, trigger: str | None) -> None:
        self.trigger = trigger
        self.decided = trigger is None
        self.text = ""

    def feed(self, piece: str) -> bool | None:
        """True: the output now starts with the trigger; False: it cannot; None: not known yet."""
        if self.decided:
            return False
        assert self.trigger is not None
        self.text += piece
        head = self.text.lstrip()
        if head.startswith(self.trigger):
            self.decided = True
            return True
        if head and not self.trigger.startswith(head):
            self.decided = True
            return False
        return None


def _sample_args(params: SamplingParams) -> dict[str, Any]:
    greedy = params.temperature <= 0
    return {
        "temp": 0.0 if greedy else params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "top_k": 1 if greedy else 40,
        "reset": True,
    }


def generate(
    llm: llama_cpp.Llama,
    prompt_tokens: list[int],
    params: SamplingParams,
    emit: Callable[[str], Any] | None,
    cancel: threading.Event,
) -> GenerationResult:
    """Generate from `prompt_tokens`, calling `emit(text)` for each new piece of text. Blocking: run in a thread."""
    llm.set_seed(sampler_seed(params.seed))
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    scanner = _StopScanner(params.stop)
    trigger = _Trigger(params.trigger if params.lazy_grammar else None)
    held: list[str] = []  # text held back while the trigger is undecided
    parts: list[str] = []
    generated: list[int] = []
    finish = "length"
    hit_stop = False
    grammar = params.grammar

    def out(text: str) -> None:
        parts.append(text)
        if emit is not None:
            emit(text)

    switched = True
    while switched:
        switched = False
        tokens = llm.generate(
            prompt_tokens + generated,
            grammar=llama_cpp.LlamaGrammar.from_string(grammar) if grammar else None,
            **_sample_args(params),
        )
        for token in tokens:
            if cancel.is_set():
                finish = "cancelled"
                break
            if is_end_of_generation(llm, token):
                finish = "stop"
                break
            generated.append(token)
            piece = decoder.decode(llm.detokenize([token]))
            text, stopped = scanner.feed(piece)
            if text:
                fired = trigger.feed(text)
                if fired is None:
                    held.append(text)
                else:
                    if held:
                        out("".join(held))
                        held.clear()
                    out(text)
                    if fired:  # constrain the rest: a fresh generate() on the same context (the prefix is cached)
                        grammar, switched = params.lazy_grammar, True
            if stopped:
                finish, hit_stop = "stop", True
                break
            if len(generated) >= params.max_tokens or switched:
                break
        tokens.close()
        if finish != "length" or len(generated) >= params.max_tokens:
            break
    if finish != "cancelled":
        tail = "".join(held)
        if not hit_stop:
            tail += scanner.feed(decoder.decode(b"", final=True))[0] + scanner.flush()
        if tail:
            out(tail)
    return GenerationResult("".join(parts), len(generated), finish)

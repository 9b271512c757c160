"""Token-by-token generation with llama.cpp, run in a worker thread: exact token counts, stop strings, cancellation."""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp
import msgspec


class SamplingParams(msgspec.Struct, kw_only=True):
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()


class GenerationResult(msgspec.Struct):
    text: str
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "cancelled"


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


def generate(
    llm: llama_cpp.Llama,
    prompt_tokens: list[int],
    params: SamplingParams,
    emit: Callable[[str], Any] | None,
    cancel: threading.Event,
) -> GenerationResult:
    """Generate from `prompt_tokens`, calling `emit(text)` for each new piece of text. Blocking: run in a thread."""
    if params.seed is not None:
        llm.set_seed(params.seed)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    scanner = _StopScanner(params.stop)
    parts: list[str] = []
    count = 0
    finish = "length"
    hit_stop = False
    greedy = params.temperature <= 0
    for token in llm.generate(
        prompt_tokens,
        temp=0.0 if greedy else params.temperature,
        top_p=1.0 if greedy else params.top_p,
        top_k=1 if greedy else 40,
        reset=True,
    ):
        if cancel.is_set():
            finish = "cancelled"
            break
        if is_end_of_generation(llm, token):
            finish = "stop"
            break
        count += 1
        piece = decoder.decode(llm.detokenize([token]))
        out, stopped = scanner.feed(piece)
        if out:
            parts.append(out)
            if emit is not None:
                emit(out)
        if stopped:
            finish, hit_stop = "stop", True
            break
        if count >= params.max_tokens:
            break
    if not hit_stop and finish != "cancelled":
        tail = scanner.feed(decoder.decode(b"", final=True))[0] + scanner.flush()
        if tail:
            parts.append(tail)
            if emit is not None:
                emit(tail)
    return GenerationResult("".join(parts), count, finish)

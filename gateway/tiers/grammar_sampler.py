"""Grammar-constrained sampling that checks the grammar against the sampled token, not the whole vocabulary.

llama-cpp-python's stock chain applies the grammar sampler to every token of the vocabulary (151,936 for Qwen2.5)
before top-k at each step, which costs more than decoding the token on a small model. llama.cpp's own sampler
(`common_sampler_sample` without `grammar_first`; llama.cpp PR #4306 / #7424) samples from the unconstrained
logits first and checks only the sampled token against the grammar; only when that token is rejected does it
resample with the grammar applied. (Sampling first and resampling from the masked
distribution after a rejection picks each allowed token with its masked probability, up to how top-k / top-p /
min-p truncate the two distributions.) `GrammarFirstSampler` does the same, with one more step before the full
pass: the grammar is applied to the `WINDOW` highest logits only, and the chain samples from the allowed ones
among them when no allowed token outside the window could be chosen: with greedy decoding when one is allowed
(every token outside the window has a lower logit), otherwise when top-k of them are allowed or min-p would
drop every token below the window anyway.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp
import numpy as np

WINDOW = 1024
"""Highest logits checked against the grammar (in one llama.cpp call) before the whole vocabulary is."""
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


class SamplerCounts:
    """How often each step was taken (for the bench and tests)."""

    def __init__(self) -> None:
        self.sampled = 0
        self.window = 0
        self.full = 0


class GrammarFirstSampler:
    """A sampler chain (greedy, or top-k / top-p / min-p / temperature / seeded dist) whose grammar is checked
    against the sampled token first. Implements the `sample(ctx, idx)` that `llama_cpp.Llama.sample` calls."""

    def __init__(
        self,
        vocab: Any,
        n_vocab: int,
        gbnf: str,
        root: str,
        *,
        temp: float,
        top_k: int,
        top_p: float,
        min_p: float,
        seed: int,
    ) -> None:
        self.counts = SamplerCounts()
        self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), root.encode("utf-8"))
        if not self._grammar:
            raise ValueError("llama.cpp rejected the grammar")
        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._greedy = temp == 0
        self._windowed = temp >= 0  # temp < 0: sampling from the whole distribution, only the full pass will do
        self._top_k = top_k if top_k > 0 else n_vocab
        self._log_min_p = math.log(min_p) if min_p > 0 else -math.inf
        if temp == 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
        elif temp < 0:
            self._add(llama_cpp.llama_sampler_init_dist(seed))
        else:
            if top_k > 0:
                self._add(llama_cpp.llama_sampler_init_top_k(top_k))
            self._add(llama_cpp.llama_sampler_init_top_p(top_p, 1))
            self._add(llama_cpp.llama_sampler_init_min_p(min_p, 1))
            self._add(llama_cpp.llama_sampler_init_temp(temp))
            self._add(llama_cpp.llama_sampler_init_dist(seed))
        self._n_vocab = n_vocab
        self._all = np.zeros(n_vocab, _TOKEN_DATA)
        self._all["id"] = np.arange(n_vocab, dtype=np.int32)
        self._window = np.zeros(min(WINDOW, n_vocab), _TOKEN_DATA)
        self._one = np.zeros(1, _TOKEN_DATA)

    def _add(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        """The next token at output `idx` of `ctx` (a `llama_cpp._internals.LlamaContext`), accepted by the grammar."""
        token = int(llama_cpp.llama_sampler_sample(self._chain, ctx.ctx, idx))
        self.counts.sampled += 1
        self._one["id"], self._one["logit"] = token, 1.0
        self._apply(self._grammar, self._one)
        if self._one["logit"][0] == -math.inf:
            token = self._resample(ctx.ctx, idx)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        return token

    def _resample(self, ctx: Any, idx: int) -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, idx), shape=(self._n_vocab,))
        if self._windowed:
            top = np.argpartition(logits, -len(self._window))[-len(self._window) :]
            self._window["id"], self._window["logit"], self._window["p"] = top, logits[top], 0.0
            lowest = float(logits[top].min())
            self._apply(self._grammar, self._window)
            if self._window_decides(lowest):
                self.counts.window += 1
                return self._choose(self._window)
        self.counts.full += 1
        self._all["id"] = np.arange(self._n_vocab, dtype=np.int32)
        self._all["logit"], self._all["p"] = logits, 0.0
        self._apply(self._grammar, self._all)
        return self._choose(self._all)

    def _window_decides(self, lowest: float) -> bool:
        """Whether the allowed tokens of the window (its lowest logit `lowest`) are all the chain could keep."""
        logits = self._window["logit"]
        allowed = logits[logits != -math.inf]
        if allowed.size == 0:
            return False
        if self._greedy or allowed.size >= self._top_k:
            return True
        return lowest < float(allowed.max()) + self._log_min_p  # min-p drops all below the window

    def _choose(self, candidates: np.ndarray) -> int:
        """Run the chain over `candidates` (the grammar already applied: rejected ones are at -inf)."""
        array = self._apply(self._chain, candidates)
        return int(array.data[array.selected].id)

    @staticmethod
    def _apply(sampler: Any, candidates: np.ndarray) -> llama_cpp.llama_token_data_array:
        """Apply `sampler` to `candidates` in place (the grammar sets a rejected token's logit to -inf); the
        array llama.cpp saw (samplers may move its `data` and set `selected`)."""
        array = llama_cpp.llama_token_data_array(
            data=candidates.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=len(candidates),
            selected=-1,
            sorted=False,
        )
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return array

    def close(self) -> None:
        for name in ("_grammar", "_chain"):
            sampler = getattr(self, name, None)
            if sampler:
                llama_cpp.llama_sampler_free(sampler)
                setattr(self, name, None)

    def __del__(self) -> None:
        self.close()


class GrammarFirstLlama(llama_cpp.Llama):
    """`llama_cpp.Llama` whose grammar-constrained generations use `GrammarFirstSampler` (set `grammar_first`
    to False for the stock full-vocabulary grammar pass, which the bench measures against)."""

    grammar_first: bool = True

    def _init_sampler(self, *, grammar: llama_cpp.LlamaGrammar | None = None, **kwargs: Any) -> Any:
        if grammar is None or not self.grammar_first:
            return super()._init_sampler(grammar=grammar, **kwargs)
        return GrammarFirstSampler(
            self._model.vocab,
            self.n_vocab(),
            grammar._grammar,  # LlamaGrammar keeps the GBNF text and its root rule name
            grammar._root,
            temp=kwargs.get("temp", 0.8),
            top_k=kwargs.get("top_k", 40),
            top_p=kwargs.get("top_p", 0.95),
            min_p=kwargs.get("min_p", 0.05),
            seed=self._seed,
        )

"""Feature extraction from prompt text: hashed word/char n-grams + hand-made features.

Everything here is stateless (no fitted vocabulary), so the extractor is
cheap to serialise and identical at train and scoring time.  Only the first
``max_chars`` characters of a prompt are considered, which bounds latency on
long chat messages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

try:  # the Cython hasher behind FeatureHasher: one call per text instead of per token
    from sklearn.feature_extraction._hashing_fast import transform as _fast_hash
except ImportError:  # pragma: no cover - private API moved; fall back to the public hash
    _fast_hash = None

__all__ = ["PromptFeaturizer", "hand_features", "HAND_FEATURE_NAMES", "truncate", "segment", "SEGMENTS"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z]+")
_OPTION = re.compile(r"^\s*([A-D])[.)]\s?(.*)$", re.MULTILINE)
_MATH = tuple("+-*/=^<>%$√∑∫π×÷≤≥")
_NEGATION = re.compile(r"\b(?:not|except|false|incorrect|least|never)\b", re.IGNORECASE)

HAND_FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "digit_frac",
    "log_numbers",
    "log_distinct_numbers",
    "max_number_len",
    "has_decimal",
    "math_frac",
    "log_math",
    "upper_frac",
    "mean_word_len",
    "long_word_frac",
    "n_options",
    "log_question_chars",
    "log_mean_option_chars",
    "option_len_spread",
    "numeric_options_frac",
    "question_marks",
    "negation",
    "log_sentences",
    "truncated",
)


def _hash_columns(tokens: list[str], n_features: int) -> np.ndarray:
    """Hashed column of each token, exactly as ``HashingVectorizer`` (murmurhash3, seed 0)."""
    if _fast_hash is not None:
        indices, _, _ = _fast_hash([[(tok, 1) for tok in tokens]], n_features, np.float64, False, 0)
        return np.asarray(indices, dtype=np.int64)
    cols = []
    for tok in tokens:
        h = murmurhash3_32(tok, seed=0)
        cols.append((2147483647 - (n_features - 1)) % n_features if h == -2147483648 else abs(h) % n_features)
    return np.asarray(cols, dtype=np.int64)


SEGMENTS: tuple[str, ...] = ("mc", "text")


def segment(text: str) -> str:
    """Prompt family from text alone: ``"mc"`` (lettered answer options) or ``"text"``."""
    head = text[:4000]
    return "mc" if len(_OPTION.findall(head)) >= 2 else "text"


def truncate(text: str, max_chars: int) -> str:
    """Keep at most ``max_chars`` characters (head and tail halves if longer)."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "\n" + text[-half:]


def hand_features(text: str, original_len: int | None = None) -> list[float]:
    """Hand-made numeric features of one (already truncated) prompt, ~unit scale."""
    n = len(text) or 1
    orig = original_len if original_len is not None else len(text)
    words = _WORD.findall(text)
    n_words = len(words)
    numbers = _NUMBER.findall(text)
    digits = sum(map(str.isdigit, text))
    math_chars = sum(text.count(c) for c in _MATH)
    upper = sum(map(str.isupper, text))
    options = _OPTION.findall(text)
    if len(options) >= 2:
        q_end = _OPTION.search(text)
        question_chars = q_end.start() if q_end else len(text)
        opt_lens = [len(o[1]) for o in options]
        mean_opt = sum(opt_lens) / len(opt_lens)
        spread = (max(opt_lens) - min(opt_lens)) / (mean_opt + 1.0)
        numeric_opts = sum(bool(_NUMBER.search(o[1])) for o in options) / len(options)
    else:
        question_chars = len(text)
        mean_opt = 0.0
        spread = 0.0
        numeric_opts = 0.0
    word_lens = list(map(len, words)) or [0]
    return [
        math.log1p(orig) / 8.0,
        math.log1p(n_words) / 6.0,
        math.log1p(text.count("\n")) / 3.0,
        digits / n * 5.0,
        math.log1p(len(numbers)) / 3.0,
        math.log1p(len(set(numbers))) / 3.0,
        min(max((len(x) for x in numbers), default=0), 12) / 6.0,
        float(any("." in x for x in numbers)),
        math_chars / n * 10.0,
        math.log1p(math_chars) / 3.0,
        upper / n * 5.0,
        (sum(word_lens) / len(word_lens)) / 6.0,
        sum(w >= 9 for w in word_lens) / len(word_lens) * 3.0,
        min(len(options), 6) / 4.0,
        math.log1p(question_chars) / 8.0,
        math.log1p(mean_opt) / 5.0,
        min(spread, 4.0) / 2.0,
        numeric_opts,
        min(text.count("?"), 5) / 3.0,
        float(bool(_NEGATION.search(text))),
        math.log1p(text.count(". ") + text.count("? ")) / 3.0,
        float(orig > len(text)),
    ]


class PromptFeaturizer(TransformerMixin, BaseEstimator):
    """Stateless text -> sparse feature matrix transformer.

    Columns: hashed word 1-2-grams, optional hashed char n-grams, and the
    hand-made features (scaled by ``hand_weight``).
    """

    def __init__(
        self,
        max_chars: int = 2000,
        word_features: int = 2**18,
        char_features: int = 0,
        char_ngram_range: tuple[int, int] = (3, 5),
        hand_weight: float = 1.0,
    ) -> None:
        self.max_chars = max_chars
        self.word_features = word_features
        self.char_features = char_features
        self.char_ngram_range = char_ngram_range
        self.hand_weight = hand_weight

    def fit(self, X: Iterable[str], y: object = None) -> "PromptFeaturizer":
        """No-op: the featurizer has no fitted state."""
        return self

    def _vectorizers(self) -> list[HashingVectorizer]:
        vecs = []
        if self.word_features:
            vecs.append(
                HashingVectorizer(
                    n_features=self.word_features,
                    ngram_range=(1, 2),
                    lowercase=True,
                    alternate_sign=False,
                    norm="l2",
                    token_pattern=r"(?u)\b\w+\b|[^\w\s]",
                    dtype=np.float32,
                )
            )
        if self.char_features:
            vecs.append(
                HashingVectorizer(
                    n_features=self.char_features,
                    analyzer="char_wb",
                    ngram_range=tuple(self.char_ngram_range),
                    lowercase=True,
                    alternate_sign=False,
                    norm="l2",
                    dtype=np.float32,
                )
            )
        return vecs

    @property
    def n_features_(self) -> int:
        """Total number of output columns."""
        return int(self.word_features) + int(self.char_features) + len(HAND_FEATURE_NAMES)

    def transform(self, X: Sequence[str]) -> sp.csr_matrix:
        """Featurise a sequence of prompt texts."""
        raw = list(X)
        texts = [truncate(t, self.max_chars) for t in raw]
        blocks = [v.transform(texts) for v in self._vectorizers()]
        hand = np.asarray(
            [hand_features(t, len(r)) for t, r in zip(texts, raw)], dtype=np.float32
        ).reshape(len(texts), len(HAND_FEATURE_NAMES))
        blocks.append(sp.csr_matrix(hand * np.float32(self.hand_weight)))
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    def compile_single(self) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
        """Fast one-text featurizer returning ``(column indices, values)``.

        Bypasses sklearn's per-call validation; numerically the same columns as
        :meth:`transform` (murmurhash3 like ``HashingVectorizer``).
        """
        specs = [(v.build_analyzer(), int(v.n_features)) for v in self._vectorizers()]
        max_chars = int(self.max_chars)
        hand_weight = float(self.hand_weight)
        hand_offset = int(self.word_features) + int(self.char_features)
        hand_cols = np.arange(hand_offset, hand_offset + len(HAND_FEATURE_NAMES))

        def featurize(text: str) -> tuple[np.ndarray, np.ndarray]:
            t = truncate(text, max_chars)
            idx_parts: list[np.ndarray] = []
            val_parts: list[np.ndarray] = []
            offset = 0
            for analyzer, n_features in specs:
                cols = _hash_columns(analyzer(t), n_features)
                if cols.size:
                    uniq, counts = np.unique(cols, return_counts=True)
                    vals = counts.astype(np.float64)
                    idx_parts.append(uniq + offset)
                    val_parts.append(vals / math.sqrt(float(vals @ vals)))
                offset += n_features
            idx_parts.append(hand_cols)
            val_parts.append(np.asarray(hand_features(t, len(text)), dtype=np.float64) * hand_weight)
            return np.concatenate(idx_parts), np.concatenate(val_parts)

        return featurize

"""Feature extraction from prompt text: hashed word/char n-grams + hand-made features.

Everything here is stateless (no fitted vocabulary), so the extractor is
cheap to serialise and identical at train and scoring time.  Only the first
``max_chars`` characters of a prompt are considered, which bounds latency on
long chat messages.
"""

from __future__ import annotations

import math
import re
from itertools import repeat
from collections import Counter
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

__all__ = [
    "PromptFeaturizer",
    "hand_features",
    "HAND_FEATURE_NAMES",
    "word_problem_features_v2",
    "WORD_PROBLEM_V2_FEATURE_NAMES",
    "unigram_vectorizer",
    "truncate",
    "segment",
    "SEGMENTS",
    "CHAT",
    "family",
    "word_problem_shaped",
    "WORD_PROBLEM_VERSION",
]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z]+")
_OPTION = re.compile(r"^\s*([A-D])[.)]\s?(.*)$", re.MULTILINE)
# _OPTION after the newline that starts its line: on "\n" + text, the same matches (and groups) at the same
# offsets, found ~6x faster (the scan looks for a literal newline instead of trying ``^`` at every position)
_OPTION_AFTER_NEWLINE = re.compile(r"\n\s*([A-D])[.)]\s?(.*)$", re.MULTILINE)
_MATH = tuple("+-*/=^<>%$√∑∫π×÷≤≥")
_NEGATION = re.compile(r"\b(?:not|except|false|incorrect|least|never)\b", re.IGNORECASE)
_QUANTITY = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_SENTENCE_END = re.compile(r"\s(?<=[.?!]\s)\s*")  # (?<=[.?!])\s+, led by \s so the scan skips ahead
_ASCII_DIGITS = b"0123456789"
_ASCII_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"


_NEGATION_WORDS = ("not", "except", "false", "incorrect", "least", "never")

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


# Word-problem (GSM8K-style) difficulty features: counts of the cues that make a
# GSM8K-style problem long: quantities in digits, number words and multiplier words,
# sentences, the question sentence, magnitudes, clock times, cents, fractions, named
# people, unit pairs that need a conversion, and cue-word families.  Each count c is
# returned as log1p(c) (sign-preserving for log-magnitudes), unscaled: the models that
# use them standardise the columns when fitting (see classifier.train).
_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million dozen".split()
)
_MULTIPLIER_WORDS = frozenset(
    "twice double doubles triple triples thrice half halves quarter third thirds quadruple pair pairs dozens "
    "couple".split()
)
_WP2_TOKEN = re.compile(r"[a-z]+|\d+(?:,\d{3})*(?:\.\d+)?|[%$/:]")
# the next three are led by a character class, not \b or a look-behind, so the scan skips ahead to a candidate;
# each matches what its plain form (in the comment) does: \b before a word character = no word character before
# \b\d{1,2}:\d{2}\b|\b\d{1,2}\s?(?:am|pm|a\.m\.|p\.m\.)
_CLOCK_TIME = re.compile(r"\d(?<!\w\d)(?:\d?:\d{2}\b|\d?\s?(?:am|pm|a\.m\.|p\.m\.))", re.IGNORECASE)
_CENTS = re.compile(r"\$\d+\.\d\d")
_DIGIT_FRACTION = re.compile(r"\d(?<!\w\d)\d*/\d+\b")  # \b\d+/\d+\b
_CAPITALISED = re.compile(r"[A-Z](?<!\w[A-Z])(?<![.?!]\s[A-Z])(?<!^[A-Z])[a-z]+")  # (?<![.?!]\s)(?<!^)\b[A-Z][a-z]+
_COMMON_CAPITALISED = frozenset(
    "How What If The He She They In On At A An It Then After Each There This When I His Her Their".split()
)
_CUE_FAMILIES: dict[str, frozenset[str]] = {
    "each": frozenset({"each"}),
    "per": frozenset({"per"}),
    "every": frozenset({"every"}),
    "then": frozenset({"then"}),
    "after": frozenset({"after", "afterwards"}),
    "remain": frozenset({"remaining", "remains", "remain", "left", "rest"}),
    "percent": frozenset({"percent", "%", "percentage"}),
    "total": frozenset({"total", "altogether", "combined", "sum", "overall"}),
    "average": frozenset({"average", "mean"}),
    "more": frozenset({"more", "less", "fewer", "than"}),
    "times": frozenset({"times"}),
    "ratio": frozenset({"ratio", "proportion"}),
    "but": frozenset({"but", "however", "instead", "except", "although", "while"}),
    "if": frozenset({"if", "when", "until", "unless"}),
    "age": frozenset({"old", "older", "younger", "age", "ages"}),
    "rate": frozenset({"rate", "speed", "mph", "hour", "hours", "minute", "minutes"}),
    "money": frozenset({"$", "dollars", "dollar", "cents", "cent", "price", "cost", "costs", "pay", "paid", "earn",
                        "earns", "profit"}),
    "increase": frozenset({"increase", "increases", "increased", "decrease", "decreased", "decreases", "discount",
                           "tax", "interest"}),
    "calendar": frozenset({"week", "weeks", "weekly", "day", "days", "daily", "month", "months", "year", "years"}),
    "not": frozenset({"not", "no", "never"}),
}
_UNIT_PAIRS: tuple[tuple[frozenset[str], frozenset[str]], ...] = tuple(
    (frozenset(a.split()), frozenset(b.split()))
    for a, b in (
        ("minute minutes", "hour hours"),
        ("hour hours", "day days"),
        ("day days", "week weeks"),
        ("cent cents", "dollar dollars $"),
        ("inch inches", "foot feet"),
        ("month months", "year years"),
        ("second seconds", "minute minutes"),
        ("ounce ounces", "pound pounds cup cups gallon gallons"),
    )
)

WORD_PROBLEM_V2_FEATURE_NAMES: tuple[str, ...] = (
    "wp2_quantities",
    "wp2_number_words",
    "wp2_multiplier_words",
    "wp2_all_quantities",
    "wp2_distinct_quantities",
    "wp2_sentences",
    "wp2_question_words",
    "wp2_question_quantities",
    "wp2_words_per_sentence",
    "wp2_quantities_per_sentence",
    "wp2_clock_times",
    "wp2_cents",
    "wp2_digit_fractions",
    "wp2_decimals",
    "wp2_large_quantities",
    "wp2_max_log10",
    "wp2_min_log10",
    "wp2_log10_spread",
    "wp2_quantity_digits",
    "wp2_names",
    "wp2_unit_conversions",
    "wp2_how_many_more",
    "wp2_how_much",
    "wp2_what_percent",
    "wp2_words",
    "wp2_commas",
    "wp2_and",
    "wp2_question_mark",
    "wp2_question_not_last",
    "wp2_round_quantities",
) + tuple("wp2_cue_" + name for name in _CUE_FAMILIES)


def _signed_log1p(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


def _question_sentence(sentences: list[str]) -> str:
    """The last sentence with a question mark (else the last sentence)."""
    questions = [s for s in sentences if "?" in s]
    return questions[-1] if questions else (sentences[-1] if sentences else "")


def word_problem_features_v2(text: str) -> list[float]:
    """Counts of arithmetic word-problem difficulty cues of one (already truncated) prompt, log1p-compressed."""
    lower = text.lower()
    tokens = _WP2_TOKEN.findall(lower)
    token_counts = Counter(tokens)  # one pass; every cue count below is a few dict lookups
    token_set = token_counts.keys()
    nums = _QUANTITY.findall(text)
    vals = [float(x.replace(",", "")) for x in nums]
    number_words = _NUMBER_WORDS & token_set
    n_number_words = sum(token_counts[w] for w in number_words)
    n_multipliers = sum(token_counts[w] for w in _MULTIPLIER_WORDS & token_set)
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    question = _question_sentence(sentences)
    q_tokens = _WP2_TOKEN.findall(question.lower())
    n_all = len(nums) + n_number_words + n_multipliers
    logs = [math.log10(v) for v in vals if 0 < v < math.inf] or [0.0]  # a 400-digit number parses as inf
    names = set(_CAPITALISED.findall(text)) - _COMMON_CAPITALISED
    n_words = sum(map(str.isalpha, tokens))
    n_sentences = max(len(sentences), 1)
    counts = [
        len(nums),
        n_number_words,
        n_multipliers,
        n_all,
        len(set(vals)) + len(number_words),
        len(sentences),
        len(question.split()),
        len(_QUANTITY.findall(question)) + sum(t in _NUMBER_WORDS for t in q_tokens),
        n_words / n_sentences,
        n_all / n_sentences,
        len(_CLOCK_TIME.findall(text)),
        len(_CENTS.findall(text)),
        len(_DIGIT_FRACTION.findall(text)),
        sum("." in x for x in nums),
        sum(v >= 1000 for v in vals),
        max(logs),
        min(logs),
        max(logs) - min(logs),
        sum(len(x) for x in nums),
        len(names),
        sum(not token_set.isdisjoint(a) and not token_set.isdisjoint(b) for a, b in _UNIT_PAIRS),
        float("how many more" in lower or "how much more" in lower),
        float("how much" in lower),
        float("what percent" in lower),
        n_words,
        text.count(","),
        token_counts["and"],
        float("?" in text),
        float(bool(question) and question in sentences and sentences.index(question) < len(sentences) - 1),
        sum(v % 10 == 0 for v in vals),
    ]
    counts += [sum(map(token_counts.__getitem__, cue & token_set)) for cue in _CUE_FAMILIES.values()]
    return [math.copysign(math.log1p(abs(x)), x) for x in map(float, counts)]  # _signed_log1p, inlined


def _digits_and_upper(text: str) -> tuple[int, int]:
    """How many characters are digits and upper-case (`str.isdigit` / `str.isupper`); ASCII in one C pass."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, _ASCII_DIGITS)), len(raw) - len(raw.translate(None, _ASCII_UPPER))
    return sum(map(str.isdigit, text)), sum(map(str.isupper, text))


def _has_negation(text: str) -> bool:
    folded = text.casefold()  # a cheap substring test first: the regex only runs when a cue word may be there
    return any(w in folded for w in _NEGATION_WORDS) and _NEGATION.search(text) is not None


def _word_unigrams_and_bigrams(text: str) -> list[str]:
    """What ``HashingVectorizer(lowercase=True, token_pattern=_TOKEN_PATTERN, ngram_range=(1, 2))`` analyses
    a text into: its tokens, then each pair of neighbours joined by a space."""
    tokens = _TOKEN.findall(text.lower())
    return tokens + list(map(" ".join, zip(tokens, tokens[1:])))


def _counted_columns(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(cols, return_counts=True)`` (counts as float64) of a non-empty array, sorting it in place."""
    cols.sort()
    n = cols.size
    edges = np.empty(n + 1, dtype=bool)
    edges[0] = edges[n] = True
    np.not_equal(cols[1:], cols[:-1], out=edges[1:n])
    bounds = edges.nonzero()[0]
    return cols[bounds[:-1]], np.subtract(bounds[1:], bounds[:-1], dtype=np.float64)


def _word_featurizer(
    n_features: int,
    max_chars: int,
    hand_weight: float,
    hand_cols: np.ndarray,
    wp_function: Callable[[str], list[float]] | None,
    wp_weight: float,
    n_uni: int,
) -> Callable[[str], tuple[np.ndarray, ...]]:
    """:meth:`PromptFeaturizer.compile_single` for a featurizer with word n-grams only (no char n-grams) and,
    with ``n_uni``, unigram columns taken from the word columns: the same arrays, fewer numpy calls."""
    no_uni = np.zeros(0, np.int64)

    def featurize(text: str) -> tuple[np.ndarray, ...]:
        t = text if len(text) <= max_chars else truncate(text, max_chars)
        tokens = _word_unigrams_and_bigrams(t)
        row = np.array(hand_features(t, len(text)), dtype=np.float64)
        row *= hand_weight
        if wp_function is not None:
            wp = np.array(wp_function(t), dtype=np.float64)
            wp *= wp_weight
            row = np.concatenate((row, wp))
        dense = row.astype(np.float32)  # float32 like transform(), so both paths see the same values
        if tokens:
            cols = _hash_columns(tokens, n_features)
            uni = cols[: (len(tokens) + 1) // 2] % n_uni if n_uni else None  # the first entries are the unigrams
            uniq, vals = _counted_columns(cols)
            idx = np.concatenate((uniq, hand_cols))
            val = np.concatenate((vals / math.sqrt(float(vals @ vals)), dense))
        else:
            uni = no_uni if n_uni else None
            idx, val = hand_cols, dense.astype(np.float64)
        return (idx, val) if uni is None else (idx, val, uni)

    return featurize


def _hash_columns(tokens: list[str], n_features: int) -> np.ndarray:
    """Hashed column of each token, exactly as ``HashingVectorizer`` (murmurhash3, seed 0)."""
    if _fast_hash is not None:
        indices, _, _ = _fast_hash([zip(tokens, repeat(1))], n_features, np.float64, False, 0)
        return np.asarray(indices, dtype=np.int64)
    cols = []
    for tok in tokens:
        h = murmurhash3_32(tok, seed=0)
        cols.append((2147483647 - (n_features - 1)) % n_features if h == -2147483648 else abs(h) % n_features)
    return np.asarray(cols, dtype=np.int64)


SEGMENTS: tuple[str, ...] = ("mc", "text")
WORD_PROBLEM_VERSION = 2  # the only word-problem feature set (version 1 was removed)


_TOKEN_PATTERN = r"(?u)\b\w+\b|[^\w\s]"  # words and single punctuation marks
# the same findall as _TOKEN_PATTERN (a scan never starts inside a run of word characters, so the \b's always hold)
_TOKEN = re.compile(r"\w+|[^\w\s]")


def unigram_vectorizer(n_features: int) -> HashingVectorizer:
    """Hashed lower-cased token counts (no normalisation): the subject model's input.

    Same tokens and hash as the word features' unigrams, so when ``n_features``
    divides ``word_features`` the columns are the word columns modulo ``n_features``
    (which is how :meth:`PromptFeaturizer.compile_single` gets them for free).
    """
    return HashingVectorizer(
        n_features=n_features,
        ngram_range=(1, 1),
        lowercase=True,
        alternate_sign=False,
        norm=None,
        token_pattern=_TOKEN_PATTERN,
        dtype=np.float64,
    )


def _options(text: str) -> list[tuple[str, str]]:
    """``_OPTION.findall(text)``: the (letter, option text) of each option line."""
    return _OPTION_AFTER_NEWLINE.findall("\n" + text)


def segment(text: str) -> str:
    """Prompt family from text alone: ``"mc"`` (lettered answer options) or ``"text"``."""
    return "mc" if len(_options(text[:4000])) >= 2 else "text"


CHAT = "chat"
"""The family of free-text prompts that are not word-problem shaped (open chat), see :func:`family`."""

_WP_QUANTITY = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_WP_ASK = re.compile(
    r"\b(?:how (?:many|much|long|far|old|fast|often|tall)|what percent|what (?:is|was|will|are|were)\b.*"
    r"\b(?:total|cost|price|percent|percentage|average|number|amount|sum|difference|value|age|speed|profit))",
    re.IGNORECASE,
)
_WP_ASK_LOOSE = re.compile(r"\b(?:calculate|compute|what'?s|what (?:is|was|will|would|are|were|did|does)|find|determine)\b",
                           re.IGNORECASE)
_QUANTITY_WORDS = _NUMBER_WORDS | _MULTIPLIER_WORDS
_WP_NOT = frozenset("{}<>=_\\`|#[]^")


def word_problem_shaped(text: str) -> bool:
    """Whether a free-text prompt reads like an arithmetic word problem (GSM8K-shaped): one paragraph of at
    most 1,000 characters without code or markup characters, with a quantity, whose last sentence asks for
    a quantity ("how many", "what is the total", ...; or "calculate"/"what is"/"find" with two quantities).
    True for 99% of the GSM8K rows of the routing dev set and 0 of its MMLU rows."""
    t = text.strip()
    if not t or len(t) > 1000 or "\n" in t or not _WP_NOT.isdisjoint(t):
        return False
    words = _WORD.findall(t.lower())
    n_quantities = len(_WP_QUANTITY.findall(t)) + sum(map(_QUANTITY_WORDS.__contains__, words))
    if n_quantities < 1:
        return False
    sentences = [s for s in _SENTENCE_END.split(t) if s]
    last = sentences[-1] if sentences else t
    return (
        _WP_ASK.search(last) is not None
        or (last.endswith("?") and _WP_ASK.search(t) is not None)
        or (n_quantities >= 2 and _WP_ASK_LOOSE.search(last) is not None)
    )


def family(text: str) -> str:
    """Finer prompt family: ``"mc"``, ``"text"`` (word-problem shaped, see :func:`word_problem_shaped`) or
    ``"chat"`` (any other free text).  The family models are fitted per :func:`segment`; a model with a chat
    head (:class:`classifier.chathead.ChatHead`) scores ``"chat"`` prompts with it."""
    seg = segment(text)
    if seg == "text" and not word_problem_shaped(text[:4000]):
        return CHAT
    return seg


def truncate(text: str, max_chars: int) -> str:
    """Keep at most ``max_chars`` characters (head and tail halves if longer)."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "\n" + text[-half:]


# ASCII letters -> b"a", every other byte -> b" ": the runs of "a" in a text's UTF-8 bytes (after a leading
# space) are its ``[A-Za-z]+`` words (no ASCII byte occurs inside a multi-byte UTF-8 sequence)
_LETTER_RUNS = bytes(
    ord("a") if (65 <= b <= 90 or 97 <= b <= 122) else ord(" ") for b in range(256)
)
_ASCII_MATH = "".join(c for c in _MATH if c.isascii()).encode("ascii")
_LONG_WORD = b" " + b"a" * 9  # a word of 9 or more letters starts here (occurrences cannot overlap)
_ANY_DIGIT = re.compile(r"\d")  # truthy exactly when _NUMBER.search is


def _word_counts(text: str) -> tuple[int, int, int]:
    """``(words, letters in them, words of 9+ letters)`` for the ``[A-Za-z]+`` words of ``text``, in C passes."""
    runs = b" " + text.encode("utf-8", "surrogatepass").translate(_LETTER_RUNS)
    return runs.count(b" a"), runs.count(b"a"), runs.count(_LONG_WORD)


def _math_count(text: str) -> int:
    """How many characters of ``text`` are maths characters (``_MATH``)."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, _ASCII_MATH))
    return sum(map(text.count, _MATH))


def hand_features(text: str, original_len: int | None = None) -> list[float]:
    """Hand-made numeric features of one (already truncated) prompt, ~unit scale."""
    n = len(text) or 1
    orig = original_len if original_len is not None else len(text)
    n_words, letters, long_words = _word_counts(text)
    numbers = _NUMBER.findall(text)
    digits, upper = _digits_and_upper(text)
    math_chars = _math_count(text)
    options = _options(text)
    if len(options) >= 2:
        q_end = _OPTION_AFTER_NEWLINE.search("\n" + text)  # its offset there is _OPTION's in text
        question_chars = q_end.start() if q_end else len(text)
        opt_lens = [len(o[1]) for o in options]
        mean_opt = sum(opt_lens) / len(opt_lens)
        spread = (max(opt_lens) - min(opt_lens)) / (mean_opt + 1.0)
        numeric_opts = sum(_ANY_DIGIT.search(o[1]) is not None for o in options) / len(options)
    else:
        question_chars = len(text)
        mean_opt = 0.0
        spread = 0.0
        numeric_opts = 0.0
    n_lens = n_words or 1  # no word: one word of length 0, as the mean and fraction below read it
    return [
        math.log1p(orig) / 8.0,
        math.log1p(n_words) / 6.0,
        math.log1p(text.count("\n")) / 3.0,
        digits / n * 5.0,
        math.log1p(len(numbers)) / 3.0,
        math.log1p(len(set(numbers))) / 3.0,
        min(max(map(len, numbers), default=0), 12) / 6.0,
        float(any("." in x for x in numbers)),
        math_chars / n * 10.0,
        math.log1p(math_chars) / 3.0,
        upper / n * 5.0,
        (letters / n_lens) / 6.0,
        long_words / n_lens * 3.0,
        min(len(options), 6) / 4.0,
        math.log1p(question_chars) / 8.0,
        math.log1p(mean_opt) / 5.0,
        min(spread, 4.0) / 2.0,
        numeric_opts,
        min(text.count("?"), 5) / 3.0,
        float(_has_negation(text)),
        math.log1p(text.count(". ") + text.count("? ")) / 3.0,
        float(orig > len(text)),
    ]


class PromptFeaturizer(TransformerMixin, BaseEstimator):
    """Stateless text -> sparse feature matrix transformer.

    Columns: hashed word 1-2-grams, optional hashed char n-grams, the
    hand-made features (scaled by ``hand_weight``) and, if
    ``word_problem_weight`` > 0, the word-problem features
    (:func:`word_problem_features_v2`) scaled by it.  ``word_problem_version``
    must be 2 (version 1 was removed; files that used it are refused on load).
    """

    def __init__(
        self,
        max_chars: int = 2000,
        word_features: int = 2**18,
        char_features: int = 0,
        char_ngram_range: tuple[int, int] = (3, 5),
        hand_weight: float = 1.0,
        word_problem_weight: float = 0.0,
        word_problem_version: int = WORD_PROBLEM_VERSION,
    ) -> None:
        self.max_chars = max_chars
        self.word_features = word_features
        self.char_features = char_features
        self.char_ngram_range = char_ngram_range
        self.hand_weight = hand_weight
        self.word_problem_weight = word_problem_weight
        self.word_problem_version = word_problem_version

    def _wp_weight(self) -> float:
        return float(self.word_problem_weight or 0.0)

    def _wp_features(self) -> tuple[Callable[[str], list[float]], tuple[str, ...]]:
        """The word-problem feature function and its column names."""
        if int(self.word_problem_version) != WORD_PROBLEM_VERSION:
            raise ValueError(
                f"word-problem features version {self.word_problem_version!r} is not supported "
                f"(only {WORD_PROBLEM_VERSION}); retrain the model"
            )
        return word_problem_features_v2, WORD_PROBLEM_V2_FEATURE_NAMES

    def _hand_row(self, text: str, original_len: int) -> list[float]:
        row = [v * self.hand_weight for v in hand_features(text, original_len)]
        wp = self._wp_weight()
        if wp:
            row += [v * wp for v in self._wp_features()[0](text)]
        return row

    @property
    def hand_start_(self) -> int:
        """Index of the first dense column (hand-made features, then word-problem features)."""
        return int(self.word_features) + int(self.char_features)

    @property
    def n_hand_(self) -> int:
        """Number of dense (hand-made) columns at the end of the feature matrix."""
        return len(HAND_FEATURE_NAMES) + (len(self._wp_features()[1]) if self._wp_weight() else 0)

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
                    token_pattern=_TOKEN_PATTERN,
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
        return self.hand_start_ + self.n_hand_

    def transform(self, X: Sequence[str]) -> sp.csr_matrix:
        """Featurise a sequence of prompt texts."""
        raw = list(X)
        texts = [truncate(t, self.max_chars) for t in raw]
        blocks = [v.transform(texts) for v in self._vectorizers()]
        hand = np.asarray([self._hand_row(t, len(r)) for t, r in zip(texts, raw)], dtype=np.float32).reshape(
            len(texts), self.n_hand_
        )
        blocks.append(sp.csr_matrix(hand))
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    def compile_word_problem_only(self) -> Callable[[str], tuple[np.ndarray, ...]]:
        """Fast one-text featurizer of the word-problem columns alone, ``(column indices, values)``.

        For models whose weights on every other column are 0 (see
        ``RouterConfig.dense_families``): the same values as :meth:`transform` in
        those columns, without hashing the text's n-grams.
        """
        wp_weight = self._wp_weight()
        if not wp_weight:
            raise ValueError("featurizer has no word-problem features")
        wp_function, wp_names = self._wp_features()
        start = self.hand_start_ + len(HAND_FEATURE_NAMES)
        cols = np.arange(start, start + len(wp_names))
        max_chars = int(self.max_chars)

        def featurize(text: str) -> tuple[np.ndarray, ...]:
            row = [v * wp_weight for v in wp_function(truncate(text, max_chars))]
            return cols, np.asarray(row, dtype=np.float32).astype(np.float64)

        return featurize

    def compile_words(self) -> Callable[[str], np.ndarray]:
        """Fast one-text function returning the distinct hashed word 1-2-gram columns of a prompt (the
        non-zero columns of :meth:`transform`'s word block), for :class:`classifier.familiarity.Familiarity`."""
        n_features = int(self.word_features)
        if not n_features:
            raise ValueError("featurizer has no word features")
        max_chars = int(self.max_chars)

        def columns(text: str) -> np.ndarray:
            return np.unique(_hash_columns(_word_unigrams_and_bigrams(truncate(text, max_chars)), n_features))

        return columns

    def compile_single(
        self, word_problem: bool = True, unigram_features: int = 0
    ) -> Callable[[str], tuple[np.ndarray, ...]]:
        """Fast one-text featurizer returning ``(column indices, values)``.

        Bypasses sklearn's per-call validation; numerically the same columns as
        :meth:`transform` (murmurhash3 like ``HashingVectorizer``).  With
        ``word_problem=False`` the word-problem columns are left out (for models
        whose weights on them are 0).  With ``unigram_features`` > 0 it returns a
        third array: the text's unigram columns as :func:`unigram_vectorizer`
        hashes them (one entry per token, repeats included).
        """
        specs = [(v.build_analyzer(), int(v.n_features)) for v in self._vectorizers()]
        if self.word_features:  # the same tokens as sklearn's word analyzer, without its per-call overhead
            specs[0] = (_word_unigrams_and_bigrams, specs[0][1])
        max_chars = int(self.max_chars)
        hand_weight = float(self.hand_weight)
        wp_weight = self._wp_weight() if word_problem else 0.0
        hand_offset = self.hand_start_
        wp_function, wp_names = self._wp_features() if wp_weight else (None, ())
        n_hand = len(HAND_FEATURE_NAMES) + len(wp_names)
        hand_cols = np.arange(hand_offset, hand_offset + n_hand)
        n_uni = int(unigram_features)
        # word unigram columns modulo n_uni are the unigram columns (same tokens, same hash)
        from_words = bool(n_uni) and bool(self.word_features) and int(self.word_features) % n_uni == 0
        uni_analyzer = None if (not n_uni or from_words) else unigram_vectorizer(n_uni).build_analyzer()

        if len(specs) == 1 and self.word_features and (not n_uni or from_words):
            return _word_featurizer(specs[0][1], max_chars, hand_weight, hand_cols, wp_function, wp_weight, n_uni)

        def featurize(text: str) -> tuple[np.ndarray, ...]:
            t = truncate(text, max_chars)
            idx_parts: list[np.ndarray] = []
            val_parts: list[np.ndarray] = []
            uni = None
            offset = 0
            for i, (analyzer, n_features) in enumerate(specs):
                tokens = analyzer(t)
                cols = _hash_columns(tokens, n_features)
                if i == 0 and from_words:
                    # word n-grams (1, 2): the first (len + 1) // 2 entries are the unigrams
                    uni = cols[: (len(tokens) + 1) // 2] % n_uni
                if cols.size:
                    uniq, counts = np.unique(cols, return_counts=True)
                    vals = counts.astype(np.float64)
                    idx_parts.append(uniq + offset)
                    val_parts.append(vals / math.sqrt(float(vals @ vals)))
                offset += n_features
            idx_parts.append(hand_cols)
            row = [v * hand_weight for v in hand_features(t, len(text))]
            if wp_function is not None:
                row += [v * wp_weight for v in wp_function(t)]
            # float32 like transform(), so both paths see the same values
            val_parts.append(np.asarray(row, dtype=np.float32).astype(np.float64))
            if not n_uni:
                return np.concatenate(idx_parts), np.concatenate(val_parts)
            if uni is None:
                uni = _hash_columns(uni_analyzer(t), n_uni) if uni_analyzer is not None else np.zeros(0, np.int64)
            return np.concatenate(idx_parts), np.concatenate(val_parts), uni

        return featurize

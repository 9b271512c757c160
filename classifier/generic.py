"""Format-free prompt features for the open-chat head: the question's content, not its benchmark scaffolding.

:func:`question_text` strips what only a benchmark has (lettered answer options, a trailing ``Answer:``), so a
model fitted on ``question_text`` of MMLU/GSM8K rows learns from what is asked, which a chat prompt also has.
:func:`generic_features` are counts any prompt has (length, numbers, maths notation, code, instructions,
constraints, enumerations, questions), log-compressed; see :data:`GENERIC_FEATURE_NAMES`.  The chat head
(:class:`classifier.chathead.ChatHead`) standardises them on its training rows and clips them to a few standard
deviations, so a chat prompt far outside the training range (a 5,000-character code dump) cannot push the
score past what the training rows taught.
"""

from __future__ import annotations

import math
import re

__all__ = ["GENERIC_FEATURE_NAMES", "generic_features", "question_text"]

_OPTION_LINE = re.compile(r"^\s*[A-D][.)]\s?.*$\n?", re.MULTILINE)
# counts as many matches on "\n" + text as _OPTION_LINE on text, ~6x faster (a literal newline to scan for)
_OPTION_AFTER_NEWLINE = re.compile(r"\n\s*[A-D][.)]\s?.*$", re.MULTILINE)
_ANSWER_CUE = re.compile(r"\s*\bAnswer:\s*$")
_CUE_TAIL = 64
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")  # on the lower-cased text: every feature below counts these once
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_MATH_CHARS = "+-*/=^<>%√∑∫π×÷≤≥"
_LATEX = re.compile(r"\$[^$\n]+\$|\\(?:frac|sum|int|sqrt|cdot|times|leq|geq|alpha|beta|theta|pi)\b|\^\{")
_ENUMERATION = re.compile(r"^\s*(?:\d+[.)]|[-*•]|\(?[a-h]\))\s+", re.MULTILINE)
_CODE_WORDS = frozenset(
    "def return import class function const var let int void print printf elif lambda select public static "
    "struct include".split()
)
_CODE_MARKS = ("{", "}", ";", "==", "!=", "->", "++", "()")
_INSTRUCTION_WORDS = frozenset(
    "write explain create implement design prove show solve calculate compute derive analyse analyze compare list "
    "describe summarise summarize generate translate optimise optimize debug fix build find determine evaluate "
    "estimate identify classify convert simplify".split()
)
_CONSTRAINT_WORDS = frozenset("must should exactly without only each every ensure assume given don't".split())
_CONSTRAINT_PHRASES = ("at least", "at most", "make sure", "do not", "no more than", "no less than", "such that",
                       "if and only if")
_NEGATION_WORDS = frozenset("not except false incorrect least never cannot".split())
_ASCII_MATH = "".join(c for c in _MATH_CHARS if c.isascii()).encode("ascii")
_ASCII_DIGITS = b"0123456789"
_ASCII_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"

GENERIC_FEATURE_NAMES: tuple[str, ...] = (
    "g_log_chars",
    "g_log_words",
    "g_log_lines",
    "g_digit_frac",
    "g_log_numbers",
    "g_math_frac",
    "g_log_math",
    "g_log_latex",
    "g_log_code_fences",
    "g_log_code_tokens",
    "g_log_questions",
    "g_log_sentences",
    "g_log_instructions",
    "g_log_constraints",
    "g_log_enumerations",
    "g_mean_word_len",
    "g_long_word_frac",
    "g_upper_frac",
    "g_negation",
    "g_words_per_sentence",
)


def question_text(text: str) -> str:
    """``text`` without multiple-choice scaffolding: option lines ``A.``-``D.`` and a trailing ``Answer:``."""
    has_options = len(_OPTION_AFTER_NEWLINE.findall("\n" + text[:4000])) >= 2
    stripped = (_OPTION_LINE.sub("", text) if has_options else text).rstrip()
    # the cue can only end the text: look at its tail (a search over a long prompt cost ~0.5 ms)
    head, tail = stripped[:-_CUE_TAIL], stripped[-_CUE_TAIL:]
    return (head + _ANSWER_CUE.sub("", tail)).strip()


def _digits_and_upper(text: str) -> tuple[int, int]:
    if text.isascii():  # one C pass each
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, _ASCII_DIGITS)), len(raw) - len(raw.translate(None, _ASCII_UPPER))
    return sum(map(str.isdigit, text)), sum(map(str.isupper, text))


def _math_count(text: str) -> int:
    """How many characters of ``text`` are maths characters (``_MATH_CHARS``); ASCII in one C pass."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, _ASCII_MATH))
    return sum(map(text.count, _MATH_CHARS))


def generic_features(text: str, original_len: int | None = None) -> list[float]:
    """Format-free counts of one (already stripped and truncated) prompt, log-compressed (see the module doc)."""
    n = len(text) or 1
    orig = original_len if original_len is not None else len(text)
    lower = text.lower()
    words = _TOKEN.findall(lower)
    n_words = len(words)
    word_lens = list(map(len, words)) or [0]
    digits, upper = _digits_and_upper(text)
    math_chars = _math_count(text)
    sentences = max(len(_SENTENCE_END.findall(text)), 1)
    code = sum(map(text.count, _CODE_MARKS)) + sum(map(_CODE_WORDS.__contains__, words))
    instructions = sum(map(_INSTRUCTION_WORDS.__contains__, words))
    constraints = sum(map(_CONSTRAINT_WORDS.__contains__, words)) + sum(map(lower.count, _CONSTRAINT_PHRASES))
    return [
        math.log1p(orig),
        math.log1p(n_words),
        math.log1p(text.count("\n")),
        digits / n,
        math.log1p(len(_NUMBER.findall(text))),
        math_chars / n,
        math.log1p(math_chars),
        math.log1p(len(_LATEX.findall(text))),
        math.log1p(text.count("```")),
        math.log1p(code),
        math.log1p(text.count("?")),
        math.log1p(sentences),
        math.log1p(instructions),
        math.log1p(constraints),
        math.log1p(len(_ENUMERATION.findall(text))),
        sum(word_lens) / len(word_lens),
        sum(map((9).__le__, word_lens)) / len(word_lens),  # words of 9+ letters
        upper / n,
        float(not _NEGATION_WORDS.isdisjoint(words)),
        math.log1p(n_words / sentences),
    ]

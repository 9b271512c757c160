"""The scoring fast path's rewritten patterns and counts give what their plain forms give (same matches, same
numbers), on edge cases and on the routing dev prompts; bench/score_equivalence.py compares whole scores with a
baseline tree."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from classifier import features as F
from classifier import generic as G

DEV_DATA = Path(os.environ.get("SLM_ROUTING_DEV_DATA",
                               Path(__file__).resolve().parent.parent.parent / "shared/data/routing/dev.jsonl"))

EDGE = [
    "", " ", "x", "\n", "A.", "A.\n\nB.", "A.\nB. foo", "\n\nA) x\n  \n C. y", "A.B.\nC.", "x\nA.", "\nA.\n",
    "A. \u2028B. x\nC.\u0085D.", "A.\n\n\nB.\n\n", "  A)\n B)\n", "Q?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:",
    "İstanbul K ünïcödé 123 x", "a\u00b2\u0663 B.", "don't rock'n'roll DON'T", "x" * 5000, "\ud800 Ab",
    "Tom has 3:15 pm. Ann, Bob and Çelik buy 1/2 of $4.50! How many?", "A Abc. Bcd? Cde", "x.\u00a0 Y",
    "3 am 4AM 5 a.m. 10:30 1:2345 12 AM", "1/2 3/4x a1/2 ½/3 ٣/4 _1/2", "É Ab _Ab A.Bc", "Extraordinarily long words",
    "int main() { return a->b == c != d++; }", "a  b\tc... d?! e",
]

PLAIN = {  # the plain form of each pattern that the fast path replaced, and the fast one
    "clock": (re.compile(r"\b\d{1,2}:\d{2}\b|\b\d{1,2}\s?(?:am|pm|a\.m\.|p\.m\.)", re.IGNORECASE), F._CLOCK_TIME),
    "fraction": (re.compile(r"\b\d+/\d+\b"), F._DIGIT_FRACTION),
    "capitalised": (re.compile(r"(?<![.?!]\s)(?<!^)\b[A-Z][a-z]+"), F._CAPITALISED),
    "tokens": (re.compile(F._TOKEN_PATTERN), F._TOKEN),
}


def _texts() -> list[str]:
    texts = list(EDGE)
    if DEV_DATA.is_file():
        with DEV_DATA.open(encoding="utf-8") as fh:
            texts += [json.loads(line)["prompt"] for line in fh if line.strip()][::5]
    return texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _texts()


def test_the_dev_prompts_are_there(texts: list[str]) -> None:
    if not DEV_DATA.is_file():
        pytest.skip(f"no dev data at {DEV_DATA}")
    assert len(texts) == len(EDGE) + 2118


def test_option_lines_after_a_newline_are_the_anchored_matches(texts: list[str]) -> None:
    for text in texts:
        for head in (text[:4000], F.truncate(text, 1200)):
            first = F._OPTION.search(head)
            fast_first = F._OPTION_AFTER_NEWLINE.search("\n" + head)
            assert F._options(head) == F._OPTION.findall(head)
            assert (first is None and fast_first is None) or first.start() == fast_first.start()
            assert len(G._OPTION_AFTER_NEWLINE.findall("\n" + head)) == len(G._OPTION_LINE.findall(head))


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_led_patterns_match_their_plain_forms(texts: list[str], name: str) -> None:
    plain, fast = PLAIN[name]
    for text in texts:
        cut = F.truncate(text, 1200)
        assert fast.findall(cut) == plain.findall(cut)
        assert fast.findall(cut.lower()) == plain.findall(cut.lower())


def test_sentence_split_matches_the_look_behind_form(texts: list[str]) -> None:
    plain = re.compile(r"(?<=[.?!])\s+")
    for text in texts:
        assert F._SENTENCE_END.split(text.strip()) == plain.split(text.strip())


def test_word_counts_from_bytes_are_the_regex_words(texts: list[str]) -> None:
    for text in texts:
        words = re.findall(r"[A-Za-z]+", text)
        assert F._word_counts(text) == (len(words), sum(map(len, words)), sum(len(w) >= 9 for w in words))
        assert F._math_count(text) == sum(text.count(c) for c in F._MATH)
        assert G._math_count(text) == sum(text.count(c) for c in G._MATH_CHARS)


def test_counted_columns_is_unique_with_counts() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 300):
        cols = rng.integers(0, 50, size=n).astype(np.int64)
        uniq, counts = np.unique(cols, return_counts=True)
        got_uniq, got_counts = F._counted_columns(cols.copy())
        assert got_uniq.tolist() == uniq.tolist() and got_counts.tolist() == counts.astype(np.float64).tolist()
        assert got_counts.dtype == np.float64


def test_hand_features_of_an_mc_prompt_hand_computed() -> None:
    text = "Which is prime?\nA. 4\nB. 9\nC. 7\nD. none"
    got = F.hand_features(text)
    assert got[13] == 1.0  # four options
    assert got[14] == math.log1p(len("Which is prime?\n")) / 8.0  # the question ends where the first option line starts
    assert got[17] == 0.75  # three options of four have a number
    assert got[1] == math.log1p(8) / 6.0  # Which is prime A B C D none
    assert got[11] == (20 / 8) / 6.0 and got[12] == 0.0  # 20 letters in 8 words, none of 9+ letters

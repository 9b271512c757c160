"""Distinct paraphrases of the cache bench's stored prompt, and the order bench/cache.py sends them in.

The gateway keeps the embedding and guard signature of its last 1,024 prompt texts (`PromptMemo`) and a large
scope's last 32 searches (`ScopeMatrix.search`), so one paraphrase sent over and over measures the memoised hit
only. `candidates()` is a fixed combinatorial set (prefix x phrasing x ending, the same question each time: no
number, negation, polarity, form, language or entity change) of `len(PREFIXES) * len(PHRASINGS) * len(ENDINGS)`
texts; `checked()` keeps those that are semantic hits of `HIT_PROMPT` with the gateway's own embedder, lexical guard
and shipped threshold (what `SemanticCache._lookup` decides for a stored `HIT_PROMPT`), and `rotation()` spreads
them over the scopes so that a text comes back only after more requests than the memo holds.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

HIT_PROMPT = "What is the capital of France? (cache bench)"
"""The prompt the bench stores in every scope."""
PARAPHRASE = "what's the capital city of France? (cache bench)"
"""The one paraphrase of `--paraphrases repeat` (and of the warm-up); not in `candidates()`."""
SUFFIX = " (cache bench)"
MEMO_PROMPTS = 1024
"""`PromptMemo`'s default size: a distinct run must not send a text again within this many requests."""
MIN_DISTINCT = 2000
"""bench/cache.py stops when fewer candidates than this are hits (well over `MEMO_PROMPTS`)."""

PREFIXES: tuple[str, ...] = (
    "", "Hey, ", "Hi, ", "Hello, ", "Please tell me: ", "Can you tell me: ", "Tell me, ", "I wonder: ",
    "Just curious: ", "Help me out: ", "Question: ", "Trivia: ", "Out of curiosity, ", "Remind me: ",
    "Honest question: ", "Geography: ", "Could you answer this: ", "Do you know: ", "Say, ", "Hmm, ",
)
PHRASINGS: tuple[str, ...] = (
    "what is the capital of France", "what's the capital of France", "what is the capital city of France",
    "what's the capital of France called", "which city is the capital of France", "what is the name of the capital of France",
    "which city serves as the capital of France", "name the capital of France", "tell me the capital of France",
    "what is the capital of the country France", "which city is capital of France", "what is the capital of france",
)
ENDINGS: tuple[str, ...] = (
    "?", "??", "? thanks", "? thank you", "? thx", " please?", ", please?", "? just the name", "? just curious",
    "? cheers",
)


def candidates() -> list[str]:
    """Every prefix x phrasing x ending, `SUFFIX` last, in a fixed order (distinct texts, neither `HIT_PROMPT` nor
    `PARAPHRASE`)."""
    return [f"{p}{q}{e}{SUFFIX}" for p, q, e in itertools.product(PREFIXES, PHRASINGS, ENDINGS)]


@dataclass(frozen=True)
class Checked:
    kept: list[str]
    """The candidates that are semantic hits of the stored prompt, in `candidates()` order."""
    refused: dict[str, str]
    """Candidate -> why not: `threshold` (similarity below it), a guard check, or `same-vector` (its embedding equals
    an earlier kept one's, the stored prompt's or `PARAPHRASE`'s, so the scope's search memo could serve it)."""
    threshold: float
    embedder: str
    min_similarity: float

    def summary(self) -> str:
        reasons = Counter(self.refused.values())
        return (f"{len(self.kept):,} distinct paraphrases kept of {len(self.kept) + len(self.refused):,} "
                f"(semantic hits of the stored prompt: {self.embedder}, threshold {self.threshold}, lowest similarity "
                f"{self.min_similarity:.4f}, lexical guard agrees)"
                + (f"; dropped {dict(reasons)}" if reasons else ""))


def checked(texts: list[str] | None = None, stored: str = HIT_PROMPT) -> Checked:
    """`texts` (default `candidates()`) that the gateway would serve as semantic hits of `stored`: cosine similarity of
    the bundled embedder's vectors at least the shipped threshold, and the lexical guard's agreement."""
    import numpy as np

    from gateway.cache.semantic.calibrate import shipped_threshold
    from gateway.cache.semantic.guard import LexicalGuard
    from gateway.embedding.shared import load_bundled

    texts = candidates() if texts is None else texts
    embedder = load_bundled()
    threshold = shipped_threshold(embedder.name)
    guard = LexicalGuard()
    vectors = embedder.embed([stored, PARAPHRASE, *texts])
    similarities = np.vecdot(vectors[2:], vectors[0])
    target = guard.signature(stored)
    kept: list[str] = []
    refused: dict[str, str] = {}
    seen = {vectors[0].tobytes(), vectors[1].tobytes()}  # the stored prompt's and the repeated paraphrase's
    low = 1.0
    for text, vector, similarity in zip(texts, vectors[2:], similarities):
        check = guard.disagreement(guard.signature(text), target)
        if similarity < threshold:
            refused[text] = "threshold"
        elif check is not None:
            refused[text] = check
        elif vector.tobytes() in seen:
            refused[text] = "same-vector"
        else:
            seen.add(vector.tobytes())
            kept.append(text)
            low = min(low, float(similarity))
    return Checked(kept, refused, threshold, embedder.name, low)


def rotation(i: int, texts: int, scopes: int) -> tuple[int, int]:
    """(scope, text index) of request `i`: scopes in turn, each scope through the whole set, scope `s` starting at
    `s * (texts // scopes)`, so a text is sent again (to any scope) only about `texts` requests later."""
    scope, turn = i % scopes, i // scopes
    return scope, (turn + scope * max(1, texts // scopes)) % texts

"""`ScoreMemo`: the classifier's score of recently seen message lists, so an exact repeat is scored once.

Scoring a chat prompt embeds it and runs the chat head: 70-120 µs for a short prompt on a warm process, 0.3-0.6
ms at p99 over Arena-Hard prompts (`bench/classifier_latency.py`), the largest part of an exact cache hit's CPU
when the request is routed automatically (the cache key names the decided tier, so routing comes first). The
score is a pure function of the messages (the model is deterministic), so a repeat gets the very same float.

The key is a 128-bit BLAKE2b digest of the messages' JSON (every field, in order: only a byte-identical list
repeats), so an entry costs about 150 bytes whatever the prompt's size and `max_entries` bounds the memory. A
`PolicyRouter` owns one: a reload builds a new router, so a new model or policy never sees an old score.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

MAX_ENTRIES = 4096
_encode = msgspec.json.Encoder().encode


class ScoreMemo:
    """`score_messages` of `scorer`, remembered for the last `max_entries` distinct message lists (LRU)."""

    __slots__ = ("scorer", "max_entries", "_scores")

    def __init__(self, scorer: Any, max_entries: int = MAX_ENTRIES) -> None:
        self.scorer = scorer
        self.max_entries = max_entries
        self._scores: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scores)

    def score_messages(self, messages: Sequence[Mapping[str, Any]]) -> float:
        """The scorer's p_strong for `messages` (raises what the scorer raises; a failure is not remembered)."""
        key = hashlib.blake2b(_encode(messages), digest_size=16).digest()
        scores = self._scores
        score = scores.get(key)
        if score is not None:
            scores.move_to_end(key)
            return score
        score = float(self.scorer.score_messages(messages))
        scores[key] = score
        if len(scores) > self.max_entries:
            scores.popitem(last=False)
        return score

    def familiarity_messages(self, messages: Sequence[Mapping[str, Any]]) -> float | None:
        """The scorer's familiarity of `messages` (not remembered), None when it has none."""
        measure = getattr(self.scorer, "familiarity_messages", None)
        return None if measure is None else measure(messages)

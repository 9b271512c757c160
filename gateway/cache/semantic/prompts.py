"""`PromptMemo`: the embedding and guard signature of prompts looked up lately, by prompt text.

Both are pure functions of the text (the embedder's weights and the guard's word lists are fixed for the life of a
`SemanticCache`), so a prompt seen again needs neither computed again: ~0.05-0.15 ms of embedding (more for a long
prompt, which also skips the hop to the worker thread) and ~0.07 ms of signature per lookup on this machine. It
pays where the same paraphrase comes back: a semantic hit's answer is never stored under the paraphrase's own
exact key (its TTL would start over), so a popular paraphrase is a semantic hit each time it is asked.

Nothing here can change a lookup's outcome: the values are the ones a fresh computation gives. Bounded: at most
`max_prompts` prompts (least recently used first out); vectors are kept read-only.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from gateway.cache.semantic.guard import GuardSignature


class PromptMemo:
    """Prompt text -> [embedding, guard signature or None (not computed yet)], least recently used out first."""

    __slots__ = ("max_prompts", "_prompts")

    def __init__(self, max_prompts: int = 1024) -> None:
        self.max_prompts = max_prompts
        self._prompts: OrderedDict[str, list[object]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._prompts)

    def vector(self, text: str) -> np.ndarray | None:
        known = self._prompts.get(text)
        if known is None:
            return None
        self._prompts.move_to_end(text)
        return known[0]  # type: ignore[return-value]

    def signature(self, text: str) -> GuardSignature | None:
        known = self._prompts.get(text)
        return None if known is None else known[1]  # type: ignore[return-value]

    def remember(self, text: str, vector: np.ndarray, signature: GuardSignature | None = None) -> None:
        """Keep `vector` (made read-only) for `text`, and its signature when given (kept when not)."""
        if self.max_prompts <= 0:
            return
        known = self._prompts.get(text)
        if known is not None:
            if signature is not None:
                known[1] = signature
            return
        vector.flags.writeable = False
        self._prompts[text] = [vector, signature]
        while len(self._prompts) > self.max_prompts:
            self._prompts.popitem(last=False)

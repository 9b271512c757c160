"""`RecentEmbeddings`: an embedder that remembers the vectors of the last short texts it embedded.

With the semantic cache on, a chat request is embedded by two users of the gateway's one embedder: the router's
chat head (the question's first and last 100 characters) and the semantic cache (the prompt). For a prompt of at
most 200 characters without multiple-choice scaffolding the two texts are the same string, and the second call
gets the first one's vector instead of embedding it again: the same float32 row, so the router's score and the
cache's similarities are exactly what they were. Only single-text calls of texts up to `max_chars` are
remembered (the most recent `size`), as a copy, so no caller can change another's vector.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from gateway.embedding.base import Embedder

RECENT_TEXTS = 256
"""Texts remembered: more than the requests in flight between a router's decision and its cache lookup."""
RECENT_MAX_CHARS = 256
"""Longer texts are not remembered (the router embeds at most 201 characters)."""


class RecentEmbeddings:
    """`Embedder` over `inner`: a single-text call of a text embedded lately returns that vector again."""

    __slots__ = ("inner", "name", "dim", "size", "max_chars", "_rows", "_lock")

    def __init__(self, inner: Embedder, *, size: int = RECENT_TEXTS, max_chars: int = RECENT_MAX_CHARS) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.size = size
        self.max_chars = max_chars
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        """/v1/embeddings embeds in a worker thread, the router and the cache in the event loop's."""

    def __repr__(self) -> str:
        return f"RecentEmbeddings({self.inner!r})"

    def embed(self, texts: list[str]) -> np.ndarray:
        if len(texts) != 1 or len(texts[0]) > self.max_chars or self.size <= 0:
            return self.inner.embed(texts)
        text = texts[0]
        with self._lock:
            row = self._rows.get(text)
            if row is not None:
                self._rows.move_to_end(text)
                return row.reshape(1, -1).copy()
        vectors = self.inner.embed(texts)
        with self._lock:
            self._rows[text] = vectors[0].copy()
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)
        return vectors

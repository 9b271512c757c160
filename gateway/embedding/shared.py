"""One embedder per gateway: `SharedEmbedder` loads the bundled model on first use and hands the same object to
every user (the router's chat head, the semantic cache, /v1/embeddings), so the weights are in memory once, and a
short text two of them embed for one request (the router's and the cache's text of a short prompt) is embedded
once (`gateway.embedding.recent`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.embedding.base import Embedder, EmbedderError
from gateway.embedding.recent import RecentEmbeddings

log = logging.getLogger("slm_gateway")


def load_bundled() -> Embedder:
    """The bundled WordLlama model (`gateway.embedding.wordllama`)."""
    from gateway.embedding.wordllama import WordLlamaEmbedder

    return WordLlamaEmbedder()


class SharedEmbedder:
    """Loads with `load` at most once; `get()` is that embedder (remembering its recent short texts:
    `RecentEmbeddings`), or None when it could not be loaded (logged once)."""

    __slots__ = ("_load", "_embedder", "_tried")

    def __init__(self, load: Callable[[], Embedder] = load_bundled) -> None:
        self._load = load
        self._embedder: Embedder | None = None
        self._tried = False

    def __repr__(self) -> str:
        return f"SharedEmbedder({self._embedder!r})"

    def get(self) -> Embedder | None:
        if not self._tried:
            self._tried = True
            try:
                self._embedder = RecentEmbeddings(self._load())
            except (EmbedderError, ImportError):
                log.exception("the bundled embedder could not be loaded: semantic caching and local embeddings are off")
        return self._embedder

"""The embedder contract."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EmbedderError(Exception):
    """The embedder could not be loaded or could not embed."""


class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors, so a dot product is the cosine similarity."""

    name: str
    """Identifies the model and its settings; a calibrated threshold belongs to one name."""

    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """An (len(texts), dim) float32 array of unit-length rows (an all-zero row for a text with no tokens)."""
        ...

"""Text embeddings computed in-process: one `Embedder` shared by the semantic cache, /v1/embeddings and the router."""

from gateway.embedding.base import Embedder, EmbedderError
from gateway.embedding.shared import SharedEmbedder
from gateway.embedding.wordllama import WordLlamaEmbedder

__all__ = ["Embedder", "EmbedderError", "SharedEmbedder", "WordLlamaEmbedder"]

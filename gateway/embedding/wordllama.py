"""WordLlama (MIT licence, github.com/dleemiller/WordLlama): static token embeddings, mean-pooled.

The `wordllama` wheel ships its weights (`weights/l2_supercat_256.safetensors`, 32,000 x 256 float16) and its
tokenizer (`tokenizers/l2_supercat_tokenizer_config.json`). We read those two files straight from the installed
package with `safetensors` and `tokenizers` instead of calling `WordLlama.load()`, because in 0.4.0.post1

* `load()` looks for the tokenizer under `wordllama/tokenizer/` (the wheel has `tokenizers/`) and so tries to
  download it from the Hugging Face hub: it fails offline and would be a run-time download online;
* importing `wordllama.inference` calls `logging.basicConfig(level=INFO)`, reconfiguring the host's root logger.

The vectors are the ones `WordLlamaInference.embed(texts, norm=True)` computes (the same mean of token
embeddings over the tokens, without special tokens); tests/test_embedding.py checks that equality. The token
ids come from `PieceTokenizer` (the tokenizer's ids, memoised per word: `gateway.embedding.pieces`); the rows are
summed and normalised by the same numpy operations on the same float32 arrays as `Tokenizer.encode` + `table[ids]
.sum(axis=0)` / `np.linalg.norm`, so every bit is the same (tests/test_embedding_pieces.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from gateway.embedding.base import EmbedderError
from gateway.embedding.pieces import PieceTokenizer

CONFIG = "l2_supercat"
WEIGHTS_FILE = "weights/l2_supercat_256.safetensors"
TOKENIZER_FILE = "tokenizers/l2_supercat_tokenizer_config.json"
TENSOR_KEY = "embedding.weight"
DEFAULT_MAX_TOKENS = 512


def package_dir() -> Path:
    """Where the installed `wordllama` package lives, found without importing it."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError("the wordllama package is not installed (pip install wordllama)")
    return Path(next(iter(spec.submodule_search_locations)))


class WordLlamaEmbedder:
    """The bundled 256-dimension WordLlama model; ~0.1 ms for a one-sentence prompt on one core.

    `max_tokens` bounds the work per text: only the first `max_tokens` tokens are pooled.
    """

    def __init__(self, *, dim: int = 256, max_tokens: int = DEFAULT_MAX_TOKENS, root: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        base = root if root is not None else package_dir()
        try:
            weights = load_file(str(base / WEIGHTS_FILE))[TENSOR_KEY]
            tokenizer = Tokenizer.from_file(str(base / TOKENIZER_FILE))
        except (OSError, KeyError, Exception) as exc:  # safetensors / tokenizers raise their own types
            raise EmbedderError(f"cannot load the bundled WordLlama model from {base}: {exc}") from exc
        if not 0 < dim <= weights.shape[1]:
            raise EmbedderError(f"dim must be in 1..{weights.shape[1]}, got {dim}")
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_tokens)
        self._table = np.ascontiguousarray(weights[:, :dim], dtype=np.float32)
        self._tokenizer = tokenizer
        self._ids = PieceTokenizer(tokenizer, max_tokens).ids
        self.dim = dim
        self.max_tokens = max_tokens
        self.name = f"wordllama-{CONFIG}-{dim}"

    def __repr__(self) -> str:
        return f"WordLlamaEmbedder({self.name!r})"

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length mean-pooled token embeddings, one float32 row per text."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        table = self._table
        ids_of = self._ids
        add = np.add.reduce  # what `ndarray.sum` calls (numpy._core._methods._sum), without that Python frame
        for row, text in enumerate(texts):
            # one text at a time: `encode_batch` fans out to a Rust thread pool whose spinning workers slowed
            # the rest of the process (the vector scan) 5-10x on 2 busy cores
            ids = ids_of(text)
            if not ids:
                continue
            vector = add(table.take(ids, axis=0), axis=0)  # `table[ids].sum(axis=0)`: the same rows, the same sum
            norm = np.sqrt(vector.dot(vector))  # np.linalg.norm's own float32 computation, without its checks
            if norm > 0.0:
                np.divide(vector, norm, out=out[row])
        return out

"""`POST /v1/embeddings`: the request's inputs, batch limits, and the OpenAI answer shape (framework-free).

`input` may be a string, a list of strings, a list of token ids, or a list of lists of token ids (what
LangChain's `OpenAIEmbeddings` sends by default: cl100k token ids). Token ids are turned back into text with
`decode_tokens` before the local embedder sees them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Literal, Protocol

import msgspec
import numpy as np

from gateway.errors import InvalidRequest
from gateway.openai.request import convert_body

MAX_INPUTS = 2048  # OpenAI's limit per request
MAX_INPUT_CHARS = 32_768  # about 8k tokens: OpenAI's per-input limit, in characters of text


class Embedder(Protocol):
    """The bundled in-process embedder: unit-norm float32 rows, one per text."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[Any]
    """A string, a list of strings, a list of token ids, or a list of lists of token ids."""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def parse_embedding_request(raw: Any, *, max_inputs: int = MAX_INPUTS) -> EmbeddingRequest:
    """Validate a decoded body; `InvalidRequest` naming the field."""
    request = convert_body(raw, EmbeddingRequest, ("model", "input"), default_param="input")
    if isinstance(request.input, list) and not _uniform(request.input):
        raise InvalidRequest(
            "'input' must be a string, a list of strings, of token ids, or of lists of token ids.",
            param="input", code="invalid_type",
        )
    count = len(inputs_of(request))
    if count == 0:
        raise InvalidRequest("'input' must not be empty.", param="input", code="invalid_value")
    if count > max_inputs:
        raise InvalidRequest(
            f"'input' holds {count} items; at most {max_inputs} are accepted per request.",
            param="input", code="too_many_inputs",
        )
    if request.dimensions is not None and request.dimensions < 1:
        raise InvalidRequest("'dimensions' must be at least 1.", param="dimensions", code="invalid_value")
    return request


def _uniform(items: list[Any]) -> bool:
    def is_id(t: Any) -> bool:
        return isinstance(t, int) and not isinstance(t, bool) and t >= 0

    if all(isinstance(p, str) for p in items) or all(is_id(p) for p in items):
        return True
    return all(isinstance(p, list) and p and all(is_id(t) for t in p) for p in items)


def inputs_of(request: EmbeddingRequest) -> list[str] | list[list[int]]:
    """The inputs as a list: of strings, or of token-id lists."""
    given = request.input
    if isinstance(given, str):
        return [given]
    if given and isinstance(given[0], int):
        return [given]  # type: ignore[list-item]
    return given  # type: ignore[return-value]


def texts_of(
    request: EmbeddingRequest,
    decode_tokens: Callable[[list[int]], str] | None,
    *,
    max_chars: int = MAX_INPUT_CHARS,
) -> list[str]:
    """The inputs as text (token ids decoded), checked against the per-input limit."""
    texts: list[str] = []
    for i, item in enumerate(inputs_of(request)):
        where = f"input[{i}]" if not isinstance(request.input, str) else "input"
        if isinstance(item, list):
            if decode_tokens is None:
                raise InvalidRequest(
                    "Token-id input needs a tokenizer this gateway does not have; send the text instead.",
                    param=where, code="unsupported_input",
                )
            try:
                item = decode_tokens(item)
            except (ValueError, KeyError, OverflowError):
                raise InvalidRequest("'input' holds token ids the tokenizer does not know.", param=where,
                                     code="invalid_value") from None
        if not item:
            raise InvalidRequest("An input must not be empty.", param=where, code="invalid_value")
        if len(item) > max_chars:
            raise InvalidRequest(
                f"An input is {len(item)} characters; at most {max_chars} are accepted.", param=where,
                code="input_too_long",
            )
        texts.append(item)
    return texts


def embedding_body(
    vectors: np.ndarray, model: str, prompt_tokens: int, encoding_format: str, dimensions: int | None = None
) -> bytes:
    """The OpenAI `list` of `embedding` objects; base64 is the float32 little-endian bytes, as OpenAI sends."""
    if dimensions is not None and dimensions < vectors.shape[1]:  # shortened like OpenAI's: cut, then renormalise
        vectors = vectors[:, :dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1.0, norms)
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    data: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        embedding: Any = base64.b64encode(row.tobytes()).decode() if encoding_format == "base64" else row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return msgspec.json.encode({"object": "list", "data": data, "model": model, "usage": usage})

"""The local model's id from its GGUF header: the bundled model's `general.name` (checked against llama.cpp's
own reading of the header), hand-made headers, and the file-name fallback."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gateway.tiers.bundled_model import ensure_bundled_model
from gateway.tiers.gguf_name import GGUFError, gguf_metadata_string, model_id
from tests.conftest import BUNDLED_MODEL_ID


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path: Path, pairs: list[tuple[str, int, bytes]], version: int = 3) -> Path:
    """A GGUF header with `pairs` of (key, value type, encoded value) and no tensors."""
    body = b"".join(gguf_string(key) + struct.pack("<I", kind) + value for key, kind, value in pairs)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", version, 0, len(pairs)) + body)
    return path


def test_the_bundled_model_is_named_as_llama_cpp_reads_its_header() -> None:
    import llama_cpp

    path = ensure_bundled_model()
    vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        for key in ("general.name", "general.architecture", "general.basename", "tokenizer.ggml.model"):
            assert gguf_metadata_string(path, key) == vocab.metadata[key]
    finally:
        vocab.close()
    assert gguf_metadata_string(path, "general.name") == "Qwen2.5 Coder 0.5B Instruct AWQ"
    assert model_id(path) == BUNDLED_MODEL_ID


def test_values_of_every_kind_before_the_name_are_skipped(tmp_path: Path) -> None:
    pairs = [
        ("general.architecture", 8, gguf_string("llama")),
        ("a.u8", 0, b"\x01"), ("a.i16", 3, b"\x02\x00"), ("a.f32", 6, struct.pack("<f", 1.5)),
        ("a.bool", 7, b"\x01"), ("a.u64", 10, struct.pack("<Q", 7)), ("a.f64", 12, struct.pack("<d", 2.5)),
        ("a.ints", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, 2, 3)),
        ("a.words", 9, struct.pack("<IQ", 8, 2) + gguf_string("x") + gguf_string("yz")),
        ("general.name", 8, gguf_string("  Tiny   Test Model ")),
    ]
    path = write_gguf(tmp_path / "tiny.gguf", pairs)
    assert gguf_metadata_string(path, "general.name") == "  Tiny   Test Model "
    assert model_id(path) == "Tiny-Test-Model"


@pytest.mark.parametrize(
    "content",
    [
        b"not a gguf at all",
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("general.name"),  # the header ends early
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("x") + struct.pack("<I", 99),  # unknown value type
    ],
)
def test_without_a_readable_name_the_file_name_is_the_id(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "my-model-q4_k_m.gguf"
    path.write_bytes(content)
    assert model_id(path) == "my-model-q4_k_m"


def test_a_header_without_general_name_and_an_old_version(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "nameless.gguf", [("general.architecture", 8, gguf_string("qwen2"))])
    assert gguf_metadata_string(path, "general.name") is None
    assert model_id(path) == "nameless"
    with pytest.raises(GGUFError, match="unsupported GGUF version"):
        gguf_metadata_string(write_gguf(tmp_path / "v1.gguf", [], version=1), "general.name")

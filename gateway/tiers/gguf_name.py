"""The name a GGUF model file gives itself (`general.name` in its header), read without loading the model.

GGUF (llama.cpp's format, versions 2 and 3, little-endian): the magic `GGUF`, a uint32 version, uint64 tensor
and key-value counts, then the key-value pairs, each a string key, a uint32 value type and the value. Only the
header is read, and only until `general.name` (one of the first keys) turns up.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO

_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # type id -> size in bytes
_STRING, _ARRAY = 8, 9
MAX_STRING_BYTES = 1 << 20


class GGUFError(ValueError):
    """The file is not a GGUF this reader understands."""


def _u32(f: BinaryIO) -> int:
    return int(struct.unpack("<I", _exactly(f, 4))[0])


def _u64(f: BinaryIO) -> int:
    return int(struct.unpack("<Q", _exactly(f, 8))[0])


def _exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GGUFError("the GGUF header ends early")
    return data


def _string(f: BinaryIO) -> bytes:
    size = _u64(f)
    if size > MAX_STRING_BYTES:
        raise GGUFError("a GGUF header string is implausibly long")
    return _exactly(f, size)


def _skip(f: BinaryIO, kind: int) -> None:
    if kind in _FIXED:
        f.seek(_FIXED[kind], 1)
    elif kind == _STRING:
        f.seek(_u64(f), 1)
    elif kind == _ARRAY:
        item, count = _u32(f), _u64(f)
        if item in _FIXED:
            f.seek(_FIXED[item] * count, 1)
        else:
            for _ in range(count):
                _skip(f, item)
    else:
        raise GGUFError(f"unknown GGUF value type {kind}")


def gguf_metadata_string(path: str | Path, key: str) -> str | None:
    """The string value of `key` in the GGUF header of `path`; None when the header has no such string."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file")
        if _u32(f) not in (2, 3):
            raise GGUFError(f"{path}: unsupported GGUF version")
        _u64(f)  # tensor count
        for _ in range(_u64(f)):
            name, kind = _string(f), _u32(f)
            if name.decode("utf-8", "replace") == key and kind == _STRING:
                return _string(f).decode("utf-8", "replace")
            _skip(f, kind)
    return None


def model_id(path: str | Path) -> str:
    """The id a model file is served under: its `general.name` with spaces as dashes, else the file's stem."""
    try:
        name = gguf_metadata_string(path, "general.name")
    except (OSError, GGUFError, struct.error):
        name = None
    name = re.sub(r"\s+", "-", (name or "").strip())
    return name or Path(path).stem

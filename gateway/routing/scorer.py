"""Loading the routing classifier (the `classifier` package) for the policy router."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class ClassifierUnavailable(RuntimeError):
    """The classifier cannot be loaded; the message is one line naming the file."""


def load_scorer(path: str | Path | None, embedder: Any = None) -> Any:
    """Load the router model at `path` (None: the shipped model); ClassifierUnavailable on failure.

    `embedder` (`() -> Embedder | None`, the gateway's shared one) serves a model with a chat head; without it
    (or when it returns None) the classifier loads the bundled embedder itself."""
    try:
        from classifier import ModelLoadError, load_model
    except ImportError as exc:
        raise ClassifierUnavailable(f"the classifier package is not available ({exc})") from None
    try:
        return load_model(path=path, embedder=embedder() if embedder is not None else None)
    except ModelLoadError as exc:
        raise ClassifierUnavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def describe(model: Any) -> str:
    """A short description of a loaded model for logs and reload reports."""
    metadata = getattr(model, "metadata", None) or {}
    return str(metadata.get("model_path") or type(model).__name__)


def model_facts(scorer: Any) -> tuple[str, float | None] | None:
    """(version, evaluated APGR) of a router model from its metadata (`classifier promote` writes both); None
    without a model. Without a version: the file name; without an APGR: None."""
    if scorer is None:
        return None
    meta = getattr(scorer, "metadata", None) or {}
    version = meta.get("version") or meta.get("model_version")
    if not version:
        path = str(meta.get("model_path") or type(scorer).__name__)
        version = path.rsplit("/", 1)[-1]
    apgr: Any = meta.get("apgr")
    for section in ("evaluation", "eval", "promotion"):
        if apgr is None and isinstance(meta.get(section), dict):
            apgr = meta[section].get("apgr")
    try:
        value = float(apgr) if apgr is not None else None
    except (TypeError, ValueError):
        value = None
    return str(version), value if value is None or math.isfinite(value) else None

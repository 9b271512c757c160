"""Loading the routing classifier (the `classifier` package) for the policy router."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ClassifierUnavailable(RuntimeError):
    """The classifier cannot be loaded; the message is one line naming the file."""


def load_scorer(path: str | Path | None) -> Any:
    """Load the router model at `path` (None: the shipped model); ClassifierUnavailable on failure."""
    try:
        from classifier import ModelLoadError, load_model
    except ImportError as exc:
        raise ClassifierUnavailable(f"the classifier package is not available ({exc})") from None
    try:
        return load_model(path=path)
    except ModelLoadError as exc:
        raise ClassifierUnavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def describe(model: Any) -> str:
    """A short description of a loaded model for logs and reload reports."""
    metadata = getattr(model, "metadata", None) or {}
    return str(metadata.get("model_path") or type(model).__name__)

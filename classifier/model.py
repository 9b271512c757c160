"""The trained router: loading (safe skops allow-list), scoring, chat-message handling."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MODEL_PATH",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "ModelLoadError",
    "RouterModel",
    "load_model",
    "metrics_path_for",
    "messages_text",
    "save_model",
]

DEFAULT_MODEL_PATH: Path = Path(__file__).resolve().parent / "model" / "router.skops"
MODEL_FORMAT = "slm-gateway-router"
MODEL_FORMAT_VERSION = 1

# Types a router file may contain beyond skops' built-in trusted set.  Anything
# else in a file is refused with ModelLoadError; we never load with trusted=True.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "classifier.features.PromptFeaturizer",
        "sklearn.pipeline.Pipeline",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "builtins.tuple",
        "numpy.float32",
        "numpy.float64",
        "numpy.int64",
        "numpy.dtype",
        "numpy.ndarray",
    }
)


class ModelLoadError(RuntimeError):
    """The router model file is missing, corrupt, or contains untrusted types."""


def metrics_path_for(model_path: str | Path) -> Path:
    """Where the training metrics JSON of a model file lives (``metrics.json`` beside it)."""
    return Path(model_path).with_name("metrics.json")


def _content_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (string, list of parts, or None)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    return str(content)


def messages_text(messages: Sequence[Mapping[str, Any]], max_chars: int = 2000) -> str:
    """Text to score for a chat: the last user turn first, then earlier user turns.

    Falls back to all message text when there is no user turn.  The result is
    cut to ``max_chars`` so the most recent user request always dominates.
    """
    user = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if not user:
        user = [_content_text(m.get("content")) for m in messages]
    texts = [t for t in reversed(user) if t]
    return "\n".join(texts)[:max_chars]


class RouterModel:
    """A trained router.  ``score`` returns ``p_strong`` in [0, 1]."""

    def __init__(self, pipeline: Any, metadata: Mapping[str, Any] | None = None) -> None:
        self.pipeline = pipeline
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._featurizer = pipeline.steps[0][1]
        estimator = pipeline.steps[-1][1]
        self._max_chars = int(getattr(self._featurizer, "max_chars", 2000))
        # Fast path for linear models: a sparse dot product instead of sklearn's
        # per-call validation overhead (same result as predict_proba).
        coef = getattr(estimator, "coef_", None)
        if coef is not None and len(pipeline.steps) == 2 and np.shape(coef)[0] == 1:
            self._coef: np.ndarray | None = np.asarray(coef, dtype=np.float64).ravel()
            self._intercept = float(np.ravel(estimator.intercept_)[0])
            self._positive_is_second = list(estimator.classes_)[1] in (1, True)
        else:
            self._coef = None
            self._intercept = 0.0
            self._positive_is_second = True

    def score(self, text: str) -> float:
        """``p_strong`` for one prompt text (fast path)."""
        if self._coef is None:
            return float(self.score_many([text])[0])
        x = self._featurizer.transform([text])
        z = float(x.data @ self._coef[x.indices]) + self._intercept
        p = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        return p if self._positive_is_second else 1.0 - p

    def score_many(self, texts: Sequence[str]) -> np.ndarray:
        """``p_strong`` for many prompt texts, as a float array."""
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=float)
        proba = self.pipeline.predict_proba(texts)
        classes = list(self.pipeline.classes_)
        col = classes.index(True) if True in classes else len(classes) - 1
        return np.asarray(proba[:, col], dtype=float)

    def score_messages(self, messages: Sequence[Mapping[str, Any]]) -> float:
        """``p_strong`` for an OpenAI chat message list (user turns, last one first)."""
        return self.score(messages_text(messages, self._max_chars))


def save_model(pipeline: Any, path: str | Path, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``pipeline`` with skops, wrapped in a small format header."""
    import skops.io as sio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "info": json.dumps(dict(info or {}), sort_keys=True),
        "pipeline": pipeline,
    }
    sio.dump(payload, path)
    return path


def load_model(path: str | Path | None = None) -> RouterModel:
    """Load a router (``None`` -> the shipped model).  Raises :class:`ModelLoadError`."""
    import skops.io as sio

    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not path.is_file():
        raise ModelLoadError(f"router model file not found: {path}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # corrupt zip / schema
        raise ModelLoadError(f"cannot read router model {path}: {type(exc).__name__}: {exc}") from None
    refused = sorted(set(untrusted) - TRUSTED_TYPES)
    if refused:
        raise ModelLoadError(f"router model {path} contains untrusted types: {', '.join(refused)}")
    try:
        payload = sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise ModelLoadError(f"cannot load router model {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelLoadError(f"{path} is not an slm-gateway router model")
    if payload.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelLoadError(
            f"router model {path} has format version {payload.get('format_version')!r}, "
            f"expected {MODEL_FORMAT_VERSION}"
        )
    pipeline = payload.get("pipeline")
    if not hasattr(pipeline, "predict_proba") or not hasattr(pipeline, "steps"):
        raise ModelLoadError(f"router model {path} does not contain a scoring pipeline")
    metadata: dict[str, Any] = {}
    try:
        metadata.update(json.loads(payload.get("info") or "{}"))
    except ValueError:
        raise ModelLoadError(f"router model {path} has a corrupt info header") from None
    mpath = metrics_path_for(path)
    if mpath.is_file():
        try:
            metadata.update(json.loads(mpath.read_text(encoding="utf-8")))
        except ValueError:
            raise ModelLoadError(f"router metrics file {mpath} is not valid JSON") from None
    metadata.setdefault("model_path", str(path))
    return RouterModel(pipeline, metadata)

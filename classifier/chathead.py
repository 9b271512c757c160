"""The open-chat head: how likely the weak model fails a prompt, from its embedding and format-free features.

Prompts that are neither multiple choice nor word-problem shaped (family ``"chat"``, see
:func:`classifier.features.segment`) have no benchmark-shaped training rows.  This head is fitted on the
*question text* of every training row (:func:`classifier.generic.question_text`: options and ``Answer:`` cut),
so it learns which topics and which kinds of question the weak model gets wrong, from what is asked rather than
from the benchmark's layout:

``x = [embedding(question) ; clip((generic_features - mean) / scale, -clip, clip)]``,
``raw = sigmoid(x @ coef + intercept)`` = P(weak model wrong), and the score is ``raw`` moved onto the router's score
scale by quantile matching: a prompt whose ``raw`` is at percentile q of the training rows' ``raw`` scores the
router's own training-score percentile q (``raw_quantiles`` -> ``score_quantiles``, both at 0, 1, ..., 100 %).
So the policy's calibrated threshold means the same share for chat prompts as for training-like prompts.

Why P(weak wrong) and not the family models' benefit, P(strong right) - P(weak right): the dev labels carry a
benefit artefact that must not reach chat (in ``high_school_mathematics`` the strong model is marked right on
2% of the rows, so maths reads as negative benefit; a benefit head ranked a hand-written integral derivation
the easiest of twelve chat prompts).  On leave-subjects-out CV of the dev set the two targets are close
(benefit 0.580 +- 0.011, weak wrong 0.563 +- 0.006 APGR over 6 fold deals); see docs/router.md.

Stored as plain arrays (no pickled estimator).  The embedding comes from the embedder named ``embedder``
(the gateway's bundled WordLlama model) of the question's first and last ``embed_chars / 2`` characters, the
features of its first and last ``feature_chars / 2`` (tokenising is most of the head's cost); the head refuses
vectors of another size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ChatHead", "LEVELS"]

LEVELS = np.linspace(0.0, 1.0, 101)
"""The percentiles of ``raw_quantiles`` and ``score_quantiles``."""


class ChatHead:
    """See the module docstring."""

    KEYS = (
        "embedder", "dim", "embed_chars", "feature_chars", "mean", "scale", "clip", "coef", "intercept", "raw_quantiles", "score_quantiles",
    )

    def __init__(self, params: Mapping[str, Any]) -> None:
        missing = [k for k in self.KEYS if k not in params]
        if missing:
            raise ValueError(f"chat head lacks {', '.join(missing)}")
        self.embedder = str(params["embedder"])
        self.dim = int(params["dim"])
        self.embed_chars = int(params["embed_chars"])
        self.feature_chars = int(params["feature_chars"])
        self.mean = np.asarray(params["mean"], dtype=np.float64).ravel()
        self.scale = np.asarray(params["scale"], dtype=np.float64).ravel()
        self.clip = float(params["clip"])
        self.coef = np.asarray(params["coef"], dtype=np.float64).ravel()
        self.intercept = float(params["intercept"])
        self.raw_quantiles = np.asarray(params["raw_quantiles"], dtype=np.float64).ravel()
        self.score_quantiles = np.asarray(params["score_quantiles"], dtype=np.float64).ravel()
        n = self.dim + self.mean.size
        if min(self.embed_chars, self.feature_chars, self.dim) < 1 or self.scale.shape != self.mean.shape or self.coef.size != n:
            raise ValueError("chat head arrays have inconsistent shapes")
        if self.raw_quantiles.shape != LEVELS.shape or self.score_quantiles.shape != LEVELS.shape:
            raise ValueError("chat head quantiles have inconsistent shapes")
        numbers = (self.mean, self.scale, self.coef, self.raw_quantiles, self.score_quantiles)
        if not all(np.isfinite(v).all() for v in numbers) or not math.isfinite(self.intercept + self.clip) or self.clip <= 0:
            raise ValueError("chat head has non-finite values")
        if np.any(self.scale <= 0) or np.any(np.diff(self.raw_quantiles) < 0) or np.any(np.diff(self.score_quantiles) < 0):
            raise ValueError("chat head scales must be > 0 and its quantiles non-decreasing")
        self._coef_vector = self.coef[: self.dim].copy()
        self._coef_features = self.coef[self.dim :].copy()

    @property
    def n_features(self) -> int:
        """How many format-free features (:data:`classifier.generic.GENERIC_FEATURE_NAMES`) the head reads."""
        return int(self.mean.size)

    def inputs(self, vectors: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The head's input rows from embeddings (rows x dim) and raw generic features (rows x n_features)."""
        vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, self.dim)
        z = np.clip((np.asarray(features, dtype=np.float64).reshape(-1, self.n_features) - self.mean) / self.scale,
                    -self.clip, self.clip)
        return np.hstack([vectors, z])

    def raw_many(self, X: np.ndarray) -> np.ndarray:
        """``raw`` = P(weak model wrong) of input rows (see :meth:`inputs`)."""
        return 1.0 / (1.0 + np.exp(-np.clip(X @ self.coef + self.intercept, -700.0, 700.0)))

    def calibrate(self, raw: Any) -> Any:
        """``raw`` on the router's score scale (quantile matching; arrays or scalars)."""
        return np.interp(np.interp(raw, self.raw_quantiles, LEVELS), LEVELS, self.score_quantiles)

    def score_many(self, vectors: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Calibrated scores of many prompts."""
        return np.asarray(self.calibrate(self.raw_many(self.inputs(vectors, features))), dtype=np.float64)

    def score(self, vector: np.ndarray, features: list[float]) -> float:
        """Calibrated score of one prompt (:meth:`score_many`'s value, up to float rounding)."""
        z = np.asarray(features, dtype=np.float64) - self.mean
        z /= self.scale
        np.minimum(np.maximum(z, -self.clip, out=z), self.clip, out=z)  # np.clip's values, fewer checks
        logit = float(np.asarray(vector, dtype=np.float64) @ self._coef_vector) + float(z @ self._coef_features)
        raw = 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, logit + self.intercept))))
        return float(self.calibrate(raw))

    def to_params(self) -> dict[str, Any]:
        """The stored (skops-safe) representation."""
        return {
            "embedder": self.embedder,
            "dim": self.dim,
            "embed_chars": self.embed_chars,
            "feature_chars": self.feature_chars,
            "mean": self.mean,
            "scale": self.scale,
            "clip": self.clip,
            "coef": self.coef,
            "intercept": self.intercept,
            "raw_quantiles": self.raw_quantiles,
            "score_quantiles": self.score_quantiles,
        }

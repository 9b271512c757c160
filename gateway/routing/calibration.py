"""Threshold calibration: turn `target_local_share` into a classifier threshold.

The threshold is the `share`-quantile of the classifier's scores on its training data, so that about that
share of traffic like the training data scores below it and stays local. The quantiles come from the model's
metadata (`score_quantiles`). Accepted shapes: a mapping quantile -> score ({"0.1": 0.12, ...} or percentile labels
{"p10": 0.12, ...}), a list of
[quantile, score] pairs, or a list of scores at evenly spaced quantiles from 0 to 1.

Fallback when the metadata has none: score `CALIBRATION_PROMPTS`, a small hand-written sample of everyday
prompts (written for this purpose, not taken from any training or evaluation set). It is less representative
than the training distribution, so the figure is reported as coming from that sample.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.routing.calibration_sample import CALIBRATION_PROMPTS


class CalibrationError(ValueError):
    """The quantiles in the model metadata are unusable."""


def parse_quantiles(raw: Any) -> list[tuple[float, float]]:
    """(quantile, score) pairs sorted by quantile, from any accepted metadata shape."""
    try:
        pairs = _pairs(raw)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"score_quantiles is malformed: {exc}") from None
    pairs.sort()
    if len(pairs) < 2 or any(not 0.0 <= q <= 1.0 for q, _ in pairs):
        raise CalibrationError("score_quantiles needs at least two quantiles within [0, 1]")
    return pairs


def _pairs(raw: Any) -> list[tuple[float, float]]:
    pairs: list[tuple[float, float]]
    if isinstance(raw, (str, bytes)):
        raise CalibrationError("score_quantiles must be a mapping, a list of pairs or a list of scores")
    if isinstance(raw, Mapping):
        if "quantiles" in raw and "values" in raw:
            pairs = [(float(q), float(s)) for q, s in zip(raw["quantiles"], raw["values"], strict=True)]
        else:
            pairs = [(_quantile(q), float(s)) for q, s in raw.items()]
    elif isinstance(raw, Sequence) and raw and all(isinstance(x, (list, tuple)) for x in raw):
        pairs = [(float(q), float(s)) for q, s in raw]
    elif isinstance(raw, Sequence) and len(raw) >= 2:
        n = len(raw) - 1
        pairs = [(i / n, float(s)) for i, s in enumerate(raw)]
    else:
        raise CalibrationError("score_quantiles must be a mapping, a list of pairs or a list of scores")
    return pairs


def _quantile(key: Any) -> float:
    """A quantile key: 0.25, "0.25", or a percentile label "p25"."""
    if isinstance(key, str) and key[:1].lower() == "p":
        return float(key[1:]) / 100.0
    return float(key)


def threshold_from_quantiles(pairs: Sequence[tuple[float, float]], share: float) -> float:
    """The score at quantile `share`, linearly interpolated (clamped to the known range)."""
    qs = [q for q, _ in pairs]
    i = bisect.bisect_left(qs, share)
    if i == 0:
        return pairs[0][1]
    if i >= len(pairs):
        return pairs[-1][1]
    (q0, s0), (q1, s1) = pairs[i - 1], pairs[i]
    if q1 == q0:
        return s1
    return s0 + (s1 - s0) * (share - q0) / (q1 - q0)


def sample_quantiles(scores: Sequence[float]) -> list[tuple[float, float]]:
    """Empirical quantiles (0, 1/n-1, ..., 1) of a score sample."""
    ordered = sorted(scores)
    n = len(ordered) - 1
    return [(i / n, s) for i, s in enumerate(ordered)]


def calibrate(model: Any, share: float) -> tuple[float, str]:
    """The threshold for `share` local traffic, and where the distribution came from ("training data"/"sample")."""
    metadata = getattr(model, "metadata", None) or {}
    raw = metadata.get("score_quantiles")
    if raw is not None:
        return round(threshold_from_quantiles(parse_quantiles(raw), share), 4), "training-data quantiles"
    scores = [float(model.score_messages([{"role": "user", "content": p}])) for p in CALIBRATION_PROMPTS]
    return round(threshold_from_quantiles(sample_quantiles(scores), share), 4), "built-in calibration sample"

"""RouteLLM-style routing metrics: PGR curve, APGR and CPT.

Protocol (RouteLLM, Ong et al. 2024):

* thresholds are the router's score quantiles (deciles by default), plus one
  threshold above the maximum so the curve starts at 0 % strong calls;
* for each threshold, rows with ``score >= threshold`` go to the strong model;
* accuracy = mean of ``strong_correct`` on routed-strong rows and of
  ``weak_correct`` on the rest;
* PGR = (accuracy - weak_acc) / (strong_acc - weak_acc);
* APGR = area under the PGR vs fraction-of-strong-calls curve (trapezoid,
  x from 0 to 1);
* CPT(x) = minimum fraction of strong calls at which PGR reaches ``x``.  Between
  two sweep points the curve is linearly interpolated (a router can realise any
  such point by randomly mixing the two thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "RoutingCurve",
    "routing_curve",
    "apgr",
    "cpt",
    "summarize",
    "oracle_scores",
    "random_scores",
    "pgr_defined",
]


@dataclass(frozen=True)
class RoutingCurve:
    """Points of a threshold sweep, sorted by fraction of strong calls."""

    strong_fraction: np.ndarray  # x in [0, 1]
    pgr: np.ndarray  # y, may exceed 1 (the oracle does)
    accuracy: np.ndarray
    weak_acc: float
    strong_acc: float


def _as_arrays(
    scores: ArrayLike, weak_correct: ArrayLike, strong_correct: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).ravel()
    w = np.asarray(weak_correct, dtype=float).ravel()
    t = np.asarray(strong_correct, dtype=float).ravel()
    if not (s.shape == w.shape == t.shape):
        raise ValueError("scores, weak_correct and strong_correct must have the same length")
    if s.size == 0:
        raise ValueError("cannot compute routing metrics on zero rows")
    return s, w, t


def pgr_defined(weak_correct: ArrayLike, strong_correct: ArrayLike) -> bool:
    """Whether PGR is defined on these rows: some rows, and the strong model is more accurate than the weak."""
    w = np.asarray(weak_correct, dtype=float).ravel()
    t = np.asarray(strong_correct, dtype=float).ravel()
    return w.size > 0 and float(t.mean()) - float(w.mean()) > 0


def routing_curve(
    scores: ArrayLike,
    weak_correct: ArrayLike,
    strong_correct: ArrayLike,
    n_quantiles: int = 10,
) -> RoutingCurve:
    """Sweep thresholds at the score quantiles ``0, 1/n, ..., 1`` (plus +inf)."""
    s, w, t = _as_arrays(scores, weak_correct, strong_correct)
    weak_acc, strong_acc = float(w.mean()), float(t.mean())
    gap = strong_acc - weak_acc
    if gap <= 0:
        raise ValueError("PGR is undefined: strong model is not better than weak on these rows")
    thresholds = np.quantile(s, np.linspace(0.0, 1.0, n_quantiles + 1))
    thresholds = np.unique(np.append(thresholds, np.inf))
    xs, accs = [], []
    for thr in thresholds:
        to_strong = s >= thr
        accs.append(float(np.where(to_strong, t, w).mean()))
        xs.append(float(to_strong.mean()))
    x = np.asarray(xs)
    acc = np.asarray(accs)
    order = np.lexsort((acc, x))
    x, acc = x[order], acc[order]
    return RoutingCurve(x, (acc - weak_acc) / gap, acc, weak_acc, strong_acc)


def apgr(curve: RoutingCurve) -> float:
    """Normalised area under the PGR curve (x spans [0, 1], so no rescale)."""
    x, y = curve.strong_fraction, curve.pgr
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def cpt(curve: RoutingCurve, target_pgr: float) -> float:
    """Minimum fraction of strong calls to reach ``target_pgr`` (linear interpolation)."""
    x, y = curve.strong_fraction, curve.pgr
    if y[0] >= target_pgr:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] >= target_pgr:
            if y[i] == y[i - 1]:
                return float(x[i])
            frac = (target_pgr - y[i - 1]) / (y[i] - y[i - 1])
            return float(x[i - 1] + frac * (x[i] - x[i - 1]))
    return float("nan")


def summarize(
    scores: ArrayLike,
    weak_correct: ArrayLike,
    strong_correct: ArrayLike,
    n_quantiles: int = 10,
) -> dict[str, float]:
    """APGR, CPT(50%) and CPT(80%) (fractions in [0, 1]) for one score vector."""
    curve = routing_curve(scores, weak_correct, strong_correct, n_quantiles)
    return {
        "apgr": apgr(curve),
        "cpt50": cpt(curve, 0.5),
        "cpt80": cpt(curve, 0.8),
        "weak_acc": curve.weak_acc,
        "strong_acc": curve.strong_acc,
        "n": int(np.asarray(scores).size),
    }


def oracle_scores(weak_correct: ArrayLike, strong_correct: ArrayLike) -> np.ndarray:
    """Scores of the oracle router: 1 where only strong is right, 0 where only weak is."""
    w = np.asarray(weak_correct, dtype=bool)
    t = np.asarray(strong_correct, dtype=bool)
    return np.where(t & ~w, 1.0, np.where(w & ~t, 0.0, 0.5))


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    """Scores of the random router (uniform, seeded)."""
    return np.random.default_rng(seed).random(n)

"""Candidate vs current router on the most recent traffic labels: metrics with bootstrap CIs, and the verdict.

Held-out rows: the label rows with ``ts >= held_out_from_ts`` of the candidate's training metadata
(``classifier train --hold-out`` stores it), else the most recent ``hold_out`` share of the rows.
Only rows labelled on both sides are scored.  Per model: APGR, CPT(50%) and the local share (rows
scoring below the model's threshold stay local), each with a percentile bootstrap CI over the
held-out rows (seeded, ``bootstrap`` resamples, the same resamples for both models).

"Not worse": the lower end of the paired bootstrap CI of ``APGR(candidate) - APGR(current)`` is
at least ``-tolerance``.  Identical models pass (the difference is 0 in every resample); a
candidate that is worse by more than the tolerance on the typical resample fails.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier import metrics as M
from classifier.data import DEFAULT_HOLD_OUT, RoutingDataset, hold_out_recent
from classifier.model import RouterModel

__all__ = [
    "PromoteConfig", "Comparison", "held_out_rows", "threshold_for", "compare", "format_report", "model_version",
    "promotion_metadata",
]

_KEYS = ("apgr", "cpt50", "local_share")


@dataclass(frozen=True)
class PromoteConfig:
    """How `classifier promote` judges a candidate (defaults are the documented ones)."""

    hold_out: float = DEFAULT_HOLD_OUT  # used only when the candidate's metadata has no hold-out cut
    tolerance: float = 0.02  # APGR the candidate may lose (CI lower bound of the paired difference)
    confidence: float = 0.90  # two-sided CI level; the verdict uses its lower end (one-sided 95 %)
    bootstrap: int = 1000  # resamples (bounded: at most 10,000)
    seed: int = 0
    min_rows: int = 30  # fewer two-sided held-out rows: no verdict
    local_share: float = 0.6  # the policy's target_local_share (each model's threshold from its quantiles)
    threshold: float | None = None  # a fixed policy threshold for both models instead


@dataclass(frozen=True)
class Comparison:
    """The outcome: ``verdict`` is "install", "refuse" (worse) or "undecided" (too little evidence)."""

    verdict: str
    reason: str
    report: dict[str, Any]


def held_out_rows(labels: RoutingDataset, candidate: RouterModel, fraction: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Positions of the held-out label rows, and how they were chosen."""
    trained_on = candidate.metadata.get("trained_on") or {}
    cutoff = trained_on.get("held_out_from_ts") if isinstance(trained_on, dict) else None
    if cutoff is not None:
        idx = np.flatnonzero(labels.ts >= float(cutoff))
        return idx, {"rule": "candidate's hold-out cut", "from_ts": float(cutoff)}
    keep, cut = hold_out_recent(labels, fraction)
    idx = np.setdiff1d(np.arange(len(labels)), keep)
    return idx, {
        "rule": f"most recent {fraction:.0%} of the labels (the candidate records no hold-out cut: it may have seen them)",
        "from_ts": cut,
    }


def threshold_for(model: RouterModel, config: PromoteConfig) -> float:
    """The threshold the gateway would use for ``model``: the fixed one, or its ``local_share`` quantile."""
    if config.threshold is not None:
        return float(config.threshold)
    quantiles = model.metadata.get("score_quantiles")
    if not isinstance(quantiles, dict) or not quantiles:
        raise ValueError("model has no score_quantiles in its metadata; pass --threshold")
    pairs = sorted((float(k[1:]) / 100.0, float(v)) for k, v in quantiles.items())
    qs, vs = zip(*pairs)
    return float(np.interp(config.local_share, qs, vs))


def _metrics(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, threshold: float) -> dict[str, float]:
    summary = M.summarize(scores, weak, strong)
    return {"apgr": summary["apgr"], "cpt50": summary["cpt50"], "local_share": float(np.mean(scores < threshold))}


def _number(value: float) -> float | None:
    return None if value != value else round(float(value), 6)  # NaN (CPT not reached) -> None


def _interval(values: list[float], level: float) -> list[float | None]:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if not arr.size:
        return [None, None]
    lo, hi = np.quantile(arr, [(1 - level) / 2, (1 + level) / 2])
    return [round(float(lo), 6), round(float(hi), 6)]


def compare(labels: RoutingDataset, current: RouterModel, candidate: RouterModel, config: PromoteConfig) -> Comparison:
    """Score both models on the held-out labels and decide (see the module docstring)."""
    if not 1 <= config.bootstrap <= 10_000:
        raise ValueError("bootstrap resamples must be within [1, 10000]")
    idx, chosen = held_out_rows(labels, candidate, config.hold_out)
    idx = idx[labels.both_known[idx]]
    rows = labels.subset(idx)
    w, s = rows.weak_correct, rows.strong_correct
    report: dict[str, Any] = {"held_out": dict(chosen, rows=len(rows)), "tolerance": config.tolerance,
                              "confidence": config.confidence, "bootstrap": config.bootstrap, "seed": config.seed}
    if len(rows) < config.min_rows:
        return Comparison("undecided", f"only {len(rows)} held-out rows labelled on both sides "
                          f"(need {config.min_rows})", report)
    report["weak_acc"], report["strong_acc"] = float(w.mean()), float(s.mean())
    if not M.pgr_defined(w, s):
        return Comparison("undecided", "the upstream model is not better than the local one on the held-out rows "
                          "(PGR undefined): nothing to route for", report)
    models = {"current": current, "candidate": candidate}
    thresholds = {name: threshold_for(m, config) for name, m in models.items()}
    scores = {name: np.asarray(m.score_many(rows.prompts), dtype=float) for name, m in models.items()}
    point = {name: _metrics(scores[name], w, s, thresholds[name]) for name in models}
    rng = np.random.default_rng(config.seed)
    boot: dict[str, dict[str, list[float]]] = {name: {k: [] for k in _KEYS} for name in models}
    diffs: list[float] = []
    skipped = 0
    for _ in range(config.bootstrap):
        b = rng.integers(0, len(rows), len(rows))
        if not M.pgr_defined(w[b], s[b]):
            skipped += 1
            continue
        got = {name: _metrics(scores[name][b], w[b], s[b], thresholds[name]) for name in models}
        for name in models:
            for k in _KEYS:
                boot[name][k].append(got[name][k])
        diffs.append(got["candidate"]["apgr"] - got["current"]["apgr"])
    for name in models:
        report[name] = {"threshold": round(thresholds[name], 6)}
        for k in _KEYS:
            report[name][k] = _number(point[name][k])
            report[name][k + "_ci"] = _interval(boot[name][k], config.confidence)
    delta_ci = _interval(diffs, config.confidence)
    report["apgr_difference"] = round(point["candidate"]["apgr"] - point["current"]["apgr"], 6)
    report["apgr_difference_ci"] = delta_ci
    report["bootstrap_skipped"] = skipped
    if delta_ci[0] is None:
        return Comparison("undecided", "no bootstrap resample had PGR defined", report)
    if delta_ci[0] >= -config.tolerance:
        return Comparison("install", f"not worse: APGR difference CI lower bound {delta_ci[0]:+.3f} >= "
                          f"-{config.tolerance:.3f}", report)
    return Comparison("refuse", f"worse: APGR difference CI lower bound {delta_ci[0]:+.3f} < "
                      f"-{config.tolerance:.3f}", report)


def format_report(report: dict[str, Any]) -> str:
    """Text table of a :func:`compare` report."""
    held = report["held_out"]
    lines = [f"held-out labels: {held['rows']} rows labelled on both sides ({held['rule']}"
             + (f", ts >= {held['from_ts']:.0f})" if held.get("from_ts") is not None else ")")]
    if "current" not in report:
        return "\n".join(lines)
    lines.append(f"local acc {report['weak_acc']:.3f}, upstream acc {report['strong_acc']:.3f}; "
                 f"{int(report['confidence'] * 100)}% bootstrap CIs, {report['bootstrap']} resamples, seed {report['seed']}")
    lines.append(f"{'model':<10} {'threshold':>9} {'APGR':>22} {'CPT(50%)':>24} {'local share':>24}")

    def cell(value: float, ci: list[float | None], pct: bool) -> str:
        scale, unit, prec = (100.0, "%", 1) if pct else (1.0, "", 3)
        lo, hi = ("n/a" if v is None else f"{v * scale:.{prec}f}" for v in ci)
        shown = "n/a" if value is None or value != value else f"{value * scale:.{prec}f}{unit}"
        return f"{shown} [{lo}, {hi}]"

    for name in ("current", "candidate"):
        r = report[name]
        lines.append(f"{name:<10} {r['threshold']:>9.4f} {cell(r['apgr'], r['apgr_ci'], False):>22} "
                     f"{cell(r['cpt50'], r['cpt50_ci'], True):>24} {cell(r['local_share'], r['local_share_ci'], True):>24}")
    lo, hi = report["apgr_difference_ci"]
    lines.append(f"APGR candidate - current: {report['apgr_difference']:+.3f} "
                 f"[{'n/a' if lo is None else f'{lo:+.3f}'}, {'n/a' if hi is None else f'{hi:+.3f}'}]")
    return "\n".join(lines)


def model_version(path: str | Path) -> str:
    """A router file's version: ``router-`` and the first 12 hex digits of its SHA-256 (content-addressed, so the
    same file has the same version on every replica)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return f"router-{digest[:12]}"


def promotion_metadata(
    comparison: Comparison, candidate: RouterModel, candidate_path: str | Path, labels_path: str | Path,
    labels_rows: int, current: RouterModel, now: float | None = None,
) -> dict[str, Any]:
    """What an installed model's metrics.json gains on promotion: ``version`` and ``apgr`` (the candidate's APGR on
    the held-out labels; the gateway shows both as ``slm_gateway_router_model_apgr{version}``), and a
    ``promotion`` section: when, on which labels, the candidate's held-out figures with their CIs, the model it
    replaced, and the data sets it was trained on (names and row counts)."""
    report = comparison.report
    cand = report["candidate"]
    trained_on = candidate.metadata.get("trained_on") or {}
    previous = current.metadata.get("version")
    return {
        "version": model_version(candidate_path),
        "apgr": cand["apgr"],
        "promotion": {
            "promoted_at": round(time.time() if now is None else now, 3),
            "reason": comparison.reason,
            "labels": {"path_name": Path(labels_path).name, "rows": labels_rows,
                       "held_out_rows": report["held_out"]["rows"]},
            "apgr": cand["apgr"], "apgr_ci": cand["apgr_ci"],
            "cpt50": cand["cpt50"], "cpt50_ci": cand["cpt50_ci"],
            "local_share": cand["local_share"], "threshold": cand["threshold"],
            "apgr_difference": report["apgr_difference"], "apgr_difference_ci": report["apgr_difference_ci"],
            "previous": {"version": str(previous) if previous else None, "apgr": report["current"]["apgr"]},
            "data": [dict(f) for f in trained_on.get("files", [])] if isinstance(trained_on, dict) else [],
        },
    }

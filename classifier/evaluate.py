"""Evaluation of a router per benchmark, against random and oracle routers; k-fold CV.

Only rows labelled on both sides count.  Where the strong model is not better than the weak one on a
benchmark's rows, PGR (and so APGR/CPT) is undefined: that benchmark's metrics are ``None`` (shown
as ``n/a``), with ``pgr_defined: false``, instead of an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from classifier import metrics as M
from classifier.data import RoutingDataset, make_labels
from classifier.fit import RouterConfig, fit_router

__all__ = ["evaluate_scores", "cross_validate", "format_table", "RANDOM_SEEDS"]

RANDOM_SEEDS = 20  # the random router is averaged over this many seeds
_KEYS = ("apgr", "cpt50", "cpt80")


def _random_summary(weak: np.ndarray, strong: np.ndarray, seed: int = 0) -> dict[str, float]:
    runs = [M.summarize(M.random_scores(len(weak), seed + i), weak, strong) for i in range(RANDOM_SEEDS)]
    return {k: float(np.mean([r[k] for r in runs])) for k in _KEYS}


def evaluate_scores(data: RoutingDataset, scores: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per-benchmark APGR/CPT of ``scores`` next to the random and oracle routers."""
    scores = np.asarray(scores, dtype=float)
    both = data.both_known
    out: dict[str, dict[str, Any]] = {}
    for bench in sorted(set(data.benchmark[both].tolist())):
        k = (data.benchmark == bench) & both
        w, s = data.weak_correct[k], data.strong_correct[k]
        if not M.pgr_defined(w, s):
            out[bench] = {
                "n": int(k.sum()),
                "weak_acc": float(w.mean()),
                "strong_acc": float(s.mean()),
                "pgr_defined": False,
                **{who: dict.fromkeys(_KEYS) for who in ("router", "random", "oracle")},
            }
            continue
        router = M.summarize(scores[k], w, s)
        out[bench] = {
            "n": int(k.sum()),
            "weak_acc": router["weak_acc"],
            "strong_acc": router["strong_acc"],
            "router": {key: router[key] for key in _KEYS},
            "random": _random_summary(w, s),
            "oracle": {key: M.summarize(M.oracle_scores(w, s), w, s)[key] for key in _KEYS},
        }
    return out


def _mean_std(values: list[float | None]) -> dict[str, float | None]:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    if np.isnan(arr).all():
        return {"mean": None, "std": None}
    return {"mean": float(np.nanmean(arr)), "std": float(np.nanstd(arr))}


def cross_validate(
    data: RoutingDataset, config: RouterConfig, folds: int = 5, seed: int | None = None
) -> dict[str, Any]:
    """K-fold CV: per-fold metrics per benchmark (mean +- std) and pooled out-of-fold.

    Folds are grouped by exact prompt text (duplicates never straddle train and
    test) and stratified by benchmark x label.  A benchmark missing from a fold's
    test rows counts as undefined in that fold.
    """
    seed = config.seed if seed is None else seed
    y = make_labels(data, config.label)
    strata = np.asarray([f"{b}|{int(v)}" for b, v in zip(data.benchmark, y)])
    groups = np.unique(np.asarray(data.prompts, dtype=object), return_inverse=True)[1]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = np.zeros(len(data), dtype=float)
    per_fold: list[dict[str, dict[str, Any]]] = []
    for train_idx, test_idx in splitter.split(np.zeros(len(data)), strata, groups):
        router = fit_router(data.subset(train_idx), config)
        scores = router.score_many([data.prompts[i] for i in test_idx])
        oof[test_idx] = scores
        per_fold.append(evaluate_scores(data.subset(test_idx), scores))
    summary: dict[str, Any] = {}
    benches = sorted({bench for f in per_fold for bench in f})
    for bench in benches:
        got = [f[bench] for f in per_fold if bench in f]
        summary[bench] = {
            who: {key: _mean_std([g[who][key] for g in got]) for key in _KEYS}
            for who in ("router", "random", "oracle")
        }
        summary[bench]["n"] = int(sum(g["n"] for g in got))
    return {
        "folds": folds,
        "seed": seed,
        "grouping": "exact prompt text",
        "per_fold_mean_std": summary,
        "pooled_oof": evaluate_scores(data, oof),
    }


def format_table(result: dict[str, dict[str, Any]]) -> str:
    """Text table of an :func:`evaluate_scores` or CV ``per_fold_mean_std`` result."""
    lines = [f"{'benchmark':<10} {'router':<8} {'APGR':>14} {'CPT(50%)':>16} {'CPT(80%)':>16}"]
    for bench, res in result.items():
        for who in ("router", "random", "oracle"):
            cells = []
            for key in _KEYS:
                v = res[who][key]
                scale = 1.0 if key == "apgr" else 100.0
                unit = "" if key == "apgr" else "%"
                prec = 3 if key == "apgr" else 1
                if v is None or (isinstance(v, dict) and v["mean"] is None):
                    cells.append("n/a")
                elif isinstance(v, dict) and v["std"] is None:
                    cells.append(f"{v['mean'] * scale:.{prec}f}{unit}")
                elif isinstance(v, dict):
                    cells.append(f"{v['mean'] * scale:.{prec}f}{unit} ± {v['std'] * scale:.{prec}f}{unit}")
                else:
                    cells.append(f"{v * scale:.{prec}f}{unit}")
            lines.append(f"{bench:<10} {who:<8} {cells[0]:>14} {cells[1]:>16} {cells[2]:>16}")
    return "\n".join(lines)

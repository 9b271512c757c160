"""The training job: read the data files, weight and hold out traffic labels, fit, write model + metrics.json."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifier.data import hold_out_recent, load_dataset, weight_traffic
from classifier.data import concat as concat_datasets
from classifier.evaluate import cross_validate, evaluate_scores
from classifier.fit import RouterConfig, fit_router
from classifier.model import MODEL_FORMAT_VERSION, metrics_path_for, save_model

__all__ = ["RouterConfig", "score_quantiles", "train"]

def score_quantiles(scores: np.ndarray) -> dict[str, float]:
    """Score percentiles 0, 5, ..., 100 on the training prompts.

    ``p_strong`` is a ranking score (for the default ``"benefit"`` label
    ``(1 + P(strong right) - P(weak right)) / 2``, mostly a little above 0.5),
    so the gateway should pick its threshold from these (e.g. the 70th
    percentile sends ~30 % of dev-like traffic upstream), not use a fixed 0.5.
    """
    qs = np.quantile(np.asarray(scores, dtype=float), np.linspace(0, 1, 21))
    return {f"p{5 * i}": round(float(q), 6) for i, q in enumerate(qs)}


def train(
    data_path: str | Path | Sequence[str | Path],
    out: str | Path,
    config: RouterConfig | None = None,
    cv_folds: int = 0,
    traffic_row_weight: float | None = None,
    hold_out: float = 0.0,
) -> dict[str, Any]:
    """Train on one or several JSONL files, write ``out`` (skops) and ``metrics.json`` beside it.

    Traffic rows (no ``benchmark``) are weighted by ``traffic_row_weight`` (None: the default of
    :func:`classifier.data.weight_traffic`, computed on the training rows).  ``hold_out`` > 0
    leaves out the most recent share of timestamped rows (see :func:`classifier.data.hold_out_recent`); the cut
    is stored as ``trained_on.held_out_from_ts`` so ``classifier promote`` evaluates on rows the
    model never saw.  With ``cv_folds`` > 1 the cross-validated metrics are computed first and
    stored in the metrics file.  Returns the metrics dict.
    """
    config = config or RouterConfig()
    paths = [Path(data_path)] if isinstance(data_path, (str, Path)) else [Path(p) for p in data_path]
    if not paths:
        raise ValueError("no training data files")
    parts = [load_dataset(p) for p in paths]
    data = concat_datasets(parts)
    keep, cutoff = hold_out_recent(data, hold_out)
    data = data.subset(keep) if cutoff is not None else data
    data, w = weight_traffic(data, traffic_row_weight)
    t0 = time.time()
    router = fit_router(data, config)
    fit_seconds = time.time() - t0
    import sklearn

    trained_on: dict[str, Any] = {
        "path_name": " + ".join(p.name for p in paths),
        "rows": len(data),
        "files": [{"path_name": p.name, "rows": len(d), "traffic_rows": int(d.is_traffic.sum())}
                  for p, d in zip(paths, parts)],
    }
    if data.is_traffic.any():
        trained_on["traffic_row_weight"] = round(w, 6)
        trained_on["one_sided_rows"] = int((~data.both_known).sum())
    if cutoff is not None:
        trained_on["held_out_from_ts"] = cutoff
        trained_on["held_out_rows"] = sum(len(d) for d in parts) - len(keep)
    train_scores = router.score_many(data.prompts)
    info = {
        "format_version": MODEL_FORMAT_VERSION,
        "config": config.to_dict(),
        "trained_on": trained_on,
        "sklearn_version": sklearn.__version__,
        "python_version": platform.python_version(),
        "score_quantiles": score_quantiles(train_scores),
    }
    metrics: dict[str, Any] = dict(info)
    metrics["fit_seconds"] = round(fit_seconds, 2)
    metrics["segments"] = sorted(router.models)
    metrics["train_fit_in_sample"] = evaluate_scores(data, train_scores)
    if cv_folds and cv_folds > 1:
        metrics["cv"] = cross_validate(data, config, folds=cv_folds)
    out = Path(out)
    save_model(router, out, info)
    metrics_path_for(out).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return metrics

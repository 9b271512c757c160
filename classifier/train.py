"""Training: dataset loading, label design, featurizer + per-family models, model fitting."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from classifier.features import SEGMENTS, PromptFeaturizer, segment
from classifier.model import MODEL_FORMAT_VERSION, RouterModel, metrics_path_for, save_model

__all__ = [
    "RouterConfig",
    "RoutingDataset",
    "load_dataset",
    "make_labels",
    "make_targets",
    "build_featurizer",
    "fit_router",
    "score_quantiles",
    "train",
]

LABELS = ("benefit", "gain", "weak_wrong")


@dataclass(frozen=True)
class RouterConfig:
    """Hyper-parameters of the router (defaults are the shipped configuration)."""

    # "benefit": two models per family, P(strong right) and P(weak right); the score is
    #   (1 + P(strong right) - P(weak right)) / 2, a monotone map of the expected
    #   accuracy gain of routing upstream (which is what APGR/CPT reward).
    # "gain": one model of P(weak wrong AND strong right); "weak_wrong": P(weak wrong).
    label: str = "benefit"
    C_mc: float = 1.0  # inverse L2 strength, multiple-choice prompts
    C_text: float = 0.3  # inverse L2 strength, other (free-text) prompts
    min_segment_rows: int = 100
    max_chars: int = 1200
    word_features: int = 2**18
    char_features: int = 0
    hand_weight: float = 3.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable view."""
        return asdict(self)


@dataclass(frozen=True)
class RoutingDataset:
    """Rows of RouteLLM-style eval data (prompt + per-model correctness)."""

    prompts: list[str]
    benchmark: np.ndarray
    weak_correct: np.ndarray
    strong_correct: np.ndarray
    subject: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: np.ndarray) -> "RoutingDataset":
        """Rows at integer positions ``idx``."""
        return RoutingDataset(
            [self.prompts[i] for i in idx],
            self.benchmark[idx],
            self.weak_correct[idx],
            self.strong_correct[idx],
            self.subject[idx] if len(self.subject) else self.subject,
        )


def load_dataset(path: str | Path) -> RoutingDataset:
    """Read a JSONL file with ``prompt, benchmark, weak_correct, strong_correct`` rows."""
    prompts: list[str] = []
    bench: list[str] = []
    weak: list[bool] = []
    strong: list[bool] = []
    subject: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompts.append(str(row["prompt"]))
                weak.append(bool(row["weak_correct"]))
                strong.append(bool(row["strong_correct"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: bad row ({exc})") from None
            bench.append(str(row.get("benchmark", "all")))
            subject.append(str(row.get("subject", "")))
    if not prompts:
        raise ValueError(f"{path}: no rows")
    return RoutingDataset(
        prompts,
        np.asarray(bench, dtype=object),
        np.asarray(weak, dtype=bool),
        np.asarray(strong, dtype=bool),
        np.asarray(subject, dtype=object),
    )


def make_labels(data: RoutingDataset, label: str) -> np.ndarray:
    """Binary "strong model needed" target (also the CV stratification label).

    For ``"benefit"`` this is the ``"gain"`` label; the benefit router itself is
    fitted on the two targets of :func:`make_targets`.
    """
    if label in ("gain", "benefit"):
        return ~data.weak_correct & data.strong_correct
    if label == "weak_wrong":
        return ~data.weak_correct
    raise ValueError(f"unknown label {label!r} (choose from {', '.join(LABELS)})")


def make_targets(data: RoutingDataset, label: str) -> dict[str, np.ndarray]:
    """Model-name suffix -> binary target of each model fitted per prompt family.

    ``""``: the single model of ``p_strong``; ``"+"`` / ``"-"``: the pair whose
    probability difference is the routing benefit (see :class:`RouterModel`).
    """
    if label == "benefit":
        return {"+": np.asarray(data.strong_correct, dtype=bool), "-": np.asarray(data.weak_correct, dtype=bool)}
    return {"": make_labels(data, label)}


def build_featurizer(config: RouterConfig) -> PromptFeaturizer:
    """The (stateless) featurizer for ``config``."""
    return PromptFeaturizer(
        max_chars=config.max_chars,
        word_features=config.word_features,
        char_features=config.char_features,
        hand_weight=config.hand_weight,
    )


def _fit_lr(X: Any, y: np.ndarray, C: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(X, y)


def fit_router(data: RoutingDataset, config: RouterConfig) -> RouterModel:
    """Fit the model(s) of each prompt family on all rows of ``data``.

    A family with fewer than ``min_segment_rows`` rows (or a single class in one
    of its targets) is served by models fitted on all rows, stored as ``"all"``.
    """
    targets = make_targets(data, config.label)
    if config.label == "benefit" and any(y.all() or not y.any() for y in targets.values()):
        # e.g. the strong model is right on every row: P(strong right) is constant, so
        # the benefit ranks like the single "gain" model; fit that instead.
        targets = make_targets(data, "gain")
    for y in targets.values():
        if y.all() or not y.any():
            raise ValueError("training data has a single class; need both easy and hard prompts")
    featurizer = build_featurizer(config)
    X = featurizer.transform(data.prompts)
    segs = np.asarray([segment(p) for p in data.prompts], dtype=object)
    Cs = {"mc": config.C_mc, "text": config.C_text}
    models: dict[str, LogisticRegression] = {}
    complete = 0
    for name in SEGMENTS:
        rows = np.flatnonzero(segs == name)
        if len(rows) >= config.min_segment_rows and all(0 < y[rows].sum() < len(rows) for y in targets.values()):
            complete += 1
            for suffix, y in targets.items():
                models[name + suffix] = _fit_lr(X[rows], y[rows], Cs[name], config.seed)
    if complete < len(SEGMENTS):
        for suffix, y in targets.items():
            models["all" + suffix] = _fit_lr(X, y, min(Cs.values()), config.seed)
    return RouterModel(featurizer, models)


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
    data_path: str | Path,
    out: str | Path,
    config: RouterConfig | None = None,
    cv_folds: int = 0,
) -> dict[str, Any]:
    """Train on ``data_path``, write ``out`` (skops) and ``metrics.json`` beside it.

    With ``cv_folds`` > 1 the cross-validated metrics are computed first and
    stored in the metrics file.  Returns the metrics dict.
    """
    from classifier.evaluate import cross_validate, evaluate_scores

    config = config or RouterConfig()
    data = load_dataset(data_path)
    t0 = time.time()
    router = fit_router(data, config)
    fit_seconds = time.time() - t0
    import sklearn

    info = {
        "format_version": MODEL_FORMAT_VERSION,
        "config": config.to_dict(),
        "trained_on": {"path_name": Path(data_path).name, "rows": len(data)},
        "sklearn_version": sklearn.__version__,
        "python_version": platform.python_version(),
    }
    metrics: dict[str, Any] = dict(info)
    metrics["fit_seconds"] = round(fit_seconds, 2)
    metrics["segments"] = sorted(router.models)
    train_scores = router.score_many(data.prompts)
    metrics["train_fit_in_sample"] = evaluate_scores(data, train_scores)
    metrics["score_quantiles"] = score_quantiles(train_scores)
    if cv_folds and cv_folds > 1:
        metrics["cv"] = cross_validate(data, config, folds=cv_folds)
    out = Path(out)
    save_model(router, out, info)
    metrics_path_for(out).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return metrics

"""Training: dataset loading, label design, featurizer + per-family models, model fitting."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB

from classifier.features import HAND_FEATURE_NAMES, SEGMENTS, PromptFeaturizer, segment, truncate, unigram_vectorizer
from classifier.model import MODEL_FORMAT_VERSION, RouterModel, SubjectPrior, TreeHead, metrics_path_for, save_model

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
    # Scale of the word-problem (GSM8K-style) difficulty features; 0 leaves them out.
    word_problem_weight: float = 3.0
    # Families whose models use the word-problem features (they help free-text math
    # prompts and slightly hurt multiple-choice ones in CV); other families' models
    # are fitted with those columns zeroed, so their weights are exactly 0.
    word_problem_families: tuple[str, ...] = ("text",)
    # 1: the 20 scaled cue features; 2: 50 log-counts of cues (word_problem_features_v2).
    word_problem_version: int = 2
    # Families whose models see only the word-problem columns, standardised on the
    # training rows, with inverse L2 strength C_dense (free-text math: a few dense
    # counts generalise better on ~900 rows than hashed n-grams do).
    dense_families: tuple[str, ...] = ("text",)
    C_dense: float = 0.01
    # Subject-prior head (families whose training rows carry >= 2 subjects): share of
    # the score given to sum_s P(subject s | text) * (strong - weak accuracy of s),
    # P from multinomial naive Bayes on hashed word counts.  0 disables the head.
    subject_prior_weight: float = 0.3
    subject_features: int = 2**13
    subject_alpha: float = 0.1
    subject_min_rows: int = 20
    # Tree head (families in tree_families): boosted regression trees on the hand
    # features fitted to strong_correct - weak_correct, given this share of the
    # family's score (after the subject prior).  0 disables the head.
    tree_weight: float = 0.5
    tree_families: tuple[str, ...] = ("mc",)
    tree_iterations: int = 150
    tree_leaves: int = 7
    tree_learning_rate: float = 0.04
    tree_min_leaf_rows: int = 20
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
        word_problem_weight=config.word_problem_weight,
        word_problem_version=config.word_problem_version,
    )


def _fit_lr(X: Any, y: np.ndarray, C: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(X, y)


def _fit_dense_lr(X: Any, y: np.ndarray, n_dense: int, C: float, seed: int) -> LogisticRegression:
    """Logistic model on the last ``n_dense`` columns of ``X`` only, fitted on standardised
    columns and mapped back, so it scores raw feature rows like any other model (zero
    weight on every other column)."""
    dense = np.asarray(X[:, X.shape[1] - n_dense :].todense(), dtype=np.float64)
    mean = dense.mean(axis=0)
    std = dense.std(axis=0)
    std[std == 0] = 1.0
    est = _fit_lr((dense - mean) / std, y, C, seed)
    coef = np.zeros((1, X.shape[1]), dtype=np.float64)
    coef[0, X.shape[1] - n_dense :] = est.coef_[0] / std
    est.intercept_ = est.intercept_ - est.coef_[0] @ (mean / std)
    est.coef_ = coef
    est.n_features_in_ = X.shape[1]
    return est


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
    n_wp = featurizer.n_hand_ - len(HAND_FEATURE_NAMES)
    for name in SEGMENTS:
        rows = np.flatnonzero(segs == name)
        if len(rows) >= config.min_segment_rows and all(0 < y[rows].sum() < len(rows) for y in targets.values()):
            complete += 1
            Xf = X[rows]
            if n_wp and name not in config.word_problem_families:
                keep = np.ones(X.shape[1], dtype=np.float32)
                keep[X.shape[1] - n_wp :] = 0.0
                Xf = Xf @ sp.diags(keep, format="csr")
            for suffix, y in targets.items():
                if n_wp and name in config.dense_families:
                    models[name + suffix] = _fit_dense_lr(Xf, y[rows], n_wp, config.C_dense, config.seed)
                else:
                    models[name + suffix] = _fit_lr(Xf, y[rows], Cs[name], config.seed)
    if complete < len(SEGMENTS):
        for suffix, y in targets.items():
            models["all" + suffix] = _fit_lr(X, y, min(Cs.values()), config.seed)
    router = RouterModel(featurizer, models)
    priors: dict[str, SubjectPrior] = {}
    if config.subject_prior_weight > 0 and len(data.subject) == len(data):
        for name in SEGMENTS:
            if name in router._heads:
                prior = _fit_subject_prior(data, np.flatnonzero(segs == name), router, config)
                if prior is not None:
                    priors[name] = prior
    if priors:
        router = RouterModel(featurizer, models, priors=priors)
    trees: dict[str, TreeHead] = {}
    if config.tree_weight > 0:
        for name in config.tree_families:
            rows = np.flatnonzero(segs == name)
            if name in router._heads and len(rows) >= config.min_segment_rows:
                trees[name] = _fit_tree_head(data, rows, X, router, featurizer, config)
    return RouterModel(featurizer, models, priors=priors, trees=trees) if trees else router


def _fit_tree_head(
    data: RoutingDataset,
    rows: np.ndarray,
    X: sp.csr_matrix,
    router: RouterModel,
    featurizer: PromptFeaturizer,
    config: RouterConfig,
) -> TreeHead:
    """Tree head for one family's rows: boosted trees on the hand features, target strong - weak."""
    start = featurizer.hand_start_
    n_inputs = len(HAND_FEATURE_NAMES)
    H = X[rows][:, start : start + n_inputs].toarray().astype(np.float64)
    y = data.strong_correct[rows].astype(float) - data.weak_correct[rows].astype(float)
    est = HistGradientBoostingRegressor(
        learning_rate=config.tree_learning_rate,
        max_iter=config.tree_iterations,
        max_leaf_nodes=config.tree_leaves,
        min_samples_leaf=config.tree_min_leaf_rows,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=config.seed,
    ).fit(H, y)
    head = TreeHead.from_estimator(est, n_inputs)
    # Match the head's training mean/spread to the family's score so far, so that
    # ``weight`` is its share of the blend in score units.
    score = router.score_many([data.prompts[i] for i in rows])
    out = head.predict_many(H)
    spread = float(out.std())
    slope = float(score.std()) / spread if spread > 0 else 0.0
    params = head.to_params()
    params.update(weight=float(config.tree_weight), slope=slope, intercept=float(score.mean()) - slope * float(out.mean()))
    return TreeHead(params)


def _fit_subject_prior(
    data: RoutingDataset, rows: np.ndarray, router: RouterModel, config: RouterConfig
) -> SubjectPrior | None:
    """Subject-prior head for one family's rows, or None (fewer than 2 usable subjects).

    Subject is only a training label: at scoring time the head infers it from the text.
    """
    subj = data.subject[rows]
    names, counts = np.unique(subj, return_counts=True)
    keep = {str(n) for n, c in zip(names, counts) if n and c >= config.subject_min_rows}
    if len(keep) < 2:
        return None
    rows = rows[np.isin(subj, sorted(keep))]
    subj = data.subject[rows].astype(str)
    texts = [truncate(data.prompts[i], config.max_chars) for i in rows]
    counts_X = unigram_vectorizer(config.subject_features).transform(texts)
    nb = MultinomialNB(alpha=config.subject_alpha).fit(counts_X, subj)
    strong, weak = data.strong_correct[rows], data.weak_correct[rows]
    gain = np.array([strong[subj == c].mean() - weak[subj == c].mean() for c in nb.classes_], dtype=float)
    params: dict[str, Any] = {
        "n_features": int(config.subject_features),
        "log_prob": nb.feature_log_prob_,
        "log_prior": nb.class_log_prior_,
        "gain": gain,
        "weight": float(config.subject_prior_weight),
        "slope": 0.0,
        "intercept": 0.0,
    }
    head = SubjectPrior(params)
    # Match the head's training mean/spread to the benefit score's, so that
    # ``weight`` is its share of the blend in score units.
    benefit = router.score_many([data.prompts[i] for i in rows])
    expected = head.expected_gain_many(texts)
    spread = float(expected.std())
    params["slope"] = float(benefit.std()) / spread if spread > 0 else 0.0
    params["intercept"] = float(benefit.mean()) - params["slope"] * float(expected.mean())
    return SubjectPrior(params)


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

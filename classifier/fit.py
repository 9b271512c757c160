"""Fitting a router: hyper-parameters, featurizer, per-family logistic models and the optional heads."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB

from classifier.data import RoutingDataset, make_targets
from classifier.chathead import LEVELS as CHAT_LEVELS
from classifier.chathead import ChatHead
from classifier.familiarity import Familiarity
from classifier.features import HAND_FEATURE_NAMES, SEGMENTS, PromptFeaturizer, segment, truncate, unigram_vectorizer
from classifier.model import RouterModel, SubjectPrior, TreeHead, bundled_embedder, chat_inputs

__all__ = ["RouterConfig", "build_featurizer", "fit_familiarity", "fit_router"]


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
    # Chat head (open-chat prompts, family "chat"; see classifier.chathead): a logistic model of
    # P(weak model wrong) on the bundled embedding of every training row's question text (times
    # chat_embedding_scale) plus its format-free features, standardised and clipped to +- chat_clip
    # standard deviations, inverse L2 strength chat_C.  False (or fewer than chat_min_rows rows) leaves
    # it out: open chat is then scored by the "text" family models, as before.
    chat_head: bool = True
    chat_C: float = 0.1
    chat_clip: float = 3.0
    chat_embedding_scale: float = 4.0
    # The embedded text: the question's first and last 100 characters (tokenising is most of the head's time;
    # leave-subjects-out APGR, one deal of subjects into folds: 0.581 embedding 300 characters, 0.575 at 200, 0.565 at
    # 128; decision p99 on Arena-Hard ~1.0 ms, ~0.8 ms, ~0.6 ms on a busy 2-core host).
    chat_embed_chars: int = 200
    chat_feature_chars: int = 400  # the format-free features' text: its first and last 200 characters
    chat_min_rows: int = 2000  # fewer rows with the weak side labelled: no chat head (a 276-weight model)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable view."""
        return asdict(self)


def build_featurizer(config: RouterConfig) -> PromptFeaturizer:
    """The (stateless) featurizer for ``config``."""
    return PromptFeaturizer(
        max_chars=config.max_chars,
        word_features=config.word_features,
        char_features=config.char_features,
        hand_weight=config.hand_weight,
        word_problem_weight=config.word_problem_weight,
    )


def _weights(data: RoutingDataset, rows: np.ndarray) -> np.ndarray | None:
    """Sample weights of ``rows`` (None when they are all 1, so unweighted fits stay bit-identical)."""
    w = data.weight[rows]
    return None if np.all(w == 1.0) else w


def _fit_lr(X: Any, y: np.ndarray, C: float, seed: int, sample_weight: np.ndarray | None = None) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(X, y, sample_weight=sample_weight)


def _fit_dense_lr(
    X: Any, y: np.ndarray, n_dense: int, C: float, seed: int, sample_weight: np.ndarray | None = None
) -> LogisticRegression:
    """Logistic model on the last ``n_dense`` columns of ``X`` only, fitted on standardised
    columns and mapped back, so it scores raw feature rows like any other model (zero
    weight on every other column)."""
    dense = np.asarray(X[:, X.shape[1] - n_dense :].todense(), dtype=np.float64)
    mean = dense.mean(axis=0)
    std = dense.std(axis=0)
    std[std == 0] = 1.0
    est = _fit_lr((dense - mean) / std, y, C, seed, sample_weight)
    coef = np.zeros((1, X.shape[1]), dtype=np.float64)
    coef[0, X.shape[1] - n_dense :] = est.coef_[0] / std
    est.intercept_ = est.intercept_ - est.coef_[0] @ (mean / std)
    est.coef_ = coef
    est.n_features_in_ = X.shape[1]
    return est


def _two_classes(y: np.ndarray, known: np.ndarray) -> bool:
    n_pos = int(y[known].sum())
    return 0 < n_pos < int(known.sum())


def fit_router(data: RoutingDataset, config: RouterConfig, embedder: Any = None) -> RouterModel:
    """Fit the model(s) of each prompt family on the rows of ``data``, with its row weights.

    Each model learns from the rows where its target is known (one-sided rows train one side).
    A family with fewer than ``min_segment_rows`` such rows (or a single class in one of its
    targets) is served by models fitted on all rows, stored as ``"all"``.  The subject-prior and
    tree heads learn from rows labelled on both sides only.  The chat head (``config.chat_head``) embeds
    with ``embedder`` (None: the bundled one).
    """
    targets = make_targets(data, config.label)
    if config.label == "benefit" and any(not _two_classes(y, k) for y, k in targets.values()):
        # e.g. the strong model is right on every row: P(strong right) is constant, so
        # the benefit ranks like the single "gain" model; fit that instead.
        targets = make_targets(data, "gain")
    for y, known in targets.values():
        if not _two_classes(y, known):
            raise ValueError("training data has a single class; need both easy and hard prompts")
    featurizer = build_featurizer(config)
    X = featurizer.transform(data.prompts)
    segs = np.asarray([segment(p) for p in data.prompts], dtype=object)
    Cs = {"mc": config.C_mc, "text": config.C_text}
    models: dict[str, LogisticRegression] = {}
    complete = 0
    n_wp = featurizer.n_hand_ - len(HAND_FEATURE_NAMES)
    for name in SEGMENTS:
        fam = segs == name
        fam_rows = {suffix: np.flatnonzero(fam & known) for suffix, (_, known) in targets.items()}
        if not all(len(r) >= config.min_segment_rows and 0 < y[r].sum() < len(r)
                   for (y, _), r in zip(targets.values(), fam_rows.values())):
            continue
        complete += 1
        keep = None
        if n_wp and name not in config.word_problem_families:
            keep = np.ones(X.shape[1], dtype=np.float32)
            keep[X.shape[1] - n_wp :] = 0.0
        for suffix, (y, _) in targets.items():
            rows = fam_rows[suffix]
            Xf = X[rows] if keep is None else X[rows] @ sp.diags(keep, format="csr")
            sw = _weights(data, rows)
            if n_wp and name in config.dense_families:
                models[name + suffix] = _fit_dense_lr(Xf, y[rows], n_wp, config.C_dense, config.seed, sw)
            else:
                models[name + suffix] = _fit_lr(Xf, y[rows], Cs[name], config.seed, sw)
    if complete < len(SEGMENTS):
        for suffix, (y, known) in targets.items():
            rows = np.flatnonzero(known)
            models["all" + suffix] = _fit_lr(X[rows], y[rows], min(Cs.values()), config.seed, _weights(data, rows))
    router = RouterModel(featurizer, models)
    priors: dict[str, SubjectPrior] = {}
    if config.subject_prior_weight > 0:
        for name in SEGMENTS:
            if name in router.families:
                prior = _fit_subject_prior(data, np.flatnonzero((segs == name) & data.both_known), router, config)
                if prior is not None:
                    priors[name] = prior
    if priors:
        router = RouterModel(featurizer, models, priors=priors)
    familiarity = fit_familiarity(X, featurizer)
    trees: dict[str, TreeHead] = {}
    if config.tree_weight > 0:
        for name in config.tree_families:
            rows = np.flatnonzero((segs == name) & data.both_known)
            if name in router.families and len(rows) >= config.min_segment_rows:
                trees[name] = _fit_tree_head(data, rows, X, router, featurizer, config)
    router = RouterModel(featurizer, models, priors=priors, trees=trees, familiarity=familiarity)
    if not config.chat_head:
        return router
    if int(data.weak_known.sum()) < config.chat_min_rows or not _two_classes(~data.weak_correct, data.weak_known):
        return router  # too few rows for the head, or the weak model right (or wrong) on every row
    embedder = embedder if embedder is not None else bundled_embedder()
    chat = fit_chat_head(data, config, embedder, router.score_many(data.prompts))
    return RouterModel(featurizer, models, priors=priors, trees=trees, familiarity=familiarity, chat=chat,
                       embedder=embedder)


def fit_chat_head(data: RoutingDataset, config: RouterConfig, embedder: Any, scores: np.ndarray) -> ChatHead:
    """The chat head on every row's question text (see :mod:`classifier.chathead`); ``scores`` are the
    rows' scores by the family models, whose quantiles the head's output is matched to."""
    inputs = [chat_inputs(p, config.chat_feature_chars, config.chat_embed_chars) for p in data.prompts]
    vectors = np.asarray(embedder.embed([q for q, _ in inputs]), dtype=np.float64)
    feats = np.asarray([f for _, f in inputs], dtype=np.float64)
    mean, scale = feats.mean(axis=0), feats.std(axis=0)
    scale[scale == 0] = 1.0
    es = float(config.chat_embedding_scale)
    X = np.hstack([vectors * es, np.clip((feats - mean) / scale, -config.chat_clip, config.chat_clip)])
    rows = np.flatnonzero(data.weak_known)
    est = _fit_lr(X[rows], ~data.weak_correct[rows], config.chat_C, config.seed, _weights(data, rows))
    coef = est.coef_[0].copy()
    coef[: vectors.shape[1]] *= es  # the head reads the unscaled embedding
    params: dict[str, Any] = {
        "embedder": str(embedder.name),
        "dim": int(vectors.shape[1]),
        "embed_chars": int(config.chat_embed_chars),
        "feature_chars": int(config.chat_feature_chars),
        "mean": mean,
        "scale": scale,
        "clip": float(config.chat_clip),
        "coef": coef,
        "intercept": float(est.intercept_[0]),
        "raw_quantiles": np.zeros(len(CHAT_LEVELS)),
        "score_quantiles": np.quantile(scores[data.both_known], CHAT_LEVELS),
    }
    both = np.flatnonzero(data.both_known)
    head = ChatHead(params)
    params["raw_quantiles"] = np.quantile(head.raw_many(head.inputs(vectors[both], feats[both])), CHAT_LEVELS)
    return ChatHead(params)


def fit_familiarity(X: sp.csr_matrix, featurizer: PromptFeaturizer) -> Familiarity | None:
    """Familiarity to the training prompts from their feature rows ``X`` (None without word features)."""
    if not featurizer.word_features:
        return None
    return Familiarity.fit(X[:, : int(featurizer.word_features)])


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
    ).fit(H, y, sample_weight=_weights(data, rows))
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

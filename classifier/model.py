"""The trained router: loading (safe skops allow-list), scoring, chat-message handling."""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sklearn.linear_model import LogisticRegression

from classifier.chathead import ChatHead
from classifier.familiarity import Familiarity
from classifier.features import (
    CHAT,
    HAND_FEATURE_NAMES,
    WORD_PROBLEM_VERSION,
    PromptFeaturizer,
    family,
    truncate,
    unigram_vectorizer,
)
from classifier.generic import generic_features, question_text

__all__ = [
    "DEFAULT_MODEL_PATH",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "ModelLoadError",
    "RouterModel",
    "SubjectPrior",
    "TreeHead",
    "bundled_embedder",
    "chat_inputs",
    "load_model",
    "metrics_path_for",
    "messages_text",
    "save_model",
]

DEFAULT_MODEL_PATH: Path = Path(__file__).resolve().parent / "model" / "router.skops"
MODEL_FORMAT = "slm-gateway-router"
MODEL_FORMAT_VERSION = 5
# The only version this code reads: per-family logistic models (one, or a "+"/"-" pair), optional
# subject-prior and tree heads (plain arrays, see SubjectPrior / TreeHead), and version-2
# word-problem features.  Files of versions 2-4 (and featurizers with version-1 word-problem
# features) are refused with a "retrain" message: the code that read them was removed.
READABLE_FORMAT_VERSIONS: frozenset[int] = frozenset({MODEL_FORMAT_VERSION})

# Types a router file may contain beyond skops' built-in trusted set.  Anything
# else in a file is refused with ModelLoadError; we never load with trusted=True.  (Heads are stored as
# plain arrays, so no fitted tree estimator is ever unpickled.)
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "classifier.features.PromptFeaturizer",
        "sklearn.linear_model._logistic.LogisticRegression",
        "builtins.tuple",
        "numpy.float32",
        "numpy.float64",
        "numpy.int64",
        "numpy.uint16",
        "numpy.dtype",
        "numpy.ndarray",
    }
)


class ModelLoadError(RuntimeError):
    """The router model file is missing, corrupt, or contains untrusted types."""


def _blend_head(score: Any, head: Any, weight: float, slope: float, intercept: float) -> Any:
    """``score`` blended with a head's output mapped onto the score scale (``slope * head + intercept``),
    clipped to [0, 1]; arrays or scalars."""
    return np.clip((1.0 - weight) * score + weight * (slope * head + intercept), 0.0, 1.0)


def bundled_embedder() -> Any:
    """The gateway's bundled embedder (WordLlama, weights in its wheel): what the chat head was fitted with.
    Loaded on each call; the gateway passes its one shared instance instead (see :func:`load_model`)."""
    from gateway.embedding.wordllama import WordLlamaEmbedder

    return WordLlamaEmbedder()


def chat_inputs(text: str, feature_chars: int, embed_chars: int) -> tuple[str, list[float]]:
    """What the chat head reads of a prompt: its question text (scaffolding cut) truncated to ``embed_chars``
    to embed, and its format-free features on the question truncated to ``feature_chars`` (see
    :mod:`classifier.generic`).  Both cuts keep the head and tail halves and bound the head's time, which grows
    with the text (tokenising for the embedding is most of it)."""
    question = question_text(text)
    return truncate(question, embed_chars), generic_features(truncate(question, feature_chars), len(question))


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
    cut to ``max_chars`` so the most recent user request always dominates; a
    last turn longer than that is the whole text (the earlier turns left out),
    uncut: the scorer then reads it as it read each training prompt, its family
    from the text itself (a long multiple-choice question keeps its options,
    which come last) and its features from its own head-and-tail cut.
    """
    user = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if not user:
        user = [_content_text(m.get("content")) for m in messages]
    texts = [t for t in reversed(user) if t]
    if texts and len(texts[0]) > max_chars:
        return texts[0]
    return "\n".join(texts)[:max_chars]


class SubjectPrior:
    """Subject-prior head of a prompt family: a multinomial naive Bayes subject model
    over hashed word counts, and each subject's routing gain on the training data.

    ``expected_gain(text) = sum_s P(subject s | text) * gain[s]`` where ``gain[s]``
    is the training mean of ``strong_correct - weak_correct`` in subject ``s``.  The
    family's score is then ``(1 - weight) * benefit + weight * (slope * expected_gain
    + intercept)``, with slope/intercept matching the head's training mean and spread
    to the benefit's (so ``weight`` is the share of the blend in score units).

    Stored as a plain dict of numbers and arrays (no pickled estimator):
    ``n_features, log_prob (K x n_features), log_prior (K), gain (K), weight, slope,
    intercept``.
    """

    KEYS = ("n_features", "log_prob", "log_prior", "gain", "weight", "slope", "intercept")

    def __init__(self, params: Mapping[str, Any]) -> None:
        missing = [k for k in self.KEYS if k not in params]
        if missing:
            raise ValueError(f"subject prior lacks {', '.join(missing)}")
        self.n_features = int(params["n_features"])
        self.log_prob = np.asarray(params["log_prob"], dtype=np.float64)
        self.log_prior = np.asarray(params["log_prior"], dtype=np.float64).ravel()
        self.gain = np.asarray(params["gain"], dtype=np.float64).ravel()
        self.weight = float(params["weight"])
        self.slope = float(params["slope"])
        self.intercept = float(params["intercept"])
        k = self.log_prior.size
        if self.n_features <= 0 or self.log_prob.shape != (k, self.n_features) or self.gain.size != k or k < 2:
            raise ValueError("subject prior arrays have inconsistent shapes")
        if not (0.0 <= self.weight <= 1.0):
            raise ValueError("subject prior weight must be in [0, 1]")
        values = (self.log_prob, self.log_prior, self.gain, np.array([self.slope, self.intercept]))
        if not all(np.isfinite(v).all() for v in values):
            raise ValueError("subject prior has non-finite values")
        # rows = hashed words (fast gather); float32 halves the cache footprint
        self.log_prob_t = np.ascontiguousarray(self.log_prob.T, dtype=np.float32)
        self._vectorizer = unigram_vectorizer(self.n_features)

    def _blend(self, joint: np.ndarray) -> np.ndarray:
        joint = joint - joint.max(axis=-1, keepdims=True)
        p = np.exp(joint)
        return (p @ self.gain) / p.sum(axis=-1)

    def expected_gain_cols(self, cols: np.ndarray) -> float:
        """Expected routing gain of one text from its hashed unigram columns (repeats = counts)."""
        joint = self.log_prob_t[cols].sum(axis=0, dtype=np.float64)
        joint += self.log_prior  # :meth:`_blend` for one row, in place
        joint -= joint.max()
        np.exp(joint, out=joint)
        return float(joint @ self.gain) / float(joint.sum())

    def expected_gain_many(self, texts: Sequence[str]) -> np.ndarray:
        """Expected routing gain of many (already truncated) texts."""
        X = self._vectorizer.transform(list(texts))
        return self._blend(np.asarray(X @ self.log_prob_t) + self.log_prior)

    def combine(self, benefit: Any, gain: Any) -> Any:
        """The family's score from its benefit score and expected gain (clipped to [0, 1])."""
        return _blend_head(benefit, gain, self.weight, self.slope, self.intercept)

    def to_params(self) -> dict[str, Any]:
        """The stored (skops-safe) representation."""
        return {
            "n_features": self.n_features,
            "log_prob": self.log_prob.astype(np.float32),
            "log_prior": self.log_prior,
            "gain": self.gain,
            "weight": self.weight,
            "slope": self.slope,
            "intercept": self.intercept,
        }


class TreeHead:
    """Tree head of a prompt family: boosted regression trees on the hand features.

    The trees (fitted to ``strong_correct - weak_correct``) see only the family's
    hand-made features (the first ``n_inputs`` dense columns, as scaled by the
    featurizer), so they add non-linear interactions that the linear models miss.
    The family's score becomes ``(1 - weight) * score + weight * (slope * trees +
    intercept)``, with slope/intercept matching the trees' training mean and spread
    to the score's (so ``weight`` is the head's share of the blend in score units).

    Stored as a plain dict of numbers and flat node arrays (no pickled estimator):
    ``n_inputs, feature, threshold, left, right, value, roots, depth, baseline,
    weight, slope, intercept``.  Node ``i`` is a leaf when ``left[i] == i``; otherwise
    a row goes to ``left[i]`` if its input ``feature[i]`` is ``<= threshold[i]``.
    """

    KEYS = (
        "n_inputs", "feature", "threshold", "left", "right", "value", "roots", "depth",
        "baseline", "weight", "slope", "intercept",
    )

    def __init__(self, params: Mapping[str, Any]) -> None:
        missing = [k for k in self.KEYS if k not in params]
        if missing:
            raise ValueError(f"tree head lacks {', '.join(missing)}")
        self.n_inputs = int(params["n_inputs"])
        self.feature = np.asarray(params["feature"], dtype=np.int64).ravel()
        self.threshold = np.asarray(params["threshold"], dtype=np.float64).ravel()
        self.left = np.asarray(params["left"], dtype=np.int64).ravel()
        self.right = np.asarray(params["right"], dtype=np.int64).ravel()
        self.value = np.asarray(params["value"], dtype=np.float64).ravel()
        self.roots = np.asarray(params["roots"], dtype=np.int64).ravel()
        self.depth = int(params["depth"])
        self.baseline = float(params["baseline"])
        self.weight = float(params["weight"])
        self.slope = float(params["slope"])
        self.intercept = float(params["intercept"])
        n = self.feature.size
        if n == 0 or not (self.threshold.size == self.left.size == self.right.size == self.value.size == n):
            raise ValueError("tree head arrays have inconsistent shapes")
        if self.n_inputs <= 0 or self.roots.size == 0 or not (0 <= self.depth <= 64):
            raise ValueError("tree head arrays have inconsistent shapes")
        for idx, hi in ((self.feature, self.n_inputs), (self.left, n), (self.right, n), (self.roots, n)):
            if idx.min() < 0 or idx.max() >= hi:
                raise ValueError("tree head node indices out of range")
        if not (0.0 <= self.weight <= 1.0):
            raise ValueError("tree head weight must be in [0, 1]")
        numbers = np.array([self.baseline, self.slope, self.intercept])
        if not all(np.isfinite(v).all() for v in (self.threshold, self.value, numbers)):
            raise ValueError("tree head has non-finite values")

    @classmethod
    def from_estimator(cls, est: Any, n_inputs: int, **blend: float) -> "TreeHead":
        """Flatten a fitted ``HistGradientBoostingRegressor`` (numeric splits only)."""
        feature, threshold, left, right, value, roots = [], [], [], [], [], []
        depth = 0
        for (predictor,) in est._predictors:
            nodes = predictor.nodes
            base = len(feature)
            roots.append(base)
            depth = max(depth, int(nodes["depth"].max()))
            for i, node in enumerate(nodes):
                leaf = bool(node["is_leaf"])
                feature.append(0 if leaf else int(node["feature_idx"]))
                threshold.append(0.0 if leaf else float(node["num_threshold"]))
                left.append(base + i if leaf else base + int(node["left"]))
                right.append(base + i if leaf else base + int(node["right"]))
                value.append(float(node["value"]) if leaf else 0.0)
        params: dict[str, Any] = {
            "n_inputs": int(n_inputs),
            "feature": np.asarray(feature, dtype=np.int64),
            "threshold": np.asarray(threshold, dtype=np.float64),
            "left": np.asarray(left, dtype=np.int64),
            "right": np.asarray(right, dtype=np.int64),
            "value": np.asarray(value, dtype=np.float64),
            "roots": np.asarray(roots, dtype=np.int64),
            "depth": depth,
            "baseline": float(np.ravel(est._baseline_prediction)[0]),
            "weight": 0.0,
            "slope": 0.0,
            "intercept": 0.0,
        }
        params.update(blend)
        return cls(params)

    def predict_many(self, H: np.ndarray) -> np.ndarray:
        """Sum of the trees for each row of ``H`` (rows x at least ``n_inputs`` columns)."""
        H = np.asarray(H, dtype=np.float64)[:, : self.n_inputs]
        cur = np.broadcast_to(self.roots, (H.shape[0], self.roots.size)).copy()
        rows = np.arange(H.shape[0])[:, None]
        for _ in range(self.depth):
            go_left = H[rows, self.feature[cur]] <= self.threshold[cur]
            cur = np.where(go_left, self.left[cur], self.right[cur])
        return self.value[cur].sum(axis=1) + self.baseline

    def predict(self, h: np.ndarray) -> float:
        """Sum of the trees for one row of inputs: every node's branch at once, then ``depth`` hops."""
        branch = np.where(h[self.feature] <= self.threshold, self.left, self.right)  # a leaf's is itself
        cur = self.roots
        for _ in range(self.depth):
            cur = branch[cur]
        return float(self.value[cur].sum()) + self.baseline

    def combine(self, score: Any, trees: Any) -> Any:
        """The family's score from its score so far and the trees' output (clipped to [0, 1])."""
        return _blend_head(score, trees, self.weight, self.slope, self.intercept)

    def to_params(self) -> dict[str, Any]:
        """The stored (skops-safe) representation."""
        return {
            "n_inputs": self.n_inputs,
            "feature": self.feature.astype(np.int32),
            "threshold": self.threshold,
            "left": self.left.astype(np.int32),
            "right": self.right.astype(np.int32),
            "value": self.value,
            "roots": self.roots.astype(np.int32),
            "depth": self.depth,
            "baseline": self.baseline,
            "weight": self.weight,
            "slope": self.slope,
            "intercept": self.intercept,
        }


class RouterModel:
    """A trained router.  ``score`` returns ``p_strong`` in [0, 1].

    Models are keyed by prompt family (see :func:`classifier.features.segment`,
    ``"all"`` = fallback), all sharing one stateless featurizer.  A family is
    served either by one logistic model ``"<family>"`` whose probability is
    ``p_strong``, or by a pair ``"<family>+"`` (P(strong model right)) and
    ``"<family>-"`` (P(weak model right)) with
    ``p_strong = (1 + P(strong right) - P(weak right)) / 2``: a monotone map
    of the expected accuracy gain of routing the prompt upstream.  A family
    may also have a :class:`SubjectPrior` head and then a :class:`TreeHead`
    blended into its score.

    ``familiarity`` (optional, :class:`classifier.familiarity.Familiarity`) tells how familiar a prompt is to
    the training prompts; :meth:`familiarity` is None for a model without it.
    """

    def __init__(
        self,
        featurizer: PromptFeaturizer,
        models: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        priors: Mapping[str, SubjectPrior] | None = None,
        trees: Mapping[str, TreeHead] | None = None,
        familiarity: Familiarity | None = None,
        chat: ChatHead | None = None,
        embedder: Any = None,
    ) -> None:
        if not models:
            raise ValueError("RouterModel needs at least one fitted model")
        self.featurizer = featurizer
        self.models: dict[str, Any] = dict(models)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.priors: dict[str, SubjectPrior] = dict(priors or {})
        self.trees: dict[str, TreeHead] = dict(trees or {})
        self.familiarity_head = familiarity
        self.chat_head = chat
        self.embedder = embedder
        if chat is not None:
            if embedder is None:
                raise ValueError("a router with a chat head needs the embedder it was fitted with")
            if getattr(embedder, "name", None) != chat.embedder or int(getattr(embedder, "dim", -1)) != chat.dim:
                raise ValueError(f"the chat head was fitted with embedder {chat.embedder!r} ({chat.dim} dimensions), "
                                 f"not {getattr(embedder, 'name', None)!r}")
        self._word_columns = None
        if familiarity is not None:
            if familiarity.n_features != int(featurizer.word_features):
                raise ValueError("familiarity covers a different number of word columns than the featurizer")
            self._word_columns = featurizer.compile_words()
        self._max_chars = int(featurizer.max_chars)
        n_wp = featurizer.n_hand_ - len(HAND_FEATURE_NAMES)
        # Fast path: sparse dot products instead of sklearn's per-call overhead.
        self._linear: dict[str, tuple[np.ndarray, float, int]] = {}
        for name, est in self.models.items():
            classes = [bool(c) for c in est.classes_]
            col = classes.index(True)
            coef = np.asarray(est.coef_, dtype=np.float64).ravel()
            self._linear[name] = (coef, float(np.ravel(est.intercept_)[0]), col)
        # family -> model names: (single,) or (plus, minus)
        self._heads: dict[str, tuple[str, ...]] = {}
        for name in self.models:
            base = name[:-1] if name[-1:] in ("+", "-") else name
            if base in self._heads:
                continue
            if base in self.models:
                self._heads[base] = (base,)
            elif base + "+" in self.models and base + "-" in self.models:
                self._heads[base] = (base + "+", base + "-")
            else:
                raise ValueError(f"model {name!r} has no partner ({base}+ / {base}- must both exist)")
        unknown = sorted(set(self.priors) - set(self._heads))
        if unknown:
            raise ValueError(f"subject prior for unknown family {', '.join(unknown)}")
        unknown = sorted(set(self.trees) - set(self._heads))
        if unknown:
            raise ValueError(f"tree head for unknown family {', '.join(unknown)}")
        if any(t.n_inputs > len(HAND_FEATURE_NAMES) for t in self.trees.values()):
            raise ValueError("tree head reads more inputs than there are hand features")
        self._hand_start = featurizer.hand_start_
        # Per family: a featurizer that skips the word-problem features when the
        # family's models ignore them (weights exactly 0) and, for a family with a
        # subject prior, also returns the prompt's unigram columns.
        self._featurizers: dict[str, Any] = {}
        self._n_dense: dict[str, int] = {}  # family -> dense values at the end of its featurizer's output
        for fam, names in self._heads.items():
            uses_wp = n_wp > 0 and any(np.any(self._linear[n][0][-n_wp:] != 0) for n in names)
            self._n_dense[fam] = len(HAND_FEATURE_NAMES) + (n_wp if uses_wp else 0)
            only_wp = uses_wp and all(not np.any(self._linear[n][0][:-n_wp]) for n in names)
            prior = self.priors.get(fam)
            if only_wp and prior is None and fam not in self.trees:  # dense family: no n-gram hashing
                self._featurizers[fam] = featurizer.compile_word_problem_only()
                continue
            self._featurizers[fam] = featurizer.compile_single(
                word_problem=uses_wp, unigram_features=prior.n_features if prior is not None else 0
            )

    @property
    def families(self) -> tuple[str, ...]:
        """Prompt families this router has models for (``"all"``: the fallback for the others)."""
        return tuple(self._heads)

    def family_models(self, family: str) -> tuple[str, ...]:
        """Names of the model(s) serving ``family``: ``(name,)`` or ``(plus, minus)``; KeyError if none."""
        return self._heads[family]

    def _family(self, seg: str) -> str:
        if seg == CHAT:
            seg = "text"
        return seg if seg in self._heads else ("all" if "all" in self._heads else next(iter(self._heads)))

    def family_of(self, text: str) -> str:
        """The family whose head scores ``text``: ``"chat"`` for open chat when this model has a chat head, else
        the family model serving it (``"mc"``, ``"text"`` or ``"all"``)."""
        fam = family(text)
        return CHAT if fam == CHAT and self.chat_head is not None else self._family(fam)

    def _chat_score(self, text: str) -> float:
        assert self.chat_head is not None
        question, features = chat_inputs(text, self.chat_head.feature_chars, self.chat_head.embed_chars)
        return self.chat_head.score(self.embedder.embed([question])[0], features)

    def chat_scores(self, texts: Sequence[str]) -> np.ndarray:
        """The chat head's scores of ``texts`` whatever their family (ValueError without a chat head)."""
        if self.chat_head is None:
            raise ValueError("this router has no chat head")
        inputs = [chat_inputs(t, self.chat_head.feature_chars, self.chat_head.embed_chars) for t in texts]
        vectors = self.embedder.embed([q for q, _ in inputs])
        return self.chat_head.score_many(vectors, np.asarray([f for _, f in inputs], dtype=np.float64))

    def _prob(self, name: str, idx: np.ndarray, val: np.ndarray) -> float:
        coef, intercept, col = self._linear[name]
        z = float(val @ coef[idx]) + intercept
        z = max(-700.0, min(700.0, z))
        p = 1.0 / (1.0 + math.exp(-z))
        return p if col == 1 else 1.0 - p

    def score(self, text: str) -> float:
        """``p_strong`` for one prompt text (fast path, same value as :meth:`score_many`)."""
        fam = self.family_of(text)
        if fam == CHAT:
            return self._chat_score(text)
        heads = self._heads[fam]
        prior = self.priors.get(fam)
        if prior is None:
            idx, val = self._featurizers[fam](text)
        else:
            idx, val, uni = self._featurizers[fam](text)
        if len(heads) == 1:
            p = self._prob(heads[0], idx, val)
        else:
            p = (1.0 + self._prob(heads[0], idx, val) - self._prob(heads[1], idx, val)) / 2.0
        if prior is not None:
            head = prior.slope * prior.expected_gain_cols(uni) + prior.intercept
            p = min(1.0, max(0.0, (1.0 - prior.weight) * p + prior.weight * head))
        trees = self.trees.get(fam)
        if trees is not None:
            out = trees.slope * trees.predict(val[val.size - self._n_dense[fam] :]) + trees.intercept
            p = min(1.0, max(0.0, (1.0 - trees.weight) * p + trees.weight * out))
        return p

    def score_many(self, texts: Sequence[str]) -> np.ndarray:
        """``p_strong`` for many prompt texts, as a float array."""
        texts = list(texts)
        out = np.zeros(len(texts), dtype=float)
        if not texts:
            return out
        fams = np.asarray([self.family_of(t) for t in texts], dtype=object)
        chat = np.flatnonzero(fams == CHAT)
        if chat.size:
            out[chat] = self.chat_scores([texts[i] for i in chat])
        if chat.size == len(texts):
            return out
        X = self.featurizer.transform(texts)
        for fam in set(fams.tolist()) - {CHAT}:
            rows = np.flatnonzero(fams == fam)
            probs = [
                self.models[name].predict_proba(X[rows])[:, self._linear[name][2]] for name in self._heads[fam]
            ]
            out[rows] = probs[0] if len(probs) == 1 else (1.0 + probs[0] - probs[1]) / 2.0
            prior = self.priors.get(fam)
            if prior is not None:
                gain = prior.expected_gain_many([truncate(texts[i], self._max_chars) for i in rows])
                out[rows] = prior.combine(out[rows], gain)
            trees = self.trees.get(fam)
            if trees is not None:
                start = self._hand_start
                H = X[rows][:, start : start + trees.n_inputs].toarray()
                out[rows] = trees.combine(out[rows], trees.predict_many(H))
        return out

    def score_messages(self, messages: Sequence[Mapping[str, Any]]) -> float:
        """``p_strong`` for an OpenAI chat message list (user turns, last one first)."""
        return self.score(messages_text(messages, self._max_chars))

    def familiarity(self, text: str) -> float | None:
        """How familiar ``text`` is to the training prompts, in [0, 1] (a percentile of theirs; see
        :mod:`classifier.familiarity`); None when this model has no familiarity data."""
        if self.familiarity_head is None or self._word_columns is None:
            return None
        return self.familiarity_head.of_columns(self._word_columns(text))

    def familiarity_messages(self, messages: Sequence[Mapping[str, Any]]) -> float | None:
        """:meth:`familiarity` of the text :meth:`score_messages` scores."""
        return self.familiarity(messages_text(messages, self._max_chars))


def save_model(router: RouterModel, path: str | Path, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``router`` with skops, wrapped in a small format header."""
    import skops.io as sio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "info": json.dumps(dict(info or {}), sort_keys=True),
        "featurizer": router.featurizer,
        "models": dict(router.models),
        "priors": {fam: prior.to_params() for fam, prior in router.priors.items()},
        "trees": {fam: head.to_params() for fam, head in router.trees.items()},
    }
    if router.familiarity_head is not None:
        payload["familiarity"] = router.familiarity_head.to_params()
    if router.chat_head is not None:
        payload["chat"] = router.chat_head.to_params()
    sio.dump(payload, path, compression=zipfile.ZIP_DEFLATED)
    return path


T = TypeVar("T")


def _optional_part(payload: Mapping[str, Any], key: str, build: Callable[[Any], T], path: Any, what: str) -> T | None:
    """``build(payload[key])`` for an optional part of a model file, None when absent; ModelLoadError when bad."""
    raw = payload.get(key)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"router model {path} has malformed {what}")
    try:
        return build(raw)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"router model {path} has bad {what}: {exc}") from None


def load_model(path: str | Path | None = None, embedder: Any = None) -> RouterModel:
    """Load a router (``None`` -> the shipped model).  Raises :class:`ModelLoadError`.

    A router with a chat head embeds open-chat prompts with ``embedder`` (None: :func:`bundled_embedder`, loaded
    only when the file has a chat head); it must be the embedder the head was fitted with (same name)."""
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
    if payload.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ModelLoadError(
            f"router model {path} has format version {payload.get('format_version')!r}, "
            f"expected one of {sorted(READABLE_FORMAT_VERSIONS)} (older files: retrain with `classifier train`)"
        )
    featurizer, models = payload.get("featurizer"), payload.get("models")
    if not isinstance(featurizer, PromptFeaturizer) or not isinstance(models, dict) or not models:
        raise ModelLoadError(f"router model {path} does not contain a featurizer and models")
    if featurizer.word_problem_weight and featurizer.word_problem_version != WORD_PROBLEM_VERSION:
        raise ModelLoadError(
            f"router model {path} uses word-problem features version {featurizer.word_problem_version!r}, "
            f"which this version no longer computes; retrain it"
        )
    if not all(isinstance(m, LogisticRegression) and hasattr(m, "coef_") for m in models.values()):
        raise ModelLoadError(f"router model {path} contains unfitted or unsupported models")
    raw_priors = payload.get("priors") or {}
    if not isinstance(raw_priors, dict) or not all(isinstance(v, dict) for v in raw_priors.values()):
        raise ModelLoadError(f"router model {path} has malformed subject priors")
    try:
        priors = {str(fam): SubjectPrior(params) for fam, params in raw_priors.items()}
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"router model {path} has a bad subject prior: {exc}") from None
    raw_trees = payload.get("trees") or {}
    if not isinstance(raw_trees, dict) or not all(isinstance(v, dict) for v in raw_trees.values()):
        raise ModelLoadError(f"router model {path} has malformed tree heads")
    try:
        trees = {str(fam): TreeHead(params) for fam, params in raw_trees.items()}
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"router model {path} has a bad tree head: {exc}") from None
    familiarity = _optional_part(payload, "familiarity", Familiarity, path, "familiarity data")
    chat = _optional_part(payload, "chat", ChatHead, path, "chat head")
    if chat is not None:
        if embedder is None:
            try:
                embedder = bundled_embedder()
            except Exception as exc:  # EmbedderError, ImportError: the head cannot run without its embedder
                raise ModelLoadError(f"router model {path} needs the bundled embedder for its chat head: {exc}") from None
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
    try:
        return RouterModel(featurizer, models, metadata, priors, trees, familiarity, chat, embedder)
    except (ValueError, AttributeError, IndexError) as exc:
        raise ModelLoadError(f"router model {path} is inconsistent: {exc}") from None

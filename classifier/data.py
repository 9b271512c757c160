"""Routing data: benchmark rows and traffic labels, loaded into one :class:`RoutingDataset`.

A row is ``{"prompt", "weak_correct", "strong_correct"}`` plus optional ``benchmark``, ``subject``
and ``ts`` (unix seconds).  ``weak_correct`` is "the local (weak) model's answer was right",
``strong_correct`` the same for the upstream (strong) model.  Traffic labels (from shadow judging or
user feedback) carry no ``benchmark``; feedback rows may be *one-sided*: only one of the two fields is
present.  A one-sided row trains only the model of the side it knows (see
:func:`classifier.fit.fit_router`) and never enters an evaluation, which needs both sides.

Weights: every row has a training weight.  Rows without ``benchmark`` are *traffic* rows; when a
training set mixes them with benchmark rows, :func:`traffic_weight` up-weights them (by default so
that all traffic rows together weigh half as much as all benchmark rows, never less than 1 each and never more
than :data:`MAX_TRAFFIC_WEIGHT` each).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LABELS",
    "TRAFFIC",
    "DEFAULT_TRAFFIC_SHARE",
    "MAX_TRAFFIC_WEIGHT",
    "DEFAULT_HOLD_OUT",
    "hold_out_recent",
    "RoutingDataset",
    "load_dataset",
    "weight_traffic",
    "concat",
    "traffic_weight",
    "make_labels",
    "make_targets",
]

LABELS = ("benefit", "gain", "weak_wrong")
TRAFFIC = "traffic"  # the ``benchmark`` of rows that have none (traffic labels)
DEFAULT_TRAFFIC_SHARE = 0.5  # total weight of traffic rows / total weight of benchmark rows (default weighting)
MAX_TRAFFIC_WEIGHT = 4.0
"""The default per-row weight of traffic rows is capped here: a few noisy labels weighted like thousands of rows
overfit (`bench/learning.py --shift`: 100 STEM labels next to 8,750 prior rows gained +0.075 APGR at weight 1 and
+0.077 at weight 4, but +0.002 at the uncapped 43.75, whose fit was 5x slower)."""
DEFAULT_HOLD_OUT = 0.2  # share of the most recent timestamped rows `classifier train` leaves out for `promote`


def _filled(values: np.ndarray, n: int, fill: Any, dtype: Any) -> np.ndarray:
    return np.asarray(values, dtype=dtype) if len(values) == n else np.full(n, fill, dtype=dtype)


@dataclass(frozen=True)
class RoutingDataset:
    """Rows of routing data: prompt, per-model correctness, and per-row metadata.

    ``weak_known`` / ``strong_known`` say which side of a row is labelled (``False`` in
    ``weak_correct`` / ``strong_correct`` where unknown); ``weight`` is the training weight;
    ``ts`` is the row's unix time (NaN when absent).  Optional arrays left empty are filled with
    their defaults (subject ``""``, weight 1, both sides known, ts NaN).
    """

    prompts: list[str]
    benchmark: np.ndarray
    weak_correct: np.ndarray
    strong_correct: np.ndarray
    subject: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=float))
    weak_known: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    strong_known: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=float))

    def __post_init__(self) -> None:
        n = len(self.prompts)
        put = object.__setattr__
        put(self, "benchmark", np.asarray(self.benchmark, dtype=object))
        put(self, "weak_correct", np.asarray(self.weak_correct, dtype=bool))
        put(self, "strong_correct", np.asarray(self.strong_correct, dtype=bool))
        put(self, "subject", _filled(self.subject, n, "", object))
        put(self, "weight", _filled(self.weight, n, 1.0, float))
        put(self, "weak_known", _filled(self.weak_known, n, True, bool))
        put(self, "strong_known", _filled(self.strong_known, n, True, bool))
        put(self, "ts", _filled(self.ts, n, np.nan, float))
        arrays = (self.benchmark, self.weak_correct, self.strong_correct, self.subject, self.weight,
                  self.weak_known, self.strong_known, self.ts)
        if any(len(a) != n for a in arrays):
            raise ValueError("RoutingDataset arrays must all have one entry per prompt")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def both_known(self) -> np.ndarray:
        """Rows labelled on both sides (the only rows an evaluation can use)."""
        return self.weak_known & self.strong_known

    @property
    def is_traffic(self) -> np.ndarray:
        """Rows that came without a ``benchmark`` (traffic labels)."""
        return self.benchmark == TRAFFIC

    def subset(self, idx: np.ndarray) -> "RoutingDataset":
        """Rows at integer positions ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        return RoutingDataset(
            [self.prompts[i] for i in idx],
            self.benchmark[idx],
            self.weak_correct[idx],
            self.strong_correct[idx],
            self.subject[idx],
            self.weight[idx],
            self.weak_known[idx],
            self.strong_known[idx],
            self.ts[idx],
        )

    def with_weight(self, weight: np.ndarray) -> "RoutingDataset":
        """The same rows with other training weights."""
        return RoutingDataset(self.prompts, self.benchmark, self.weak_correct, self.strong_correct, self.subject,
                              np.asarray(weight, dtype=float), self.weak_known, self.strong_known, self.ts)


def _flag(row: dict[str, Any], key: str) -> tuple[bool, bool]:
    """(value, known) of a boolean label field; None / absent is unknown."""
    value = row.get(key)
    if value is None:
        return False, False
    if not isinstance(value, (bool, int)):
        raise TypeError(f"{key} must be true/false, got {value!r}")
    return bool(value), True


def load_dataset(path: str | Path) -> RoutingDataset:
    """Read one JSONL file of benchmark rows or traffic labels (see the module docstring)."""
    prompts: list[str] = []
    cols: dict[str, list[Any]] = {k: [] for k in ("bench", "weak", "wk", "strong", "sk", "subject", "ts")}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise TypeError("not a JSON object")
                prompt = row["prompt"]
                if not isinstance(prompt, str):
                    raise TypeError("prompt must be a string")
                weak, wk = _flag(row, "weak_correct")
                strong, sk = _flag(row, "strong_correct")
                if not (wk or sk):
                    raise KeyError("weak_correct / strong_correct (at least one)")
                ts = row.get("ts")
                ts = float(ts) if ts is not None else float("nan")
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: bad row ({exc})") from None
            prompts.append(prompt)
            cols["bench"].append(str(row.get("benchmark", TRAFFIC)))
            cols["weak"].append(weak)
            cols["wk"].append(wk)
            cols["strong"].append(strong)
            cols["sk"].append(sk)
            cols["subject"].append(str(row.get("subject", "")))
            cols["ts"].append(ts)
    if not prompts:
        raise ValueError(f"{path}: no rows")
    return RoutingDataset(
        prompts,
        np.asarray(cols["bench"], dtype=object),
        np.asarray(cols["weak"], dtype=bool),
        np.asarray(cols["strong"], dtype=bool),
        np.asarray(cols["subject"], dtype=object),
        np.ones(len(prompts)),
        np.asarray(cols["wk"], dtype=bool),
        np.asarray(cols["sk"], dtype=bool),
        np.asarray(cols["ts"], dtype=float),
    )


def concat(parts: list[RoutingDataset]) -> RoutingDataset:
    """All rows of ``parts``, in order."""
    if not parts:
        raise ValueError("no data")
    if len(parts) == 1:
        return parts[0]
    return RoutingDataset(
        [p for d in parts for p in d.prompts],
        *(np.concatenate([getattr(d, name) for d in parts]) for name in (
            "benchmark", "weak_correct", "strong_correct", "subject", "weight", "weak_known", "strong_known", "ts"
        )),
    )


def traffic_weight(
    data: RoutingDataset, share: float = DEFAULT_TRAFFIC_SHARE, cap: float = MAX_TRAFFIC_WEIGHT
) -> float:
    """Per-row weight of traffic rows so that together they weigh ``share`` x the benchmark rows.

    Never below 1 (plentiful traffic is not down-weighted) nor above ``cap`` (a few labels are not
    weighted like thousands of rows); 1 when there are no benchmark rows or no traffic rows.
    """
    n_traffic = int(data.is_traffic.sum())
    n_bench = len(data) - n_traffic
    if not n_traffic or not n_bench:
        return 1.0
    return min(cap, max(1.0, share * n_bench / n_traffic))


def weight_traffic(data: RoutingDataset, row_weight: float | None = None) -> tuple[RoutingDataset, float]:
    """``data`` with its traffic rows weighted, and the weight used.

    ``row_weight`` None: the default weighting (:func:`traffic_weight`); else that weight for
    every traffic row.  Benchmark rows keep their weight.
    """
    w = traffic_weight(data) if row_weight is None else float(row_weight)
    if not w > 0:
        raise ValueError(f"traffic weight must be > 0, got {row_weight}")
    if w == 1.0:
        return data, w
    return data.with_weight(np.where(data.is_traffic, w, data.weight)), w


def hold_out_recent(data: RoutingDataset, fraction: float) -> tuple[np.ndarray, float | None]:
    """Rows to train on, and the time from which rows are held out (None: nothing held out).

    The most recent ``fraction`` of the rows that carry a ``ts`` are held out: every row with
    ``ts >= cutoff``, where ``cutoff`` is the ts of the oldest held-out row.  Rows without ``ts``
    (benchmark data) are always trained on.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {fraction}")
    timed = np.flatnonzero(~np.isnan(data.ts))
    n_out = int(round(fraction * len(timed)))
    if n_out == 0:
        return np.arange(len(data)), None
    cutoff = float(np.sort(data.ts[timed])[len(timed) - n_out])
    keep = np.isnan(data.ts) | (data.ts < cutoff)
    return np.flatnonzero(keep), cutoff


def make_labels(data: RoutingDataset, label: str) -> np.ndarray:
    """Binary "strong model needed" target (also the CV stratification label).

    For ``"benefit"`` this is the ``"gain"`` label; the benefit router itself is
    fitted on the two targets of :func:`make_targets`.  Unknown sides count as False.
    """
    if label in ("gain", "benefit"):
        return ~data.weak_correct & data.strong_correct
    if label == "weak_wrong":
        return ~data.weak_correct
    raise ValueError(f"unknown label {label!r} (choose from {', '.join(LABELS)})")


def make_targets(data: RoutingDataset, label: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model-name suffix -> (binary target, rows where it is known) of each model fitted per family.

    ``""``: the single model of ``p_strong``; ``"+"`` / ``"-"``: the pair whose
    probability difference is the routing benefit (see :class:`classifier.model.RouterModel`).
    The "+" model learns from every row whose strong side is known, the "-" model from every row
    whose weak side is known (so one-sided feedback rows teach the side they know).
    """
    if label == "benefit":
        return {"+": (data.strong_correct.copy(), data.strong_known.copy()),
                "-": (data.weak_correct.copy(), data.weak_known.copy())}
    known = data.both_known if label == "gain" else data.weak_known.copy()
    return {"": (make_labels(data, label), known)}

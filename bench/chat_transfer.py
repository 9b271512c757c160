"""Does a chat-head design carry over to topics it never saw? Leave-subjects-out CV on the routing dev set.

    python bench/chat_transfer.py [--data ../shared/data/routing/dev.jsonl]

The chat head (`classifier/chathead.py`) scores prompts unlike any training row, so the figure that matters is
how it ranks rows of *subjects held out of its training* (57 MMLU subjects + GSM8K, dealt into 5 folds, seed 0),
not rows of subjects it saw. For each design (inputs x target) it prints APGR / CPT(50%) of the out-of-fold
scores pooled over both benchmarks (random: 0.50 / 50%), with subjects held out and with rows held out (the
usual CV, grouped by prompt), computed on the question text and truncations the shipped head uses
(`classifier.model.chat_inputs`, `RouterConfig.chat_*`). Targets: "benefit" = P(strong right) - P(weak right)
(two models, as the family models), "weak wrong" = P(weak model wrong) (the shipped head).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402

from classifier import metrics as M  # noqa: E402
from classifier.data import load_dataset  # noqa: E402
from classifier.fit import RouterConfig  # noqa: E402
from classifier.model import bundled_embedder, chat_inputs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/routing/dev.jsonl"))
    args = ap.parse_args()
    config = RouterConfig()
    data = load_dataset(args.data)
    w, s = data.weak_correct.astype(float), data.strong_correct.astype(float)
    inputs = [chat_inputs(p, config.chat_feature_chars, config.chat_embed_chars) for p in data.prompts]
    E = bundled_embedder().embed([q for q, _ in inputs]).astype(np.float64) * config.chat_embedding_scale
    G = np.asarray([f for _, f in inputs], dtype=np.float64)
    sd = G.std(axis=0)
    sd[sd == 0] = 1.0
    Z = np.clip((G - G.mean(axis=0)) / sd, -config.chat_clip, config.chat_clip)
    subjects = np.asarray([f"{b}/{x}" for b, x in zip(data.benchmark, data.subject)])
    names = np.random.RandomState(0).permutation(sorted(set(subjects)))
    fold_of = {n: i % 5 for i, n in enumerate(names)}
    by_subject = np.asarray([fold_of[n] for n in subjects])
    subject_folds = [(np.flatnonzero(by_subject != k), np.flatnonzero(by_subject == k)) for k in range(5)]
    strata = np.asarray([f"{b}|{int(v)}" for b, v in zip(data.benchmark, (1 - w) * s)])
    groups = np.unique(np.asarray(data.prompts, dtype=object), return_inverse=True)[1]
    row_folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(np.zeros(len(data)), strata, groups))

    def lr(X: np.ndarray, y: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=config.chat_C, max_iter=3000, random_state=config.seed).fit(X, y)

    def oof(X: np.ndarray, target: str, folds: list) -> np.ndarray:
        out = np.zeros(len(data))
        for tr, te in folds:
            if target == "weak wrong":
                out[te] = lr(X[tr], 1 - w[tr]).predict_proba(X[te])[:, 1]
            else:
                out[te] = (1 + lr(X[tr], s[tr]).predict_proba(X[te])[:, 1] - lr(X[tr], w[tr]).predict_proba(X[te])[:, 1]) / 2
        return out

    print(f"{len(data)} rows, {len(names)} subjects; C={config.chat_C}, embedded chars {config.chat_embed_chars}, "
          f"feature chars {config.chat_feature_chars}; load {os.getloadavg()[0]:.2f}")
    print(f"{'inputs':<22} {'target':<11} {'subjects held out':>20} {'rows held out':>16}")
    for label, X in (("features", Z), ("embedding", E), ("embedding + features", np.hstack([E, Z]))):
        for target in ("benefit", "weak wrong"):
            cells = []
            for folds in (subject_folds, row_folds):
                r = M.summarize(oof(X, target, folds), w, s)
                cells.append(f"{r['apgr']:.3f} / {r['cpt50']:.1%}")
            print(f"{label:<22} {target:<11} {cells[0]:>20} {cells[1]:>16}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

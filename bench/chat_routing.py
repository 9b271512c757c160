"""Open-chat routing: local share, score spread and decision latency of router models on unlabelled chat prompts.

    python bench/chat_routing.py [--model FILE ...] [--prompts JSONL] [--share 0.6] [--rounds 3]

For each model (default: the shipped one; pass `--model` twice to compare, e.g. main's file against this tree's):
the share of the prompts the default policy keeps local (score below the threshold calibrated for `--share`,
as `gateway/routing/calibration.py` computes it), that share per `category` of the prompt file, the score
spread (p10/p50/p90), the scores of a few easy and hard chat prompts written for this bench (not taken from any
data set), and `score_messages` latency in thread CPU microseconds (p50/p99), measured in alternating rounds so
that both models see the same machine load. The prompts are unlabelled: these are shares and spreads, not
quality. Default prompts: `../shared/data/chat/arena-hard-prompts.jsonl` beside the repo (Arena-Hard, 1,250).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from classifier import DEFAULT_MODEL_PATH, load_model  # noqa: E402
from gateway.routing.calibration import calibrate  # noqa: E402
from quantiles import quantile_line  # noqa: E402

EASY = ["Write a haiku about autumn leaves.", "What is the capital of France?", "Say hello in Spanish.",
        "Give me a synonym for happy.", "Tell me a joke about cats.", "What colour is the sky on a clear day?"]
HARD = ["Prove that there are infinitely many primes p such that p ≡ 3 (mod 4).",
        "Explain quantum entanglement and Bell's theorem, and why it does not allow faster-than-light signalling.",
        "Implement a lock-free multi-producer multi-consumer queue in C++ using std::atomic and explain the memory "
        "orderings.",
        "Derive the closed form of the integral of x^2 e^{-x} from 0 to infinity and show each step.",
        "Write a Python function that parses an arithmetic expression with operator precedence and parentheses, "
        "without eval, and analyse its complexity.",
        "A train leaves at 3:15 pm at 80 km/h; another leaves the same station at 4:00 pm at 110 km/h on the same "
        "track. When and where does the second catch up?"]


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _latency(model: object, prompts: list[str]) -> list[int]:
    out = []
    for p in prompts:
        msgs = _messages(p)
        t = time.thread_time_ns()
        model.score_messages(msgs)  # type: ignore[attr-defined]
        out.append(time.thread_time_ns() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None, help="router model file (repeatable)")
    ap.add_argument("--prompts", default=str(ROOT.parent / "shared/data/chat/arena-hard-prompts.jsonl"))
    ap.add_argument("--share", type=float, default=0.6, help="target_local_share of the policy (default 0.6)")
    ap.add_argument("--rounds", type=int, default=3, help="latency rounds per model, alternating")
    args = ap.parse_args()
    paths = [Path(p) for p in (args.model or [str(DEFAULT_MODEL_PATH)])]
    rows = [json.loads(line) for line in open(args.prompts, encoding="utf-8") if line.strip()]
    prompts = [r["prompt"] for r in rows]
    cats = [str(r.get("category", "")) for r in rows]
    models = [load_model(p) for p in paths]
    for p in prompts[:100]:
        for m in models:
            m.score_messages(_messages(p))
    print(f"prompts: {len(prompts)} from {Path(args.prompts).name}; load {os.getloadavg()[0]:.2f}")
    for path, model in zip(paths, models):
        threshold, source = calibrate(model, args.share)
        scores = np.array([model.score_messages(_messages(p)) for p in prompts])
        local = scores < threshold
        by_cat: dict[str, list[bool]] = defaultdict(list)
        for c, keep in zip(cats, local):
            by_cat[c if c in ("coding", "math", "creative_writing") else "other"].append(bool(keep))
        own = [model.score_messages(_messages(t)) for t in EASY + HARD]
        print(f"\n{path}  (chat head: {'yes' if getattr(model, 'chat_head', None) is not None else 'no'})")
        print(f"  threshold {threshold:.4f} ({source}, share {args.share:g}); local share {local.mean():.1%}")
        print("  local share by category: " + ", ".join(f"{c} {np.mean(v):.1%} (n={len(v)})" for c, v in sorted(by_cat.items())))
        q = np.quantile(scores, [0.1, 0.5, 0.9])
        print(f"  score p10/p50/p90 {q[0]:.4f} / {q[1]:.4f} / {q[2]:.4f}, sd {scores.std():.4f}")
        print("  easy (written for this bench): " + " ".join(f"{s:.4f}" for s in own[: len(EASY)]))
        print("  hard (written for this bench): " + " ".join(f"{s:.4f}" for s in own[len(EASY):]))
    times: list[list[int]] = [[] for _ in models]
    for _ in range(max(1, args.rounds)):
        for i, model in enumerate(models):
            times[i] += _latency(model, prompts)
    print("\nscore_messages latency, thread CPU (us), alternating rounds:")
    for path, t in zip(paths, times):
        print(f"  {path}: {quantile_line(t, scale=1e-3)}")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Router decision latency: one text at a time, in-process, one thread, features included.

Usage: python bench/classifier_latency.py [--model PATH] [--data JSONL] [-n 5000]

Prompts come from ``--data`` (default: ../shared/data/routing/dev.jsonl beside
the repo, if present) mixed with synthetic long chat messages; otherwise they
are synthetic only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from classifier import DEFAULT_MODEL_PATH, load_model  # noqa: E402
from quantiles import quantile_line  # noqa: E402

_WORDS = (
    "the of model gradient integral probability theorem energy market contract patient protein "
    "compute derive explain summarize translate python function error latency kubernetes cluster"
).split()


def _synthetic(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            words = rng.choices(_WORDS, k=rng.randint(5, 60))
            opts = "".join(f"\n{c}. " + " ".join(rng.choices(_WORDS, k=rng.randint(1, 8))) for c in "ABCD")
            out.append(" ".join(words) + "?" + opts + "\nAnswer:")
        elif kind < 0.8:
            nums = [str(rng.randint(1, 5000)) for _ in range(rng.randint(1, 8))]
            out.append("If Sam buys " + " and then ".join(f"{x} items" for x in nums) + ", how many in total?")
        else:  # long chat message (pasted logs/code), up to ~20k chars
            out.append(" ".join(rng.choices(_WORDS + ["{", "}", "=", "42", "3.14"], k=rng.randint(500, 4000))))
    return out


def _load_prompts(data: Path | None, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    prompts: list[str] = []
    if data is not None and data.is_file():
        with open(data, encoding="utf-8") as fh:
            real = [json.loads(line)["prompt"] for line in fh if line.strip()]
        prompts = rng.sample(real, min(len(real), int(n * 0.9)))
    prompts += _synthetic(rng, n - len(prompts))
    rng.shuffle(prompts)
    return prompts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(REPO_ROOT.parent / "shared/data/routing/dev.jsonl"))
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model_path = Path(args.model) if args.model else DEFAULT_MODEL_PATH
    t0 = time.perf_counter()
    model = load_model(model_path)
    load_ms = (time.perf_counter() - t0) * 1e3
    prompts = _load_prompts(Path(args.data) if args.data else None, args.n, args.seed)

    for p in prompts[:200]:  # warm-up
        model.score(p)
    wall, cpu = [], []
    for p in prompts:
        c = time.thread_time_ns()
        t = time.perf_counter_ns()
        model.score(p)
        wall.append(time.perf_counter_ns() - t)
        cpu.append(time.thread_time_ns() - c)

    lengths = sorted(len(p) for p in prompts)
    print(f"model: {model_path} ({model_path.stat().st_size / 1024:.0f} KiB), load {load_ms:.0f} ms")
    print(f"prompts: {len(prompts)} (chars p50 {lengths[len(lengths) // 2]}, max {lengths[-1]})")
    print(f"decision latency, wall (us):       {quantile_line(wall, scale=1e-3)}")
    print(f"decision latency, thread CPU (us): {quantile_line(cpu, scale=1e-3)}  (wall is inflated when the host is busy)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

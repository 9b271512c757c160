"""Router decision latency: one text at a time, in-process, one thread, features included.

Usage: python bench/classifier_latency.py [--model PATH] [--data JSONL] [-n 5000] [--messages]
       python bench/classifier_latency.py --baseline-tree /work/wt/base --messages [--rounds 3] [--data ...]
       python bench/classifier_latency.py --baseline-tree /work/wt/base --messages --rounds 4 -n 2000 --suite

Prompts come from ``--data`` (default: ../shared/data/routing/dev.jsonl beside
the repo, if present) mixed with synthetic long chat messages; otherwise they
are synthetic only. ``--messages`` times what the gateway runs, ``score_messages``
on the prompt as one user message (its cut of the text included), not ``score``.
``--baseline-tree`` runs this bench on the baseline tree's classifier and on this
tree's, in alternating rounds (one subprocess each), and prints both side by side (and the median of the rounds);
``--suite`` does that on the dev set, on Arena-Hard and on the dev prompts over 1,200 characters (``--min-chars``:
only the data's prompts longer than that, still mixed with 10% synthetic ones).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
if "--tree" in sys.argv:  # the classifier (and gateway) of another tree: its path first
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()))
else:
    sys.path.insert(0, str(REPO_ROOT))

from classifier import DEFAULT_MODEL_PATH, load_model  # noqa: E402
from procstat import load_average  # noqa: E402
from quantiles import quantile_line, quantiles  # noqa: E402

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


def _load_prompts(data: Path | None, n: int, seed: int, min_chars: int = 0) -> list[str]:
    rng = random.Random(seed)
    prompts: list[str] = []
    if data is not None and data.is_file():
        with open(data, encoding="utf-8") as fh:
            real = [p for line in fh if line.strip() and len(p := json.loads(line)["prompt"]) > min_chars]
        prompts = rng.sample(real, min(len(real), int(n * 0.9)))
    prompts += _synthetic(rng, n - len(prompts))
    rng.shuffle(prompts)
    return prompts


def _side_by_side(args: argparse.Namespace) -> int:
    """Alternating rounds, baseline tree then this one, each a subprocess of this bench with `--tree`."""
    bases = [Path(b).resolve() for b in args.baseline_tree]
    trees = {("baseline" if len(bases) == 1 else f"baseline {b.name}"): b for b in bases} | {"this tree": REPO_ROOT}
    width = max(map(len, trees))
    common = ["--data", args.data, "-n", str(args.n), "--seed", str(args.seed), "--json"]
    common += ["--min-chars", str(args.min_chars)]
    common += ["--messages"] if args.messages else []
    common += ["--model", args.model] if args.model else []
    print(f"decision latency, thread CPU (us), {'score_messages' if args.messages else 'score'}, "
          f"{args.rounds} alternating rounds; {Path(args.data).name}"
          f"{f' (prompts over {args.min_chars} characters)' if args.min_chars else ''}; load average {load_average()}")
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            out = subprocess.run([sys.executable, __file__, "--tree", str(tree), *common],
                                 check=True, capture_output=True, text=True).stdout
            got = json.loads(out.strip().splitlines()[-1])
            rounds[name].append(got["cpu_us"])
            cpu = "  ".join(f"{k} {v:.0f}" for k, v in got["cpu_us"].items())
            print(f"  round {r + 1} {name:<{width}} {cpu}   (wall p50 {got['wall_us']['p50']:.0f}; load {load_average()})")
    for name, got in rounds.items():
        med = {k: statistics.median(q[k] for q in got) for k in ("p50", "p99")}
        ranges = {k: f"{min(q[k] for q in got):.0f}-{max(q[k] for q in got):.0f}" for k in ("p50", "p99")}
        print(f"  median of rounds, {name:<{width}} p50 {med['p50']:.0f} ({ranges['p50']})  p99 {med['p99']:.0f} "
              f"({ranges['p99']})")
    return 0


def _suite(args: argparse.Namespace) -> int:
    """``--suite``: the side-by-side bench on the dev set, Arena-Hard and the dev prompts over the scoring cut."""
    shared = REPO_ROOT.parent / "shared/data"
    for data, min_chars in ((shared / "routing/dev.jsonl", 0), (shared / "chat/arena-hard-prompts.jsonl", 0),
                            (shared / "routing/dev.jsonl", 1200)):
        args.data, args.min_chars = str(data), min_chars
        _side_by_side(args)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(REPO_ROOT.parent / "shared/data/routing/dev.jsonl"))
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--messages", action="store_true", help="time score_messages (the gateway's path), not score")
    ap.add_argument("--baseline-tree", action="append", default=None,
                    help="run on that tree and this one, alternating rounds (repeat for several baselines)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-chars", type=int, default=0, help="only the data's prompts longer than this")
    ap.add_argument("--suite", action="store_true",
                    help="with --baseline-tree: dev set, Arena-Hard, and dev prompts over 1,200 characters")
    ap.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_tree:
        return _suite(args) if args.suite else _side_by_side(args)

    model_path = Path(args.model) if args.model else DEFAULT_MODEL_PATH
    t0 = time.perf_counter()
    model = load_model(model_path)
    load_ms = (time.perf_counter() - t0) * 1e3
    prompts = _load_prompts(Path(args.data) if args.data else None, args.n, args.seed, args.min_chars)
    if args.messages:
        score = model.score_messages
        inputs: list = [[{"role": "user", "content": p}] for p in prompts]
    else:
        score, inputs = model.score, prompts

    for x in inputs[:200]:  # warm-up
        score(x)
    wall, cpu = [], []
    for x in inputs:
        c = time.thread_time_ns()
        t = time.perf_counter_ns()
        score(x)
        wall.append(time.perf_counter_ns() - t)
        cpu.append(time.thread_time_ns() - c)

    if args.json:
        print(json.dumps({"wall_us": quantiles(wall, scale=1e-3), "cpu_us": quantiles(cpu, scale=1e-3)}))
        return 0
    lengths = sorted(len(p) for p in prompts)
    print(f"model: {model_path} ({model_path.stat().st_size / 1024:.0f} KiB), load {load_ms:.0f} ms")
    print(f"prompts: {len(prompts)} (chars p50 {lengths[len(lengths) // 2]}, max {lengths[-1]})")
    print(f"decision latency, wall (us):       {quantile_line(wall, scale=1e-3)}")
    print(f"decision latency, thread CPU (us): {quantile_line(cpu, scale=1e-3)}  (wall is inflated when the host is busy)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU of `LexicalGuard.signature` and `disagreement`, this tree against a baseline tree, alternating rounds.

Usage: python bench/guard_cost.py --baseline-tree /work/wt/base [--rounds 3]

Each round runs one subprocess per tree (that tree first on the path). The prompts (both sides of the labelled
pairs, Arena-Hard, the routing dev set) are shuffled (seed 1); a fresh guard first signs the first half (its word
memo warms up, as a running gateway's does), then each prompt of the second half (texts it has never seen) once,
timed with the thread's CPU clock. Printed per tree: p50/p99/mean µs per signature over all rounds (and over the labelled pairs' short prompts
among them), and µs per
`disagreement` of the labelled pairs' signatures; and the machine load.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAIRS = ROOT / "gateway/cache/data/semantic_pairs.jsonl"
DATA = [ROOT.parent.parent / "shared/data/chat/arena-hard-prompts.jsonl",
        ROOT.parent.parent / "shared/data/routing/dev.jsonl"]


def _child(tree: Path) -> None:
    sys.path.insert(0, str(tree))
    from gateway.cache.semantic import guard as module
    from gateway.cache.semantic.guard import LexicalGuard

    assert Path(module.__file__).resolve().is_relative_to(tree), module.__file__
    rows = [json.loads(line) for line in PAIRS.open(encoding="utf-8") if line.strip()]
    prompts = sorted({r[s] for r in rows for s in "ab"} | {json.loads(line)["prompt"] for path in DATA
                                                          for line in path.open(encoding="utf-8") if line.strip()})
    random.Random(1).shuffle(prompts)
    warm, timed = prompts[: len(prompts) // 2], prompts[len(prompts) // 2:]
    guard = LexicalGuard()
    for p in warm:
        guard.signature(p)
    clock = time.thread_time_ns
    short = {r[s] for r in rows for s in "ab"}
    costs, pair_costs = [], []
    for p in timed:
        t0 = clock()
        guard.signature(p)
        cost = clock() - t0
        costs.append(cost)
        if p in short:
            pair_costs.append(cost)
    sigs = [(guard.signature(r["a"]), guard.signature(r["b"])) for r in rows]
    t0 = clock()
    for _ in range(20):
        for a, b in sigs:
            guard.disagreement(a, b)
    agree_ns = (clock() - t0) / (20 * len(sigs))
    print(json.dumps({"costs": costs, "pair_costs": pair_costs, "agree_ns": agree_ns}))


def _q(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child)
        return 0
    if args.baseline_tree is None:
        ap.error("--baseline-tree is required")
    trees = {"baseline": args.baseline_tree.resolve(), "this": ROOT}
    results: dict[str, dict[str, list[float]]] = {name: {"costs": [], "pairs": [], "agree": []}
                                                      for name in trees}
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    for _ in range(args.rounds):
        for name, tree in trees.items():
            out = subprocess.run([sys.executable, str(HERE / "guard_cost.py"), "--child", str(tree)], check=True,
                                 capture_output=True, text=True, cwd=tree,
                                 env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}).stdout
            got = json.loads(out)
            results[name]["costs"] += [c / 1000 for c in got["costs"]]
            results[name]["pairs"] += [c / 1000 for c in got["pair_costs"]]
            results[name]["agree"].append(got["agree_ns"] / 1000)
    n = len(results["this"]["costs"]) // args.rounds
    print(f"{n} unseen prompts per round, {args.rounds} rounds (thread CPU µs)")
    for name, got in results.items():
        costs = got["costs"]
        print(f"  {name:8s} signature p50 {_q(costs, 0.5):7.1f}  p99 {_q(costs, 0.99):8.1f}  mean "
              f"{statistics.fmean(costs):7.1f}   disagreement {statistics.median(got['agree']):.2f}")
        pairs = got["pairs"]
        print(f"  {'':8s}   of them labelled-pair prompts (short, {len(pairs) // args.rounds}): p50 {_q(pairs, 0.5):6.1f}"
              f"  p99 {_q(pairs, 0.99):7.1f}  mean {statistics.fmean(pairs):6.1f}")
    base, this = results["baseline"]["costs"], results["this"]["costs"]
    print(f"  this/baseline: p50 {_q(this, 0.5) / _q(base, 0.5):.2f}  p99 {_q(this, 0.99) / _q(base, 0.99):.2f}  "
          f"mean {statistics.fmean(this) / statistics.fmean(base):.2f}")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

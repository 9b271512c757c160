"""CPU per upstream exchange of `OpenAIHTTPBackend` (the upstream client alone), side by side with a baseline checkout.

Starts the fake upstream (0 latency), then per round runs one child process per tree (alternating which goes
first) that drives that tree's `OpenAIHTTPBackend` in-process with --concurrency tasks for --duration seconds:

  complete  `complete()`: one POST, the answer read and its model and usage decoded
  stream    `stream()`: one streamed POST (usage requested), every chunk vetted, to `[DONE]`

and prints req/s and the child's CPU per exchange (user + system, ms), per round and as the median over rounds.
No HTTP server, router or cache is in the loop: the figure is the upstream client's own cost plus the
kernel's loopback send, so it moves much less with the machine's load than a whole-gateway run.

    python bench/upstream_cpu.py --baseline-tree /work/wt/base [--rounds 3] [--duration 3] [--kinds complete stream]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("complete", "stream")
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}'


async def _drive(kind: str, base_url: str, seconds: float, concurrency: int) -> tuple[float, float]:
    """req/s and CPU ms per exchange of this process's `OpenAIHTTPBackend` (run in the child)."""
    from gateway.openai.request import parse_chat_request
    from gateway.tiers.http import OpenAIHTTPBackend

    backend = OpenAIHTTPBackend("upstream", base_url, "sk-bench")
    request = parse_chat_request(BODY if kind == "complete" else BODY[:-1] + b',"stream":true}')
    done = 0
    running = True

    async def loop() -> None:
        nonlocal done
        while running:
            if kind == "stream":
                async for _ in backend.stream(request, "gpt-4o-mini", "req-1"):
                    pass
            else:
                await backend.complete(request, "gpt-4o-mini", "req-1")
            done += 1

    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    await asyncio.sleep(1.0)  # warm-up: pool filled
    start_done, start_cpu, start = done, time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    count, cpu, wall = done - start_done, time.process_time() - start_cpu, time.monotonic() - start
    running = False
    await asyncio.gather(*tasks)
    await backend.close()
    return count / wall, 1000 * cpu / max(count, 1)


def _run_child(tree: Path, kind: str, base_url: str, args: argparse.Namespace) -> tuple[float, float]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind, base_url,
            "--duration", str(args.duration), "--concurrency", str(args.concurrency)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.duration + 60, check=True)
    rate, cpu = out.stdout.split()
    return float(rate), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-tree", type=Path, help="a checkout to run side by side (e.g. main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="recorded seconds per run (<= 30)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--child", nargs=2, metavar=("KIND", "BASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rate, cpu = asyncio.run(_drive(args.child[0], args.child[1], args.duration, args.concurrency))
        print(f"{rate:.1f} {cpu:.5f}")
        return
    args.duration = min(args.duration, 30.0)
    sys.path.insert(1, str(ROOT))
    from gateway.devtools.process import run_fake_upstream

    trees = [("this", ROOT)] + ([("baseline", args.baseline_tree.resolve())] if args.baseline_tree else [])
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    print(f"upstream client CPU per exchange, {args.concurrency} tasks, {args.duration:g} s per run")
    with run_fake_upstream() as base_url:
        for round_no in range(1, args.rounds + 1):
            order = trees if round_no % 2 else trees[::-1]
            for kind in args.kinds:
                for label, tree in order:
                    rate, cpu = _run_child(tree, kind, base_url, args)
                    results.setdefault((kind, label), []).append((rate, cpu))
                    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                    print(f"round {round_no} {label:8s} {kind:8s} {rate:7.0f} req/s  cpu {cpu:.4f} ms/req"
                          f"  (load {load})")
    print(f"\nmedian of {args.rounds} rounds; load now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'kind':9s} {'tree':9s} {'req/s':>7s} {'cpu ms/req':>10s}  rounds")
    for kind in args.kinds:
        for label, _ in trees:
            runs = results[(kind, label)]
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"{kind:9s} {label:9s} {rate:7.0f} {cpu:10.4f}  [{', '.join(f'{c:.4f}' for _, c in runs)}]")


if __name__ == "__main__":
    main()

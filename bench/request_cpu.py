"""The gateway's own CPU per chat request through HTTP, side by side with a baseline checkout.

Starts the fake upstream (0 latency) and, per round, a gateway from this checkout and one from --baseline-tree
(alternating which goes first), each with the exact response cache on --redis-url. Each gateway is loaded open
loop at --rate req/s (bench/loadgen.py) with, in turn:

  relay         pinned upstream, not cacheable (as bench/overhead.py): parse, route, relay, account
  relay-stream  the same streamed (`stream_options.include_usage`)
  hit           an exact cache hit (`x-gateway-cache: exact`, stored by one warm-up request)
  hit-stream    the same streamed
  hit-auto      an exact hit routed by the policy (not pinned: the classifier scores the prompt first)

and prints p50/p99 (ms, from the scheduled send time) and the gateway process group's CPU per request
(user + system, over the warm-up and recorded seconds), then the same kind as a closed loop (wrk, 32
connections, --duration seconds): req/s and CPU per request (the process runs hot there, so this figure moves
less with the machine's load than the open loop's); per round and as the median over rounds.

    python bench/request_cpu.py --baseline-tree /work/wt/base --redis-url redis://127.0.0.1:6405/0 \
        [--rounds 3] [--duration 5] [--rate 320] [--kinds relay hit]

Only keys under this script's cache prefix are deleted from that Redis (before and after).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import httpx  # noqa: E402
import procstat  # noqa: E402
import redis  # noqa: E402
from loadgen import Target, closed_loop_wrk, open_loop, run_async  # noqa: E402

from gateway.devtools.process import ServerProcess, free_port, run_fake_upstream, spawn_server  # noqa: E402

PREFIX = "bench:request-cpu"
PIN = {"x-gateway-route": "upstream"}
KINDS: dict[str, tuple[dict[str, str], bool]] = {
    "relay": (PIN, False),
    "relay-stream": (PIN, True),
    "hit": ({**PIN, "x-gateway-cache": "exact"}, False),
    "hit-stream": ({**PIN, "x-gateway-cache": "exact"}, True),
    "hit-auto": ({"x-gateway-cache": "exact"}, False),
}


@contextmanager
def gateway(tree: Path, upstream: str, redis_url: str) -> Iterator[tuple[str, ServerProcess]]:
    """`python -m gateway serve` from `tree` with the exact cache on `redis_url`: (base URL, server)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="request-cpu-") as tmp:
        config = Path(tmp) / "gateway.yaml"
        config.write_text(json.dumps({"cache": {"key_prefix": PREFIX}}))
        argv = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--upstream-url", upstream, "--redis-url", redis_url, "--config", str(config), "--log-level", "warning"]
        with spawn_server(argv, f"http://127.0.0.1:{port}/readyz", timeout=120, env={"PYTHONPATH": str(tree)},
                          cwd=tree) as server:
            yield f"http://127.0.0.1:{port}/v1", server


def measure(base: str, server: ServerProcess, kind: str, rate: float, duration: float) -> dict[str, float]:
    """One open-loop run of `kind`: p50, p99 (ms), CPU ms per request, errors."""
    headers, stream = KINDS[kind]
    target = Target(base, headers=dict(headers), stream=stream)
    warm = httpx.post(target.url, content=target.body(), headers={**headers, "content-type": "application/json"},
                      timeout=30)
    warm.raise_for_status()
    cpu0 = procstat.group_cpu_seconds(server.pid)
    result = run_async(lambda: open_loop(target, rate=rate, duration=duration, max_connections=32))
    cpu = procstat.group_cpu_seconds(server.pid) - cpu0
    served = result.sent + int(rate)  # the recorded requests and the 1 s warm-up before them
    s = result.stats()
    # then a closed loop (wrk, 32 connections): the process runs hot, so its CPU per request moves less with load
    cpu0 = procstat.group_cpu_seconds(server.pid)
    closed = closed_loop_wrk(target, connections=32, duration=duration, warmup=0)
    closed_cpu = procstat.group_cpu_seconds(server.pid) - cpu0
    return {"p50": s["p50"], "p99": s["p99"], "cpu_ms": 1000 * cpu / served, "errors": result.error_count,
            "closed_cpu_ms": 1000 * closed_cpu / max(closed.ok, 1), "closed_rps": closed.achieved_rate}


def clear(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{PREFIX}:*", count=1000))
    if keys:
        r.delete(*keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-tree", type=Path, help="a checkout to run side by side (e.g. main)")
    parser.add_argument("--redis-url", required=True, help="Redis for the exact cache (a private server)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="recorded seconds per run (<= 30)")
    parser.add_argument("--rate", type=float, default=320.0)
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 30 or not 0 < args.rounds <= 10:
        parser.error("--duration must be in (0, 30] and --rounds in (0, 10]")
    trees = {"this": ROOT} | ({"baseline": args.baseline_tree.resolve()} if args.baseline_tree else {})
    figures: dict[tuple[str, str], list[dict[str, float]]] = {}
    print(f"machine: {procstat.machine_line()}; rate {args.rate:.0f}/s, {args.duration:.0f} s per run", flush=True)
    clear(args.redis_url)
    try:
        with run_fake_upstream() as upstream:
            for round_no in range(args.rounds):
                names = list(trees) if round_no % 2 == 0 else list(reversed(trees))
                for name in names:
                    with gateway(trees[name], upstream, args.redis_url) as (base, server):
                        for kind in args.kinds:
                            f = measure(base, server, kind, args.rate, args.duration)
                            figures.setdefault((kind, name), []).append(f)
                            print(f"round {round_no + 1} {name:<8} {kind:<12} p50 {f['p50']:6.2f}  p99 {f['p99']:7.2f}"
                                  f"  cpu {f['cpu_ms']:.3f} ms/req | closed {f['closed_rps']:6.0f} req/s "
                                  f"cpu {f['closed_cpu_ms']:.3f} ms/req  errors {f['errors']:.0f}  "
                                  f"(load {procstat.load_average()})", flush=True)
                            time.sleep(0.5)
    finally:
        clear(args.redis_url)
    print(f"\nmedian of {args.rounds} rounds (per-round CPU ms/req in brackets), load now {procstat.load_average()}")
    print(f"{'kind':<12} {'tree':<8} {'p50':>6} {'p99':>7} {'cpu ms/req':>10}  {'rounds':<22} {'closed r/s':>10} "
          f"{'closed cpu':>10}  rounds")
    for (kind, name), runs in sorted(figures.items(), key=lambda kv: (args.kinds.index(kv[0][0]), kv[0][1] != "baseline")):
        med = {k: statistics.median(r[k] for r in runs) for k in ("p50", "p99", "cpu_ms", "closed_rps", "closed_cpu_ms")}
        per = "[" + ", ".join(f"{r['cpu_ms']:.3f}" for r in runs) + "]"
        per_closed = ", ".join(f"{r['closed_cpu_ms']:.3f}" for r in runs)
        print(f"{kind:<12} {name:<8} {med['p50']:6.2f} {med['p99']:7.2f} {med['cpu_ms']:10.3f}  {per:<22} "
              f"{med['closed_rps']:10.0f} {med['closed_cpu_ms']:10.3f}  [{per_closed}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What one Redis command costs this process: redis-py's asyncio client vs `gateway.resp.PipelinedRedis`.

    python bench/redis_client.py                          # 20,000 commands per run, 3 rounds
    python bench/redis_client.py --commands 50000 --rounds 5 --redis-url redis://127.0.0.1:6379/6

The reason docs/limits.md gives for the limit store's own connection class: the CPU this process spends per
command (`time.process_time`, so Redis' own time and the wait are left out) and the wall time per command, for
the same commands over the same Redis, alternating the two clients in each round:

- `sequential`: one `EVALSHA` (a tiny script, as a limit check sends) at a time, awaited before the next;
- `concurrent`: 32 tasks each sending their commands one after the other (what a busy replica does: many
  checks in flight at once).

redis-py's client is the one `gateway/redis_link.py` builds for the cache (`redis_client`: a blocking pool of 32
connections, timeouts of 0.5 s), with hiredis installed (its parser then uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from procstat import load_average, machine_line  # noqa: E402

SCRIPT = "return redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])"
CONCURRENCY = 32


async def measure(call: Callable[[], Awaitable[Any]], commands: int, concurrent: bool) -> tuple[float, float]:
    """(CPU µs, wall µs) per command."""
    for _ in range(200):  # warm up
        await call()
    cpu, wall = time.process_time(), time.perf_counter()
    if concurrent:
        async def worker(n: int) -> None:
            for _ in range(n):
                await call()
        await asyncio.gather(*(worker(commands // CONCURRENCY) for _ in range(CONCURRENCY)))
        done = commands // CONCURRENCY * CONCURRENCY
    else:
        for _ in range(commands):
            await call()
        done = commands
    return (time.process_time() - cpu) * 1e6 / done, (time.perf_counter() - wall) * 1e6 / done


async def run(url: str, commands: int, rounds: int) -> list[dict[str, tuple[float, float]]]:
    import redis

    from gateway.resp import PipelinedRedis
    from gateway.redis_link import redis_client

    sha = redis.Redis.from_url(url).script_load(SCRIPT)
    key = "slmgw:bench-redis-client"
    py = redis_client(url, timeout_seconds=0.5, max_connections=CONCURRENCY)
    own = PipelinedRedis(url)
    clients: dict[str, Callable[[], Awaitable[Any]]] = {
        "redis-py": lambda: py.evalsha(sha, 1, key, 1),
        "PipelinedRedis": lambda: own.execute("EVALSHA", sha, 1, key, 1),
    }
    out = []
    try:
        for _ in range(rounds):
            row: dict[str, tuple[float, float]] = {}
            for mode in ("sequential", "concurrent"):
                for name, call in clients.items():
                    row[f"{name} {mode}"] = await measure(call, commands, mode == "concurrent")
            out.append(row)
    finally:
        await py.aclose()
        await own.close()
        redis.Redis.from_url(url).delete(key)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()
    import redis

    print(f"machine: {machine_line()}; redis-py {redis.__version__}; load average before: {load_average()}")
    rounds = asyncio.run(run(args.redis_url, args.commands, args.rounds))
    print(f"{args.commands} EVALSHA per run, {args.rounds} rounds; per command: CPU of this process / wall (µs)")
    for name in rounds[0]:
        cpu = statistics.median(r[name][0] for r in rounds)
        wall = statistics.median(r[name][1] for r in rounds)
        runs = ", ".join(f"{r[name][0]:.1f}/{r[name][1]:.1f}" for r in rounds)
        print(f"  {name:<28} median CPU {cpu:6.1f} µs, wall {wall:6.1f} µs   (runs: {runs})")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A replica's first lookups of a large semantic scope after a restart: the event loop's longest stall, this tree
against a baseline tree.

Usage: python bench/cold_mirror.py --baseline-tree /work/wt/base [--rows 1024 20000] [--rounds 3]
                                   [--redis-url redis://127.0.0.1:6379/13]

Per round and tree, in a subprocess (that tree first on the path): a writer `RedisVectorIndex` stores --rows
random unit vectors in one scope (a Redis stream), then a second index on the same prefix (a replica that just
started, its mirror cold) takes the scope's first lookup (`class_rows`: the catch-up, 256 rows a round trip) and
first search, then 50 more searches. A 1 ms ticker measures the event loop's longest gap meanwhile: what every
other request in flight waits for. Printed per tree: the longest gap during the catch-up, the first search's
time, the longest gap over both, and the median of the later searches (ms, medians over rounds). Only keys under
this script's prefix are deleted (before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PREFIX = "bench:cold-mirror"
SCOPE = "t-bench:sem:cold"
DIM = 256


FIELDS = ("catch_up_gap", "first_search", "longest_gap", "later_search", "built_gap", "built_s")


class Ticker:
    """The event loop's longest gap between 1 ms ticks while it runs."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = time.perf_counter()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - self._last)
            self._last = now

    def restart(self) -> None:
        self.longest, self._last = 0.0, time.perf_counter()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def _measure(url: str, rows: int, ann_min_rows: int) -> dict[str, float]:
    import numpy as np
    import redis.asyncio as aioredis

    from gateway.cache.semantic.redis_index import RedisVectorIndex

    client = aioredis.Redis.from_url(url)
    async for key in client.scan_iter(f"{PREFIX}:*"):
        await client.delete(key)
    rng = np.random.default_rng(rows)
    vectors = rng.standard_normal((rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def index() -> RedisVectorIndex:
        return RedisVectorIndex(url, DIM, prefix=PREFIX, max_rows_per_scope=rows + 16, max_mirrored_vectors=rows + 16,
                                sync_interval_seconds=0.1, ann_min_rows=ann_min_rows, timeout_seconds=2.0)

    writer = index()
    await writer.start()
    for start in range(0, rows, 256):
        await asyncio.gather(*(writer.add_soon(SCOPE, f"k{i}", vectors[i], b"", 600_000)
                               for i in range(start, min(rows, start + 256))))
    await writer.close()
    replica = index()
    await replica.start()
    ticker = Ticker()
    ticker.restart()
    await asyncio.sleep(0.01)
    ticker.restart()
    caught_up_from = time.perf_counter()
    await replica.class_rows(SCOPE, ())
    catch_up_gap = ticker.longest
    started = time.perf_counter()
    await replica.search(SCOPE, vectors[7], 4)
    first = time.perf_counter() - started
    await asyncio.sleep(0.005)
    overall = max(catch_up_gap, ticker.longest)
    later = []
    for i in range(50):
        await asyncio.sleep(0)  # a search of a caught-up mirror need not yield: the ticker's gaps are one search's
        started = time.perf_counter()
        await replica.search(SCOPE, vectors[(i * 97) % rows], 4)
        later.append(time.perf_counter() - started)
    await replica.builds.wait()  # the approximate index's builds (with --ann-min-rows), installed on the loop
    built = {"built_gap": max(overall, ticker.longest) * 1000, "built_s": time.perf_counter() - caught_up_from}
    ticker.stop()
    await replica.close()
    async for key in client.scan_iter(f"{PREFIX}:*"):
        await client.delete(key)
    await client.aclose()
    return {"catch_up_gap": catch_up_gap * 1000, "first_search": first * 1000, "longest_gap": overall * 1000,
            "later_search": statistics.median(later) * 1000, **built}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", type=Path)
    ap.add_argument("--rows", type=int, nargs="+", default=[1024, 20_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ann-min-rows", type=int, default=0,
                    help="give scopes this large the approximate index (0: exact scans only, as before); then also "
                         "the longest gap until its builds are installed (built_gap) and how long that took (built_s)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        sys.path.insert(0, str(args.child))
        print(json.dumps({rows: asyncio.run(_measure(args.redis_url, rows, args.ann_min_rows)) for rows in args.rows}))
        return 0
    if args.baseline_tree is None:
        ap.error("--baseline-tree is required")
    trees = {"this": ROOT, "baseline": args.baseline_tree.resolve()}
    got: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    for round_no in range(args.rounds):
        for name, tree in (trees.items() if round_no % 2 == 0 else reversed(trees.items())):
            argv = [sys.executable, str(HERE / "cold_mirror.py"), "--child", str(tree), "--redis-url", args.redis_url,
                    "--rows", *map(str, args.rows), "--ann-min-rows", str(args.ann_min_rows)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=tree,
                                 env={**os.environ, "PYTHONPATH": str(tree)}).stdout
            got[name].append(json.loads(out))
    print(f"ms, medians of {args.rounds} rounds: the longest event-loop gap during a cold mirror's catch-up, the "
          "first search, the longest gap over both, a later search")
    for rows in args.rows:
        for name in trees:
            runs = [run[str(rows)] for run in got[name]]
            cells = "  ".join(f"{field} {statistics.median(r[field] for r in runs):8.2f}"
                              for field in FIELDS[: 6 if args.ann_min_rows else 4])
            print(f"  {rows:>7,} rows  {name:<8}  {cells}")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

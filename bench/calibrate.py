"""How much the load generator itself costs: both engines against the fake upstream alone.

Prints the open-loop client's CPU share and send lag at the offered rate, and closed-loop req/s
with wrk and with the Python engine (their gap is the Python client's overhead), next to the fake
upstream's own CPU time per request.

    python bench/calibrate.py [--rate 320] [--connections 32] [--duration 5]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial

import procstat
from loadgen import Target, closed_loop, closed_loop_wrk, open_loop, run_async
from overhead import fake_upstream
from wrk import available as wrk_available


def main(argv: Sequence[str] | None = None) -> int:
    """Run the calibration and print it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=320.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args(argv)
    if not 0 < args.duration <= 60:
        p.error("--duration must be in (0, 60]")
    print(f"machine: {procstat.machine_line()}; load average {procstat.load_average()}")
    with fake_upstream(0.0) as (url, server):
        for stream in (False, True):
            target = Target(url, stream=stream)
            print(run_async(partial(open_loop, target, rate=args.rate, duration=args.duration)).summary())
        target = Target(url)
        engines = ["python"] + (["wrk"] if wrk_available() else [])
        for engine in engines:
            cpu0 = procstat.group_cpu_seconds(server.pid)
            if engine == "wrk":
                result = closed_loop_wrk(target, connections=args.connections, duration=args.duration, warmup=0)
            else:
                result = run_async(partial(closed_loop, target, connections=args.connections,
                                           duration=args.duration, warmup=0))
            cpu = procstat.group_cpu_seconds(server.pid) - cpu0
            print(result.summary())
            if result.engine == "python":
                print(f"  client CPU {result.client_cpu_s:.2f}s = {1e6 * result.client_cpu_s / max(result.ok, 1):.0f} us/request")
            print(f"  fake upstream CPU {1e6 * cpu / max(result.ok, 1):.0f} us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())

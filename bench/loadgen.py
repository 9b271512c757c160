"""Load generator for any OpenAI-compatible base URL (loopback only).

Open loop: requests go out at a fixed offered rate (evenly spaced or Poisson) whatever the server
does, and each latency counts from the request's SCHEDULED send time, so queueing shows.
Closed loop: C connections each send the next request as soon as the previous answer is in
(wrk by default, or the Python engine).

    python bench/loadgen.py open   --url http://127.0.0.1:9000/v1 --rate 320 --duration 10 [--stream]
    python bench/loadgen.py closed --url http://127.0.0.1:9000/v1 --connections 32 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rawhttp import ConnectionClosed, Pool, encode_request, fetch
from wrk import run_wrk

T = TypeVar("T")

DEFAULT_PROMPT = (
    "You are helping with a benchmark. Summarise in one short sentence why keep-alive connections "
    "reduce latency for small HTTP requests between two services on the same machine."
)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Target:
    """What to load: an OpenAI-compatible base URL (ending in /v1), model, extra headers, stream or not."""

    base_url: str
    model: str = "gpt-4o-mini"
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    prompt: str = DEFAULT_PROMPT

    def __post_init__(self) -> None:
        host = urlsplit(self.base_url).hostname or ""
        if host not in LOOPBACK_HOSTS and not host.startswith("127."):
            raise ValueError(f"refusing to load a non-loopback target: {self.base_url}")

    @property
    def url(self) -> str:
        """The chat completions URL."""
        return self.base_url.rstrip("/") + "/chat/completions"

    def body(self) -> bytes:
        """The JSON request body."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": self.prompt}],
            "max_tokens": 64,
        }
        if self.stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return json.dumps(payload, separators=(",", ":")).encode()

    def raw_request(self) -> bytes:
        """The whole HTTP request, encoded once."""
        return encode_request(self.url, self.body(), self.headers)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class RunResult:
    """Outcome of one load run; latencies in milliseconds."""

    mode: str
    stream: bool
    duration: float
    engine: str = "python"
    offered_rate: float = 0.0
    connections: int = 0
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    send_lag: list[float] = field(default_factory=list)
    achieved_rate: float = 0.0
    client_cpu_s: float = 0.0
    fixed: dict[str, float] = field(default_factory=dict)

    def stats(self, values: list[float] | None = None) -> dict[str, float]:
        """p50/p90/p99/max (ms) of `values` (default: latencies); wrk runs carry them precomputed."""
        if values is None and self.fixed:
            return dict(self.fixed)
        data = sorted(self.latencies if values is None else values)
        return {"p50": percentile(data, 50), "p90": percentile(data, 90), "p99": percentile(data, 99),
                "max": data[-1] if data else math.nan}

    @property
    def error_count(self) -> int:
        """All failed requests."""
        return sum(self.errors.values())

    def summary(self) -> str:
        """One readable paragraph."""
        s = self.stats()
        kind = "stream" if self.stream else "non-stream"
        load = f"offered {self.offered_rate:.0f}/s" if self.mode == "open" else f"{self.connections} connections"
        lines = [
            (f"{self.mode}-loop {kind} [{self.engine}] {load}, {self.duration:.0f}s: "
             f"ok {self.ok}, errors {self.error_count}{_fmt_errors(self.errors)}, "
             f"achieved {self.achieved_rate:.1f} req/s"),
            f"  latency{' (to last byte)' if self.stream else ''} ms: " + _fmt_stats(s),
        ]
        if self.stream and self.ttfb:
            lines.append("  ttfb (first body byte) ms: " + _fmt_stats(self.stats(self.ttfb)))
        if self.send_lag:
            lag = self.stats(self.send_lag)
            lines.append(f"  send lag ms (client timer + wait for a pooled connection): p50 {lag['p50']:.2f} p99 {lag['p99']:.2f}; "
                         f"client CPU {self.client_cpu_s:.2f}s ({100 * self.client_cpu_s / max(self.duration, 1e-9):.0f}%)")
        return "\n".join(lines)


def _fmt_stats(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.2f}  p90 {s['p90']:.2f}  p99 {s['p99']:.2f}  max {s['max']:.2f}"


def _fmt_errors(errors: Counter[str]) -> str:
    return f" ({', '.join(f'{k}: {v}' for k, v in errors.most_common())})" if errors else ""


def arrival_offsets(count: int, rate: float, *, poisson: bool, seed: int = 0) -> list[float]:
    """Send times (seconds from start) of `count` requests at `rate` per second."""
    if not poisson:
        return [i / rate for i in range(count)]
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        out.append(t)
        t += rng.expovariate(rate)
    return out


async def open_loop(target: Target, *, rate: float, duration: float, poisson: bool = False, warmup: float = 1.0,
                    max_connections: int = 256, prewarm: int = 16, drain_timeout: float = 10.0,
                    seed: int = 0) -> RunResult:
    """Offer `rate` req/s for `warmup` + `duration` seconds; only the last `duration` seconds are recorded.

    Each latency counts from the scheduled send time (from the actual send when the timer fired a
    little early), so a server that falls behind shows its queueing delay. Requests still open
    `drain_timeout` seconds after the last send count as timeouts.
    """
    pool = Pool.for_url(target.url, max_connections)
    await pool.warm(prewarm)
    raw = target.raw_request()
    n_warm, n = int(warmup * rate), max(1, int(duration * rate))
    offsets = arrival_offsets(n_warm + n, rate, poisson=poisson, seed=seed)
    result = RunResult("open", target.stream, duration, offered_rate=rate)
    first_recorded: list[float] = []
    last_done = 0.0

    async def one(index: int, scheduled: float) -> None:
        nonlocal last_done
        try:
            reply = await fetch(pool, raw)
        except (ConnectionClosed, OSError) as exc:
            if index >= n_warm:
                result.errors[type(exc).__name__] += 1
            return
        if index < n_warm:
            return
        start = min(scheduled, reply.sent)
        if reply.status >= 400:
            result.errors[f"HTTP {reply.status}"] += 1
            return
        result.ok += 1
        result.latencies.append((reply.done - start) * 1000)
        result.send_lag.append(max(0.0, reply.sent - scheduled) * 1000)
        if target.stream:
            result.ttfb.append((reply.first_byte - start) * 1000)
        last_done = max(last_done, reply.done)

    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    early = 0.0005  # send up to 0.5 ms early rather than late: timers here tick in milliseconds
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.01
    for i, offset in enumerate(offsets):
        scheduled = t0 + offset
        delay = scheduled - time.perf_counter() - early
        if delay > 0:
            await asyncio.sleep(delay)
        if i == n_warm:
            first_recorded.append(scheduled)
        tasks.append(loop.create_task(one(i, scheduled)))
        if i >= n_warm:
            result.sent += 1
    _, pending = await asyncio.wait(tasks, timeout=drain_timeout) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    result.errors.update({"timeout": len(pending)} if pending else {})
    await asyncio.gather(*pending, return_exceptions=True)
    result.client_cpu_s = time.process_time() - cpu0
    pool.close()
    if first_recorded and last_done > first_recorded[0]:
        result.achieved_rate = result.ok / max(last_done - first_recorded[0], duration)
    return result


async def closed_loop(target: Target, *, connections: int, duration: float, warmup: float = 1.0) -> RunResult:
    """`connections` workers, each with its own keep-alive connection, back to back for `duration` s."""
    pool = Pool.for_url(target.url, connections)
    await pool.warm(connections)
    raw = target.raw_request()
    result = RunResult("closed", target.stream, duration, connections=connections)
    begin = time.perf_counter() + warmup
    end = begin + duration

    async def worker() -> None:
        while True:
            now = time.perf_counter()
            if now >= end:
                return
            try:
                reply = await fetch(pool, raw)
            except (ConnectionClosed, OSError) as exc:
                if now >= begin:
                    result.errors[type(exc).__name__] += 1
                continue
            if reply.sent < begin or reply.done > end:
                continue
            if reply.status >= 400:
                result.errors[f"HTTP {reply.status}"] += 1
                continue
            result.ok += 1
            result.latencies.append((reply.done - reply.sent) * 1000)
            if target.stream:
                result.ttfb.append((reply.first_byte - reply.sent) * 1000)

    cpu0 = time.process_time()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(connections))), warmup + duration + 30)
    result.client_cpu_s = time.process_time() - cpu0
    result.achieved_rate = result.ok / duration
    result.sent = result.ok + result.error_count
    pool.close()
    return result


async def settle(target: Target, *, answer_within: float = 1.0, max_wait: float = 60.0) -> float:
    """Send one request at a time until one is answered (2xx) within `answer_within` seconds.

    Lets an overloaded server work off its backlog before the next run, so runs don't pollute each
    other. Returns the seconds waited; raises RuntimeError on an HTTP error or after `max_wait`.
    """
    pool = Pool.for_url(target.url, 1)
    raw = target.raw_request()
    start = time.perf_counter()
    try:
        while True:
            left = max_wait - (time.perf_counter() - start)
            if left <= 0:
                raise RuntimeError(f"{target.url} still slower than {answer_within}s after {max_wait:.0f}s")
            try:
                reply = await asyncio.wait_for(fetch(pool, raw), left)
            except asyncio.TimeoutError:
                continue
            if reply.status >= 400:
                raise RuntimeError(f"{target.url} answered HTTP {reply.status}")
            if reply.done - reply.sent <= answer_within:
                return time.perf_counter() - start
    finally:
        pool.close()


def closed_loop_wrk(target: Target, *, connections: int, duration: float, warmup: float = 1.0,
                    threads: int = 1) -> RunResult:
    """The same closed loop driven by wrk (lighter on the CPU than Python); a short unrecorded warm-up first."""
    body = target.body()
    if warmup > 0:
        run_wrk(target.url, body, target.headers, connections=connections, duration=warmup, threads=threads)
    out = run_wrk(target.url, body, target.headers, connections=connections, duration=duration, threads=threads)
    errors: Counter[str] = Counter({k: int(v) for k, v in dict(out["errors"]).items() if v})  # type: ignore[call-overload]
    total = int(out["requests"])  # type: ignore[call-overload]
    seconds = int(out["duration_us"]) / 1e6  # type: ignore[call-overload]
    result = RunResult("closed", target.stream, seconds, engine="wrk", connections=connections, sent=total,
                       ok=total - errors.get("status", 0), errors=errors)
    result.achieved_rate = result.ok / seconds if seconds else 0.0
    result.fixed = {k: int(out[k]) / 1000 for k in ("p50", "p90", "p99", "max")}  # type: ignore[call-overload]
    return result


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(factory())
    return uvloop.run(factory())


def _parse_headers(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep:
            raise SystemExit(f"bad --header {pair!r}: expected 'Name: value'")
        out[name.strip().lower()] = value.strip()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: `open` or `closed` load against --url."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", required=True, help="OpenAI-compatible base URL ending in /v1 (loopback only)")
    common.add_argument("--model", default="gpt-4o-mini")
    common.add_argument("--header", action="append", default=[], help="extra header 'Name: value' (repeatable)")
    common.add_argument("--stream", action="store_true", help="stream the answers (SSE)")
    common.add_argument("--duration", type=float, default=10.0, help="recorded seconds")
    common.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before")
    o = sub.add_parser("open", parents=[common], help="fixed offered rate")
    o.add_argument("--rate", type=float, default=320.0, help="offered requests per second")
    o.add_argument("--poisson", action="store_true", help="Poisson arrivals instead of evenly spaced")
    o.add_argument("--max-connections", type=int, default=256)
    c = sub.add_parser("closed", parents=[common], help="fixed concurrency")
    c.add_argument("--connections", type=int, default=32)
    c.add_argument("--engine", choices=["wrk", "python"], default="wrk")
    c.add_argument("--threads", type=int, default=1, help="wrk threads")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 600:
        parser.error("--duration must be in (0, 600]")
    target = Target(args.url, model=args.model, headers=_parse_headers(args.header), stream=args.stream)
    if args.mode == "open":
        result = run_async(lambda: open_loop(target, rate=args.rate, duration=args.duration, poisson=args.poisson,
                                             warmup=args.warmup, max_connections=args.max_connections))
    elif args.engine == "wrk":
        result = closed_loop_wrk(target, connections=args.connections, duration=args.duration, warmup=args.warmup,
                                 threads=args.threads)
    else:
        result = run_async(lambda: closed_loop(target, connections=args.connections, duration=args.duration,
                                               warmup=args.warmup))
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

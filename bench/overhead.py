"""Headline benchmark: latency a proxy adds over calling the upstream directly, and its throughput.

Starts the fake upstream, then measures, one after the other:
  direct    the fake upstream itself (the baseline; always measured)
  gateway   `slm-gateway serve --upstream-url <fake>/v1`, pinned upstream with `x-gateway-route: upstream`
  litellm   LiteLLM's proxy (own venv in bench/.litellm-venv, created on first run) with openai/<model>

For each: open loop at --rate req/s (non-streaming and streaming; latency from the scheduled send
time), then closed loop at --connections (wrk). Prints added latency (target minus direct, at p50
and p99) and req/s, then a table with the machine.

    python bench/overhead.py [--duration 10] [--rate 320] [--connections 32] [--skip-litellm]
                             [--only gateway|litellm|direct] [--json bench/results/overhead.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import litellm_proxy
import procstat
from loadgen import RunResult, Target, closed_loop, closed_loop_wrk, open_loop, run_async, settle
from wrk import available as wrk_available

from gateway.devtools.process import (
    ServerProcess,
    ServerStartError,
    fake_upstream_argv,
    free_port,
    spawn_server,
)

MODEL = "gpt-4o-mini"
PYTHONPATH_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


@dataclass
class Figures:
    """Everything measured for one target."""

    name: str
    open_plain: RunResult
    open_stream: RunResult
    closed: RunResult
    open_cpu_pct: float = 0.0
    closed_cpu_ms_per_req: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """Load settings shared by every target."""

    rate: float
    duration: float
    connections: int
    poisson: bool
    engine: str
    warmup: float = 1.0


def measure(name: str, base_url: str, headers: dict[str, str], server: ServerProcess, plan: Plan) -> Figures:
    """Open loop (plain, stream) then closed loop against one target; CPU of its process group too."""
    print(f"\n== {name}: {base_url}", flush=True)
    results: list[RunResult] = []
    cpu_open = 0.0
    open_seconds = 0.0
    for stream in (False, True):
        target = Target(base_url, model=MODEL, headers=headers, stream=stream)
        _settle(target)
        cpu0, t0 = procstat.group_cpu_seconds(server.pid), time.perf_counter()
        result = run_async(partial(open_loop, target, rate=plan.rate, duration=plan.duration, poisson=plan.poisson,
                                   warmup=plan.warmup, drain_timeout=max(15.0, plan.duration)))
        cpu_open += procstat.group_cpu_seconds(server.pid) - cpu0
        open_seconds += time.perf_counter() - t0
        print(result.summary(), flush=True)
        results.append(result)
    target = Target(base_url, model=MODEL, headers=headers)
    _settle(target)
    if plan.engine == "wrk":
        cpu0 = procstat.group_cpu_seconds(server.pid)
        closed = closed_loop_wrk(target, connections=plan.connections, duration=plan.duration, warmup=plan.warmup)
        cpu_closed = procstat.group_cpu_seconds(server.pid) - cpu0  # includes the short warm-up run
    else:
        cpu0 = procstat.group_cpu_seconds(server.pid)
        closed = run_async(partial(closed_loop, target, connections=plan.connections, duration=plan.duration,
                                   warmup=plan.warmup))
        cpu_closed = procstat.group_cpu_seconds(server.pid) - cpu0
    print(closed.summary(), flush=True)
    warm_share = (plan.duration + plan.warmup) / plan.duration
    figures = Figures(name, results[0], results[1], closed)
    figures.open_cpu_pct = 100 * cpu_open / max(open_seconds, 1e-9)
    figures.closed_cpu_ms_per_req = 1000 * cpu_closed / (closed.ok * warm_share) if closed.ok else math.nan
    return figures


def _settle(target: Target) -> None:
    waited = run_async(partial(settle, target))
    if waited > 2:
        print(f"  (waited {waited:.1f}s for the target to work off its backlog)", flush=True)


@contextmanager
def fake_upstream(latency_ms: float) -> Iterator[tuple[str, ServerProcess]]:
    """The fake upstream on a free port: (base URL, process)."""
    port = free_port()
    argv = fake_upstream_argv(port, latency_ms=latency_ms or None, record_max=100)
    with spawn_server(argv, f"http://127.0.0.1:{port}/health", env=PYTHONPATH_ENV) as server:
        yield f"http://127.0.0.1:{port}/v1", server


def gateway_command() -> list[str] | None:
    """How to start the gateway: the console script, `python -m gateway`, or None if it isn't there yet."""
    if shutil.which("slm-gateway"):
        return ["slm-gateway"]
    try:
        found = importlib.util.find_spec("gateway.cli") is not None
    except ImportError:
        found = False
    return [sys.executable, "-m", "gateway"] if found else None


@contextmanager
def gateway(upstream: str, *, workers: int, health_path: str, extra: Sequence[str]) -> Iterator[tuple[str, ServerProcess]]:
    """`slm-gateway serve` in front of `upstream` on a free port: (base URL, process)."""
    command = gateway_command()
    if command is None:
        raise FileNotFoundError("slm-gateway is not available yet (no console script, no gateway.cli module)")
    port = free_port()
    argv = [*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--upstream-url", upstream,
            "--workers", str(workers), "--log-level", "warning", *extra]
    with spawn_server(argv, f"http://127.0.0.1:{port}{health_path}", timeout=180, env=PYTHONPATH_ENV) as server:
        yield f"http://127.0.0.1:{port}/v1", server


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def report(all_figures: list[Figures], plan: Plan, upstream_latency_ms: float) -> str:
    """The final table, the machine, and the gateway's targets checked."""
    base = next(f for f in all_figures if f.name == "direct")
    arrivals = "Poisson" if plan.poisson else "evenly spaced"
    head = [
        f"machine: {procstat.machine_line()}; load average now {procstat.load_average()}",
        (f"open loop: {plan.rate:.0f} req/s offered ({arrivals}), {plan.duration:.0f} s recorded after "
         f"{plan.warmup:.0f} s warm-up; closed loop: {plan.connections} connections ({plan.engine}), "
         f"{plan.duration:.0f} s; fake upstream latency {upstream_latency_ms:g} ms"),
        "latencies in ms; 'added' = target minus direct at the same percentile; stream latency is to the last byte",
        "",
    ]
    cols = ["target", "p50", "p99", "+p50", "+p99", "s.p50", "s.p99", "+s.p50", "+s.p99", "ttfb50",
            "errors", "closed r/s", "c.p50", "c.p99", "cpu%@rate", "cpu ms/req"]
    rows = [cols]
    for f in all_figures:
        p, s, c = f.open_plain.stats(), f.open_stream.stats(), f.closed.stats()
        bp, bs = base.open_plain.stats(), base.open_stream.stats()
        is_base = f is base
        errors = f.open_plain.error_count + f.open_stream.error_count + f.closed.error_count
        rows.append([
            f.name, _ms(p["p50"]), _ms(p["p99"]),
            "-" if is_base else _ms(p["p50"] - bp["p50"]), "-" if is_base else _ms(p["p99"] - bp["p99"]),
            _ms(s["p50"]), _ms(s["p99"]),
            "-" if is_base else _ms(s["p50"] - bs["p50"]), "-" if is_base else _ms(s["p99"] - bs["p99"]),
            _ms(f.open_stream.stats(f.open_stream.ttfb)["p50"]), str(errors),
            f"{f.closed.achieved_rate:.0f}", _ms(c["p50"]), _ms(c["p99"]),
            f"{f.open_cpu_pct:.0f}", f"{f.closed_cpu_ms_per_req:.3f}" if f.closed.ok else "n/a",
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    table = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    table.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(head + table + [""] + _verdicts(all_figures, base))


def _verdicts(all_figures: list[Figures], base: Figures) -> list[str]:
    gw = next((f for f in all_figures if f.name == "slm-gateway"), None)
    ll = next((f for f in all_figures if f.name.startswith("litellm")), None)
    if gw is None:
        return ["gateway targets: not measured"]
    added = [gw.open_plain.stats()[q] - base.open_plain.stats()[q] for q in ("p50", "p99")]
    added_s = [gw.open_stream.stats()[q] - base.open_stream.stats()[q] for q in ("p50", "p99")]
    lines = [
        (f"gateway added p50 <= 1 ms: non-stream {added[0]:.2f}, stream {added_s[0]:.2f} -> "
         f"{'PASS' if max(added[0], added_s[0]) <= 1 else 'FAIL'}"),
        (f"gateway added p99 <= 5 ms: non-stream {added[1]:.2f}, stream {added_s[1]:.2f} -> "
         f"{'PASS' if max(added[1], added_s[1]) <= 5 else 'FAIL'}"),
    ]
    if ll is not None and ll.closed.achieved_rate > 0:
        ratio = gw.closed.achieved_rate / ll.closed.achieved_rate
        lines.append(f"gateway closed-loop req/s >= 10x LiteLLM: {ratio:.1f}x -> {'PASS' if ratio >= 10 else 'FAIL'}")
    return lines


def _to_json(figures: list[Figures]) -> list[dict[str, object]]:
    def run(r: RunResult) -> dict[str, object]:
        out: dict[str, object] = {"ok": r.ok, "errors": dict(r.errors), "achieved_rate": r.achieved_rate,
                                  "latency_ms": r.stats(), "engine": r.engine}
        if r.ttfb:
            out["ttfb_ms"] = r.stats(r.ttfb)
        return out

    return [{"name": f.name, "open": run(f.open_plain), "open_stream": run(f.open_stream), "closed": run(f.closed),
             "open_cpu_pct": f.open_cpu_pct, "closed_cpu_ms_per_req": f.closed_cpu_ms_per_req} for f in figures]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="recorded seconds per run (max 120)")
    p.add_argument("--rate", type=float, default=320.0, help="open-loop offered req/s")
    p.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    p.add_argument("--poisson", action="store_true", help="Poisson arrivals in the open loop")
    p.add_argument("--engine", choices=["wrk", "python"], default="wrk" if wrk_available() else "python",
                   help="closed-loop load generator")
    p.add_argument("--upstream-latency-ms", type=float, default=0.0, help="fixed latency of the fake upstream")
    p.add_argument("--skip-litellm", action="store_true")
    p.add_argument("--only", choices=["gateway", "litellm", "direct"],
                   help="measure only this target (direct is always measured, as the baseline)")
    p.add_argument("--gateway-workers", type=int, default=1)
    p.add_argument("--gateway-health", default="/healthz", help="gateway path polled until it answers 2xx")
    p.add_argument("--gateway-arg", action="append", default=[], help="extra argument for `slm-gateway serve`")
    p.add_argument("--litellm-workers", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here (bench/results/ is gitignored)")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 120 or not 0 < args.rate <= 5000 or not 0 < args.connections <= 1024:
        p.error("--duration must be in (0, 120], --rate in (0, 5000], --connections in (0, 1024]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    args = parse_args(argv)
    plan = Plan(rate=args.rate, duration=args.duration, connections=args.connections, poisson=args.poisson,
                engine=args.engine)
    want_gateway = args.only in (None, "gateway")
    want_litellm = args.only in (None, "litellm") and not args.skip_litellm
    figures: list[Figures] = []
    with fake_upstream(args.upstream_latency_ms) as (upstream, upstream_proc):
        figures.append(measure("direct", upstream, {}, upstream_proc, plan))
        if want_gateway:
            try:
                with gateway(upstream, workers=args.gateway_workers, health_path=args.gateway_health,
                             extra=args.gateway_arg) as (url, proc):
                    figures.append(measure("slm-gateway", url, {"x-gateway-route": "upstream"}, proc, plan))
            except FileNotFoundError as exc:
                print(f"\n== slm-gateway: SKIPPED: {exc}", flush=True)
            except (ServerStartError, RuntimeError) as exc:
                print(f"\n== slm-gateway: SKIPPED: {exc}", flush=True)
        if want_litellm:
            try:
                with litellm_proxy.run_litellm(upstream, models=[MODEL], workers=args.litellm_workers) as (url, proc):
                    name = f"litellm {litellm_proxy.version()}"
                    figures.append(measure(name, url, dict(litellm_proxy.AUTH_HEADERS), proc, plan))
            except (ServerStartError, RuntimeError, OSError) as exc:
                print(f"\n== litellm: SKIPPED: {exc}", flush=True)
    text = report(figures, plan, args.upstream_latency_ms)
    print("\n" + text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": procstat.machine_line(), "plan": plan.__dict__,
                                         "targets": _to_json(figures)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

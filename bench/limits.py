"""What per key and per team limits add to a request, side by side with limits off, in one run.

    python bench/limits.py                                  # 320 req/s, 10 s per run, 2 rounds, both parts
    python bench/limits.py --duration 3 --rounds 3 --redis-url redis://127.0.0.1:PORT/0   # a private Redis
    python bench/limits.py --rate 320 --duration 5 --rounds 3 --redis-url redis://127.0.0.1:6379/10

Two gateways are started as their own processes (uvicorn with the options `slm-gateway serve` uses, tiers: the
upstream only, the fake upstream of gateway/devtools), alike except for `limits`:

- `off`: `limits.enabled: false` (the default): no key store, no layer, no work on the request path;
- `on`: `limits.enabled: true` on the real Redis at `--redis-url`; the request carries a stored gateway key with
  caps of every kind (rpm, tpm, concurrency, $ per day) and its team a $ per month cap, i.e. two scopes
  reserved and settled per request (the worst case), all caps far above the offered load.

Part 2 (`--only inprocess`; both parts run by default): the same two pipelines in this process, no HTTP:
`Pipeline.chat` with a `FakeBackend` upstream that answers at once, requests started at `--rate` per second (open
loop), then one at a time; what `on` adds there is the limit layer itself (key lookup, reserve round trip,
headers, the settle).

Each round loads `off` then `on` with the same open loop (bench/loadgen.py: `--rate` req/s, latency from each
request's scheduled send time). The table gives p50/p99 of every run, and the medians over the rounds of what
`on` adds to `off`: the added latency of the limit checks (target: at most 0.3 ms at p50). The last lines
(`headline:`) repeat what limits add through HTTP and in process, one line each. Part 2 also prints
two figures that a busy machine disturbs less than latency: the CPU this process spends per request (user +
system) more with limits on, and Redis' own time running the reserve and settle scripts per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import Target, open_loop, settle  # noqa: E402
from procstat import group_cpu_seconds, load_average, machine_line, voluntary_switches  # noqa: E402

from gateway.devtools.process import LOOPBACK, free_port, run_fake_upstream, spawn_server  # noqa: E402

ADMIN_KEY = "sk-bench-admin"


def serve(config_json: str, port: int) -> None:
    """Child process: one gateway for `config_json` with the upstream tier only, under uvicorn."""
    import uvicorn

    from gateway.app import create_app
    from gateway.build import build_gateway
    from gateway.dispatch import Tiers
    from gateway.metrics import GatewayMetrics
    from gateway.routing.reloadable import router_from_settings
    from gateway.server import _uvicorn_options
    from gateway.settings import load_settings
    from gateway.tiers.http import OpenAIHTTPBackend

    settings = load_settings(environ={}, overrides={**json.loads(config_json), "port": port, "host": LOOPBACK,
                                                    "log_level": "warning", "access_log": False})
    up = settings.upstream
    assert up.url is not None
    tiers = Tiers(upstream=OpenAIHTTPBackend("upstream", up.url, up.api_key, max_connections=up.max_connections),
                  upstream_default_model=up.default_model, local_model_name=settings.local.model_name)
    metrics = GatewayMetrics()
    pipeline = build_gateway(settings, tiers=tiers, router=router_from_settings(settings, metrics), metrics=metrics)
    uvicorn.run(create_app(settings, pipeline), **_uvicorn_options(settings))  # type: ignore[arg-type]


def start(stack: ExitStack, config: dict[str, object]) -> tuple[str, int]:
    """A gateway process for `config`: its root URL and process id (its own process group)."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", json.dumps(config), "--port", str(port)]
    server = stack.enter_context(spawn_server(argv, f"http://{LOOPBACK}:{port}/healthz", timeout=60, cwd=ROOT,
                                              env={"PYTHONPATH": str(ROOT)}))
    return f"http://{LOOPBACK}:{port}", server.pid


def stored_key(root: str) -> str:
    """A key with every kind of cap, in a team with a monthly cap (all far above the offered load)."""
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=root, headers=admin, timeout=10) as http:
        r = http.put("/admin/teams/bench/limits", json={"usd_per_month": 1e6})
        r.raise_for_status()
        r = http.post("/admin/keys", json={"team": "bench", "name": "bench", "limits": {
            "rpm": 10_000_000, "tpm": 10_000_000_000, "concurrency": 100_000, "usd_per_day": 1e6}})
        r.raise_for_status()
        return str(r.json()["key"])


async def inprocess(rate: float, duration: float, redis_url: str, prefix: str) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) of `Pipeline.chat` at `rate` req/s (0: one request at a time), limits off and on, in this
    process."""
    import time

    from gateway.build import build_gateway
    from gateway.devtools.fake_backend import FakeBackend
    from gateway.dispatch import Tiers
    from gateway.limits.admin import KeyAdmin, KeyRequest
    from gateway.limits.records import Limits
    from gateway.openai.request import parse_chat_request
    from gateway.routing.static import StaticRouter
    from gateway.settings import load_settings
    from loadgen import percentile

    body = Target("http://127.0.0.1/v1").body()
    out: dict[str, dict[str, float]] = {}
    for name in ("off", "on"):
        config: dict[str, object] = {"upstream": {"url": "http://127.0.0.1:9/v1"}, "access_log": False,
                                     "cache": {"enabled": False}}
        if name == "on":
            config["limits"] = {"enabled": True, "redis_url": redis_url, "key_prefix": prefix}
        settings = load_settings(environ={}, overrides=config)
        pipeline = build_gateway(settings, tiers=Tiers(upstream=FakeBackend()), router=StaticRouter())
        await pipeline.start()
        headers = {"x-gateway-route": "upstream"}
        if pipeline.limits is not None:
            admin = KeyAdmin(pipeline.limits.store)
            await admin.set_team_limits("bench", Limits(usd_per_month=1e6))
            key, _ = await admin.create(KeyRequest(team="bench", limits=Limits(
                rpm=10_000_000, tpm=10_000_000_000, concurrency=100_000, usd_per_day=1e6)))
            await pipeline.limits.directory.refresh()
            headers["authorization"] = f"Bearer {key}"
        latencies: list[float] = []

        async def one(scheduled: float) -> None:
            ex = pipeline.exchange("bench", headers, time.perf_counter())
            ex.accept(pipeline.keys.check(headers.get("authorization")), parse_chat_request(body))
            await pipeline.chat(ex)
            latencies.append((time.perf_counter() - scheduled) * 1000)

        tasks = []
        redis_before = _evalsha_usec(redis_url) if name == "on" else (0.0, 0)
        cpu_before = os.times()
        t0 = time.perf_counter() + 0.01
        count = int(rate * (duration + 1)) if rate > 0 else 2200
        for i in range(count):
            if rate <= 0:  # back to back: what one request pays, without queueing behind others
                await one(time.perf_counter())
                continue
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(scheduled)))
        await asyncio.gather(*tasks)
        if pipeline.limits is not None:
            await pipeline.limits.drain()
        cpu_after = os.times()
        redis_after = _evalsha_usec(redis_url) if name == "on" else (0.0, 0)
        redis_us = (redis_after[0] - redis_before[0]) / count
        calls = (redis_after[1] - redis_before[1]) / count
        await pipeline.stop()
        recorded = sorted(latencies[int(rate) if rate > 0 else 200:])  # the first second (200 requests) warms up
        cpu_us = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) * 1e6 / count
        out[name] = {"p50": percentile(recorded, 50), "p99": percentile(recorded, 99), "cpu": cpu_us,
                     "redis": redis_us, "calls": calls}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=320.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--only", choices=["http", "inprocess"], help="run one part only")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0

    prefix = f"slmgw:bench-limits:{uuid.uuid4().hex[:8]}"
    print(f"machine: {machine_line()}; load average before: {load_average()}")
    headline: list[str] = []
    if args.only != "inprocess":
        added_http = http_part(args, prefix)
        headline.append(f"  through HTTP (two gateway processes), {args.rate:.0f} req/s: p50 {added_http['p50']:+.3f} ms "
                        f"({added_http['verdict']}), p99 {added_http['p99']:+.3f} ms, CPU {added_http['cpu']:+.3f} ms "
                        f"per request, {added_http['wakeups']:+.2f} wake-ups of the gateway per request")
    if args.only != "http":
        for rate, what in ((args.rate, f"{args.rate:.0f} req/s open loop, {args.duration:.0f} s"),
                           (0.0, "one request at a time, 2000 requests")):
            rounds = [asyncio.run(inprocess(rate, args.duration, args.redis_url, prefix)) for _ in range(args.rounds)]
            _cleanup(args.redis_url, prefix)
            print(f"in process (Pipeline.chat, FakeBackend upstream, no HTTP), {what}:")
            for i, r in enumerate(rounds, 1):
                print(f"  round {i}: off p50 {r['off']['p50']:.3f} p99 {r['off']['p99']:.3f} ms; "
                      f"on p50 {r['on']['p50']:.3f} p99 {r['on']['p99']:.3f} ms")
            added = {q: statistics.median(r["on"][q] - r["off"][q] for r in rounds) for q in ("p50", "p99", "cpu")}
            redis_us = statistics.median(r["on"]["redis"] for r in rounds)
            calls = statistics.median(r["on"]["calls"] for r in rounds)
            verdict = "met" if added["p50"] <= 0.3 else "NOT met"
            print(f"  added by the limit layer (median over {args.rounds} rounds): p50 {added['p50']:+.3f} ms, "
                  f"p99 {added['p99']:+.3f} ms (target p50 <= 0.300 ms: {verdict}); "
                  f"CPU of this process {added['cpu']:+.1f} µs per request; Redis running the scripts "
                  f"{redis_us:.1f} µs per request in {calls:.2f} calls (INFO commandstats, EVALSHA of every client of "
                  f"that Redis)")
            headline.append(f"  in process, {what}: p50 {added['p50']:+.3f} ms ({verdict}), p99 {added['p99']:+.3f} ms, "
                            f"CPU {added['cpu'] / 1000:+.3f} ms per request, Redis scripts {redis_us:.0f} µs in {calls:.2f} "
                            f"calls per request")
    print(f"headline: what limits add (medians over {args.rounds} rounds; target p50 <= 0.300 ms):")
    print("\n".join(headline))
    print(f"load average after: {load_average()}")
    return 0


def http_part(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """Part 1: two gateway processes over HTTP; what limits add (medians: p50, p99, cpu in ms, and the verdict)."""
    with ExitStack() as stack:
        upstream = stack.enter_context(run_fake_upstream())
        common = {"upstream": {"url": upstream, "api_key": "sk-fake"}, "cache": {"enabled": False}}
        off, off_pid = start(stack, common)
        on, on_pid = start(stack, {**common, "admin_api_keys": [ADMIN_KEY],
                           "limits": {"enabled": True, "redis_url": args.redis_url, "key_prefix": prefix}})
        key = stored_key(on)
        pin = {"x-gateway-route": "upstream"}
        targets = {"off": Target(f"{off}/v1", headers=pin),
                   "on": Target(f"{on}/v1", headers={**pin, "authorization": f"Bearer {key}"})}
        pids = {"off": off_pid, "on": on_pid}
        rows: list[tuple[int, str, dict[str, float], int, int, float, float]] = []

        async def run() -> None:
            for rnd in range(1, args.rounds + 1):
                for name, target in targets.items():
                    await settle(target)
                    cpu, sleeps = group_cpu_seconds(pids[name]), voluntary_switches(pids[name])
                    result = await open_loop(target, rate=args.rate, duration=args.duration)
                    count = max(1, result.sent + int(args.rate))
                    cpu_ms = (group_cpu_seconds(pids[name]) - cpu) * 1000 / count
                    wakeups = (voluntary_switches(pids[name]) - sleeps) / count
                    rows.append((rnd, name, result.stats(), result.ok, result.error_count, cpu_ms, wakeups))
                    if result.errors:
                        print(f"round {rnd} {name}: errors {dict(result.errors)}")

        asyncio.run(run())
        limits_lines = [line for line in httpx.get(f"{on}/metrics").text.splitlines()
                        if line.startswith(("slm_gateway_limits_", "slm_gateway_limited_requests_total"))
                        and not line.endswith(" 0.0") and "_created" not in line]
    _cleanup(args.redis_url, prefix)

    print(f"open loop, {args.rate:.0f} req/s offered, {args.duration:.0f} s per run, non-streaming, upstream pinned")
    print(f"{'round':>5} {'limits':>6} {'ok':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/req':>10} "
          f"{'wake-ups/req':>12}")
    for rnd, name, stats, ok, errors, cpu_ms, wakeups in rows:
        print(f"{rnd:>5} {name:>6} {ok:>6} {errors:>6} {stats['p50']:>8.3f} {stats['p99']:>8.3f} {cpu_ms:>10.3f} "
              f"{wakeups:>12.2f}")
    added = {q: statistics.median(
        on_s[q] - off_s[q] for (_, a, off_s, *_), (_, b, on_s, *_) in zip(rows[0::2], rows[1::2])) for q in ("p50", "p99")}
    failed = any(row[4] for row in rows)
    verdict = "no verdict: a run had errors" if failed else ("met" if added["p50"] <= 0.3 else "NOT met")
    added_cpu = statistics.median(b[5] - a[5] for a, b in zip(rows[0::2], rows[1::2]))
    added_wakeups = statistics.median(b[6] - a[6] for a, b in zip(rows[0::2], rows[1::2]))
    print(f"added by limits (median over {args.rounds} rounds): p50 {added['p50']:+.3f} ms, p99 {added['p99']:+.3f} ms, "
          f"CPU {added_cpu:+.3f} ms per request, {added_wakeups:+.2f} wake-ups of the gateway per request"
          f"  (target p50 <= 0.300 ms: {verdict})")
    print("the `on` gateway's own limit metrics (non-zero):")
    print("\n".join("  " + line for line in limits_lines))
    return {**added, "cpu": added_cpu, "wakeups": added_wakeups, "verdict": verdict}


def _evalsha_usec(url: str) -> tuple[float, int]:
    """Redis' own time in EVALSHA so far (µs) and the calls (every client of that server: a shared Redis adds
    others' scripts)."""
    import redis

    stats = redis.Redis.from_url(url).info("commandstats").get("cmdstat_evalsha")
    return (float(stats["usec"]), int(stats["calls"])) if stats else (0.0, 0)


def _cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for name in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(name)


if __name__ == "__main__":
    raise SystemExit(main())

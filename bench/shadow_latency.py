"""The client latency shadow judging adds: two running gateways, `learning.shadow_rate` 0 and 1.0, side by side.

One fake upstream answers as the upstream LLM and as the judge (`--judge-script`: every verdict "both ok"). Two
`slm-gateway serve` processes (the bundled local model, cache off, labels to a temporary JSONL file) differ only
in `learning.shadow_rate`. Each round offers both of them, one after the other (the order alternates), the same
open-loop traffic at a fixed rate: `--upstream-rate` req/s pinned upstream (`model: upstream`; each is shadowed
by a local generation, then judged) plus `--local-rate` req/s pinned local (`model: local`; each is shadowed by
an upstream answer, then judged), for `--duration` seconds after a 1 s warm-up. Latency counts from each
request's scheduled send time (`bench/loadgen.py`). Before the next run, the shadow gateway works off its queue:
every request it answered has an outcome (a label, or a counted drop / skip / error) in its /metrics, so no
shadow work of one run overlaps another run.

    python bench/shadow_latency.py [--rounds 2] [--duration 12] [--upstream-rate 8] [--local-rate 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from loadgen import RunResult, Target, open_loop, percentile  # noqa: E402
from procstat import load_average  # noqa: E402

from gateway.devtools.process import ServerProcess, fake_upstream_argv, free_port, spawn_server  # noqa: E402

PYTHONPATH_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
OUTCOMES = (  # every sampled request ends in exactly one of these (gateway/learning/shadow.py)
    ("slm_gateway_learning_labels_total", {"source": "judge"}),
    ("slm_gateway_learning_shadow_dropped_total", {}),
    ("slm_gateway_learning_shadow_skipped_total", {"reason": "private"}),
    ("slm_gateway_learning_shadow_skipped_total", {"reason": "unsupported"}),
    ("slm_gateway_learning_shadow_skipped_total", {"reason": "no_tier"}),
    ("slm_gateway_learning_judge_errors_total", {}),
    ("slm_gateway_learning_shadow_errors_total", {}),
)


@dataclass(frozen=True)
class Pinned(Target):
    """A chat request pinned to a tier by its model name, with a small `max_tokens`."""

    max_tokens: int = 16

    def body(self) -> bytes:
        payload = json.loads(super().body())
        payload["max_tokens"] = self.max_tokens
        return json.dumps(payload, separators=(",", ":")).encode()


@dataclass
class Arm:
    """One gateway (its shadow rate) and what its runs measured, per tier."""

    shadow_rate: float
    root: str
    server: ServerProcess
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"upstream": [], "local": []})
    errors: dict[str, int] = field(default_factory=lambda: {"upstream": 0, "local": 0})

    @property
    def base_url(self) -> str:
        return self.root + "/v1"


def scrape(root: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a gateway's /metrics, keyed by (name, sorted labels)."""
    text = httpx.get(f"{root}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def answered(samples: dict) -> float:
    """Chat requests a tier answered with 200 (every one is sampled at shadow rate 1.0)."""
    return sum(total(samples, "slm_gateway_requests_total", tier=t, status="200") for t in ("local", "upstream"))


def outcomes(samples: dict) -> float:
    return sum(total(samples, name, **labels) for name, labels in OUTCOMES)


def settle_shadow(arm: Arm, max_wait: float) -> float:
    """Wait (bounded) until every request `arm` answered has its shadow outcome; the seconds waited."""
    started = time.monotonic()
    while True:
        samples = scrape(arm.root)
        if arm.shadow_rate == 0 or outcomes(samples) >= answered(samples):
            return time.monotonic() - started
        if time.monotonic() - started > max_wait:
            print(f"  (shadow gateway still busy after {max_wait:.0f}s: {outcomes(samples):.0f} of "
                  f"{answered(samples):.0f} outcomes)", flush=True)
            return time.monotonic() - started
        time.sleep(0.25)


@contextmanager
def running(args: argparse.Namespace, tmp: Path) -> Iterator[list[Arm]]:
    """The fake upstream and the two gateways."""
    with ExitStack() as stack:
        script = tmp / "judge.json"
        script.write_text(json.dumps({"default": {"local_ok": True, "upstream_ok": True}}))
        port = free_port()
        argv = fake_upstream_argv(port, latency_ms=args.upstream_latency_ms or None, judge_script=str(script),
                                  record_max=10)
        stack.enter_context(spawn_server(argv, f"http://127.0.0.1:{port}/health", env=PYTHONPATH_ENV))
        arms = []
        for rate in (0.0, 1.0):
            config = {
                "upstream": {"url": f"http://127.0.0.1:{port}/v1", "default_model": "gpt-4o-mini"},
                "cache": {"enabled": False},
                "learning": {"shadow_rate": rate, "labels_path": str(tmp / f"labels-{rate}.jsonl"),
                             "judge_model": "gpt-4o", "shadow_max_tokens": args.max_tokens,
                             "max_judge_dollars_per_day": 1000.0},
            }
            path = tmp / f"config-{rate}.yaml"
            path.write_text(yaml.safe_dump(config))
            gw_port = free_port()
            argv = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(gw_port),
                    "--config", str(path), "--workers", "1", "--log-level", "warning"]
            server = stack.enter_context(spawn_server(argv, f"http://127.0.0.1:{gw_port}/readyz", timeout=180,
                                                      env=PYTHONPATH_ENV, cwd=ROOT))
            arms.append(Arm(rate, f"http://127.0.0.1:{gw_port}", server))
        yield arms


async def one_run(arm: Arm, args: argparse.Namespace) -> tuple[RunResult, RunResult]:
    up = Pinned(arm.base_url, model="upstream", max_tokens=args.max_tokens)
    local = Pinned(arm.base_url, model="local", max_tokens=args.max_tokens)
    drain = max(30.0, args.duration * 3)
    return await asyncio.gather(
        open_loop(up, rate=args.upstream_rate, duration=args.duration, drain_timeout=drain, seed=1),
        open_loop(local, rate=args.local_rate, duration=args.duration, drain_timeout=drain, seed=2),
    )


def stats(values: list[float]) -> str:
    data = sorted(values)
    return f"p50 {percentile(data, 50):7.1f}  p99 {percentile(data, 99):7.1f}  (n={len(data)})"


def measure(args: argparse.Namespace) -> list[str]:
    """Run the rounds; the report's lines (also printed as they come)."""
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"shadow latency: {args.upstream_rate:g} req/s pinned upstream + {args.local_rate:g} req/s pinned local, "
        f"max_tokens {args.max_tokens}, {args.rounds} rounds x {args.duration:g} s per gateway (alternating), "
        f"fake upstream latency {args.upstream_latency_ms:g} ms; load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="shadow-latency-") as tmp, running(args, Path(tmp)) as arms:
        for arm in arms:  # warm both: the first local generation loads the model pages
            asyncio.run(one_run_warm(arm, args))
            settle_shadow(arm, args.max_settle)
        for r in range(args.rounds):
            order = arms if r % 2 == 0 else arms[::-1]
            for arm in order:
                results = asyncio.run(one_run(arm, args))
                for tier, result in zip(("upstream", "local"), results):
                    arm.latencies[tier] += result.latencies
                    arm.errors[tier] += result.error_count
                waited = settle_shadow(arm, args.max_settle)
                say(f"  round {r + 1} shadow {arm.shadow_rate:g}: upstream {stats(results[0].latencies)} | local "
                    f"{stats(results[1].latencies)} ms" + (f"; shadow queue worked off in {waited:.1f}s"
                                                           if arm.shadow_rate else ""))
        base, shadow = arms
        samples = scrape(shadow.root)
        say("client latency, ms (from the scheduled send), all rounds:")
        for tier in ("upstream", "local"):
            for arm in arms:
                say(f"  pinned {tier:<8} shadow_rate {arm.shadow_rate:<3g} {stats(arm.latencies[tier])}"
                    + (f", errors {arm.errors[tier]}" if arm.errors[tier] else ""))
            b, s = sorted(base.latencies[tier]), sorted(shadow.latencies[tier])
            if b and s:
                say(f"  pinned {tier:<8} added by shadow 1.0: p50 {percentile(s, 50) - percentile(b, 50):+.1f} ms, "
                    f"p99 {percentile(s, 99) - percentile(b, 99):+.1f} ms")
        drops = {reason: total(samples, "slm_gateway_learning_shadow_dropped_total", reason=reason)
                 for reason in ("queue_full", "local_busy", "preempted", "budget")}
        say(f"shadow gateway: {answered(samples):.0f} requests answered, "
            f"{total(samples, 'slm_gateway_learning_labels_total', source='judge'):.0f} judged labels, dropped "
            + ", ".join(f"{k} {v:.0f}" for k, v in drops.items())
            + f", errors {total(samples, 'slm_gateway_learning_shadow_errors_total') + total(samples, 'slm_gateway_learning_judge_errors_total'):.0f}"
            + f"; load average {load_average()}")
    return lines


async def one_run_warm(arm: Arm, args: argparse.Namespace) -> None:
    """A few requests of each kind, not recorded."""
    async with httpx.AsyncClient(timeout=120) as client:
        for model in ("upstream", "local", "local"):
            body = json.loads(Pinned(arm.base_url, model=model, max_tokens=args.max_tokens).body())
            resp = await client.post(f"{arm.base_url}/chat/completions", json=body)
            resp.raise_for_status()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of this part (shared with bench/learning.py)."""
    p.add_argument("--rounds", type=int, default=2, help="latency: rounds (each runs both gateways, alternating)")
    p.add_argument("--duration", type=float, default=12.0, help="latency: recorded seconds per gateway per round")
    p.add_argument("--upstream-rate", type=float, default=8.0, help="latency: req/s pinned upstream")
    p.add_argument("--local-rate", type=float, default=0.5, help="latency: req/s pinned local")
    p.add_argument("--max-tokens", type=int, default=16, help="latency: max_tokens of requests and shadow answers")
    p.add_argument("--upstream-latency-ms", type=float, default=20.0, help="latency: the fake upstream's delay")
    p.add_argument("--max-settle", type=float, default=120.0, help="latency: max wait for the shadow queue")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args()
    measure(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

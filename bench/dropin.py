"""What the drop-in endpoints cost: a passthrough request's added latency, and a local embedding's latency.

Starts the fake upstream and `python -m gateway serve --upstream-url <fake>/v1`, then measures:
  passthrough   POST /v1/moderations (no usage) and POST /v1/embeddings with an upstream model (its usage is
                read on the way and counted), open loop at --rate req/s, direct to the fake upstream and through
                the gateway (which passes it on with its key swapped in): p50/p99 and the difference
  embedding     POST /v1/embeddings with model "local" (the bundled in-process embedder), open loop at --rate
                req/s with one input per request, beside the embedder called in-process on the same input (the
                baseline: what is left is the gateway's added latency); then one request at a time with 1, 16
                and 256 inputs: latency per request and per input, beside the in-process call per input

    python bench/dropin.py [--duration 10] [--rate 320] [--json bench/results/dropin.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import httpx
from loadgen import RunResult, Target, open_loop, percentile, run_async, settle

from gateway.devtools.process import fake_upstream_argv, free_port, spawn_server

PYTHONPATH_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."


@dataclass(frozen=True)
class PathTarget(Target):
    """A POST of a fixed JSON body to `path` under the base URL."""

    path: str = "moderations"
    payload: bytes = b"{}"

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/" + self.path

    def body(self) -> bytes:
        return self.payload


def _line(name: str, result: RunResult) -> str:
    s = result.stats()
    return (f"{name:<28} ok {result.ok:>5}  errors {result.error_count:>3}  achieved {result.achieved_rate:6.1f}/s  "
            f"p50 {s['p50']:7.3f} ms  p99 {s['p99']:7.3f} ms")


def sequential_embedding(base_url: str, inputs: int, repeats: int) -> dict[str, float]:
    """One request at a time with `inputs` inputs: latency p50/p99 per request, and p50 per input (ms)."""
    body = {"model": "local", "input": batch(inputs)}
    times: list[float] = []
    with httpx.Client(timeout=30, trust_env=False) as client:
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            reply = client.post(f"{base_url}/embeddings", json=body)
            elapsed = (time.perf_counter() - t0) * 1000
            reply.raise_for_status()
            if i >= 3:  # three unrecorded warm-ups
                times.append(elapsed)
    times.sort()
    p50 = percentile(times, 50)
    return {"inputs": inputs, "p50_ms": p50, "p99_ms": percentile(times, 99), "per_input_p50_ms": p50 / inputs}


def batch(inputs: int) -> list[str]:
    return [f"{SENTENCE} ({i})" for i in range(inputs)]


def in_process_embedding(texts: list[str], repeats: int) -> dict[str, float]:
    """The bundled embedder called directly (no HTTP, no gateway) on `texts`: the baseline."""
    from gateway.embedding import WordLlamaEmbedder

    embedder = WordLlamaEmbedder()
    inputs = len(texts)
    times: list[float] = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        embedder.embed(texts)
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p50 = percentile(times, 50)
    return {"inputs": inputs, "p50_ms": p50, "p99_ms": percentile(times, 99), "per_input_p50_ms": p50 / inputs}


def passthrough_pair(name: str, direct: PathTarget, through: PathTarget, rate: float, duration: float) -> dict:
    """Open-loop runs direct and through the gateway, one after the other; the gateway's added p50/p99."""
    results = {}
    for label, target in ((f"direct {name}", direct), (f"gateway {name}", through)):
        run_async(lambda t=target: settle(t))
        results[label] = run_async(lambda t=target: open_loop(t, rate=rate, duration=duration))
        print(_line(label, results[label]), flush=True)
    d, g = results[f"direct {name}"].stats(), results[f"gateway {name}"].stats()
    added = {"p50": g["p50"] - d["p50"], "p99": g["p99"] - d["p99"]}
    print(f"passthrough {name} adds p50 {added['p50']:.3f} ms, p99 {added['p99']:.3f} ms at {rate:.0f} req/s")
    return {"direct": d, "gateway": g, "added": added}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="recorded seconds per open-loop run (<= 120)")
    p.add_argument("--rate", type=float, default=320.0)
    p.add_argument("--repeats", type=int, default=50, help="sequential embedding requests per batch size")
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args(argv)
    duration = min(a.duration, 120.0)
    figures: dict[str, object] = {"rate": a.rate, "duration": duration, "cpus": os.cpu_count()}
    fake_port, gw_port = free_port(), free_port()
    fake_url = f"http://127.0.0.1:{fake_port}/v1"
    with spawn_server(fake_upstream_argv(fake_port), f"http://127.0.0.1:{fake_port}/health", env=PYTHONPATH_ENV):
        argv_gw = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(gw_port),
                   "--upstream-url", fake_url, "--upstream-api-key", "sk-bench"]
        with spawn_server(argv_gw, f"http://127.0.0.1:{gw_port}/readyz", timeout=300, env=PYTHONPATH_ENV, cwd=ROOT):
            gw_url = f"http://127.0.0.1:{gw_port}/v1"
            moderation = json.dumps({"model": "omni-moderation-latest", "input": SENTENCE}).encode()
            figures["passthrough"] = passthrough_pair(
                "moderations", PathTarget(fake_url, path="moderations", payload=moderation),
                PathTarget(gw_url, path="moderations", payload=moderation), a.rate, duration)
            upstream_embedding = json.dumps({"model": "text-embedding-3-small", "input": SENTENCE}).encode()
            figures["passthrough_with_usage"] = passthrough_pair(
                "upstream embeddings", PathTarget(fake_url, path="embeddings", payload=upstream_embedding),
                PathTarget(gw_url, path="embeddings", payload=upstream_embedding), a.rate, duration)
            if importlib.util.find_spec("gateway.embedding") is None:
                print("embedding: skipped (no bundled embedder, gateway/embedding, in this tree)")
            else:
                one = PathTarget(gw_url, path="embeddings",
                                 payload=json.dumps({"model": "local", "input": SENTENCE}).encode())
                run_async(lambda: settle(one))
                loaded = run_async(lambda: open_loop(one, rate=a.rate, duration=duration))
                print(_line("local embedding, 1 input", loaded), flush=True)
                base = in_process_embedding([SENTENCE], max(a.repeats, 200))
                s = loaded.stats()
                added = {"p50": s["p50"] - base["p50_ms"], "p99": s["p99"] - base["p99_ms"]}
                print(f"in-process embed, 1 input: p50 {base['p50_ms']:.3f} ms  p99 {base['p99_ms']:.3f} ms; the gateway "
                      f"adds p50 {added['p50']:.3f} ms, p99 {added['p99']:.3f} ms at {a.rate:.0f} req/s")
                batches = [sequential_embedding(gw_url, n, a.repeats) for n in (1, 16, 256)]
                direct_batches = [in_process_embedding(batch(n), a.repeats) for n in (1, 16, 256)]
                for b, d in zip(batches, direct_batches, strict=True):
                    print(f"local embedding, {b['inputs']:>3} inputs, one at a time: p50 {b['p50_ms']:.3f} ms  "
                          f"p99 {b['p99_ms']:.3f} ms  per input {b['per_input_p50_ms']:.4f} ms "
                          f"(in-process: p50 {d['p50_ms']:.3f} ms, per input {d['per_input_p50_ms']:.4f} ms)")
                figures["embedding"] = {"open_loop_1_input": s, "in_process_1_input": base, "added": added,
                                        "sequential": batches, "in_process": direct_batches}
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

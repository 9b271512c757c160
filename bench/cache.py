"""Response cache benchmark: cache hits vs misses through slm-gateway, and the same through LiteLLM's proxy
with its Redis cache, on the same Redis, in the same run.

Starts the fake upstream (0 latency), then for each target:
  hits     every request is the same deterministic request (one warm-up request stores it)
  misses   every request is new (a unique prompt), so it goes to the upstream and is stored
each as a closed loop of --connections clients (throughput, latency) and as an open loop at --rate req/s
over up to --connections connections (latency from the scheduled send time). The fake upstream's request
counter shows that hits never reach it. Also prints what a hit costs in-process (key hash, decode, replay).

    python bench/cache.py [--duration 5] [--connections 32] [--rate 320] [--redis-url redis://127.0.0.1:6379/14]
                          [--skip-litellm] [--skip-exact] [--json bench/results/cache.json]
                          [--semantic 10000 100000 [--scopes 1 100] [--baseline-tree /tmp/base] [--closed]
                           [--paraphrases distinct|repeat] [--misses numbered populated]]

With --semantic N... a gateway with the semantic cache on (Redis index) is started per configuration (each N with
each S of --scopes): N random unit vectors are written into S scopes of the bench's requests (straight into their
Redis streams), the hit prompt is stored in each, and the gateway is loaded open loop at --rate with, in turn,
paraphrase hits (`semantic-hit`: embed, search, guard, entry read, replay), exact hits of the stored prompt, new
prompts (`semantic-miss`: exact miss, semantic miss, upstream, store, indexing) and new prompts asking for the
exact cache only (`exact-miss`, same process): p50/p99, the gateway's CPU per request and upstream calls, then a
table and the issue's targets (semantic hit p99 <= 3 ms; a semantic miss adds <= 0.5 ms p50 over an exact miss).
With --baseline-tree the same configurations also run a gateway from that checkout, alternating which goes first
(this script drives both: only the gateway process runs from the baseline's code).

Semantic hits (`--paraphrases distinct`, the default) rotate through bench/paraphrases.py's 2,400 distinct
paraphrases, checked at start to be hits in-process (bundled embedder, lexical guard, shipped threshold): each scope
gets the whole set and no text comes back within 1,024 requests, so the gateway's prompt memo and a scope's
remembered searches cannot serve them, as for real traffic. `--paraphrases repeat` sends the one PARAPHRASE each time
(the memoised case); `--paraphrases distinct repeat` runs both in the same gateways (the repeated one as
`semantic-hit-repeat`, after the distinct run). A semantic-hit run that made upstream calls prints its misses and the
gateway's reason counters.

The seeded rows carry the guard signature of "filler prompt" (`--filler-classes one`, the default), whose classes
are those of the stored prompt, its paraphrases and the populated misses: every such lookup scans the whole scope,
the worst case (a scope whose prompts all share one class). `--filler-classes spread` gives the rows the guard
signatures of the 11,838 arena-hard and routing-dev prompts in turn (3.1 % of them in the hit's classes): a lookup
of a scope with few rows in its classes scans only those (gateway/cache/semantic/index.py, `CLASS_SCAN_MAX_ROWS`).

Semantic misses (`--misses numbered`, the default) carry numbers of their own, so each is in guard classes no
stored row has (a `classes` miss: no embedding, no scan, in the lookup); `--misses numbered populated` adds a last
run, `semantic-miss-populated`, of prompts with the seeded rows' guard classes (bench/miss_prompts.py: embedded,
the whole scope scanned), the common case of real prompts without numbers; both are quoted against `exact-miss`.

    python bench/cache.py --skip-litellm --skip-exact --semantic 10000 100000 --scopes 1 100 \
        --baseline-tree /tmp/base --redis-url redis://127.0.0.1:6379/5      # the issue's four configurations

Only keys under the prefixes this script uses are deleted from that Redis (before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import httpx  # noqa: E402
import litellm_proxy  # noqa: E402
import miss_prompts  # noqa: E402
import paraphrases  # noqa: E402
import procstat  # noqa: E402
import redis  # noqa: E402
from loadgen import RunResult, arrival_offsets, run_async  # noqa: E402
from rawhttp import ConnectionClosed, Pool, encode_request, fetch  # noqa: E402

from gateway.devtools.process import free_port, run_fake_upstream, spawn_server  # noqa: E402

MODEL = "gpt-4o-mini"
GATEWAY_PREFIX = "bench:gw-cache"
SEMANTIC_PREFIX = "bench:gw-semcache"
LITELLM_NAMESPACE = "bench.litellm-cache"
PYTHONPATH_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}

RawFor = Callable[[int], bytes]


def body(prompt: str, scope: int = 0) -> bytes:
    """A deterministic (cacheable) chat request; `scope` > 0 puts it in another semantic scope (its system prompt)."""
    system = "Be brief." if scope == 0 else f"Be brief. (scope {scope})"
    return json.dumps(
        {"model": MODEL, "temperature": 0, "max_tokens": 64,
         "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}]},
        separators=(",", ":"),
    ).encode()


HIT_PROMPT = paraphrases.HIT_PROMPT
PARAPHRASE = paraphrases.PARAPHRASE


def hit_requests(url: str, headers: dict[str, str], prompt: str = HIT_PROMPT, scopes: int = 1) -> RawFor:
    raws = [encode_request(url, body(prompt, s), headers) for s in range(scopes)]
    return lambda i: raws[i % scopes]


def paraphrase_requests(url: str, headers: dict[str, str], texts: list[str], scopes: int = 1) -> RawFor:
    """`--paraphrases distinct`: the i-th request sent (a counter of its own, so a closed loop before the open one
    does not start the texts over) is `paraphrases.rotation`'s text in its scope."""
    sent = itertools.count()

    def raw_for(_: int) -> bytes:
        scope, text = paraphrases.rotation(next(sent), len(texts), scopes)
        return encode_request(url, body(texts[text], scope), headers)

    return raw_for


def miss_requests(url: str, headers: dict[str, str], scopes: int = 1) -> RawFor:
    run = uuid.uuid4().hex[:8]
    return lambda i: encode_request(url, body(f"Question {run}-{i}: what is {i} + {i}?", i % scopes), headers)


def populated_miss_requests(url: str, headers: dict[str, str], texts: list[str], scopes: int = 1) -> RawFor:
    """`--misses populated`: bench/miss_prompts.py's prompts with the seeded rows' guard classes (a counter of its
    own, so no text is sent twice by one bench run: `texts` has more than it sends)."""
    sent = itertools.count()
    return lambda i: encode_request(url, body(texts[next(sent)], i % scopes), headers)


# -- load loops (rawhttp + loadgen's RunResult; a new request body per request) ------------------------------------
@contextmanager
def client_gc_paused() -> Iterator[None]:
    """This process's cyclic garbage collector off for a timed run (collected before and after). Its full
    collections walked the ~70,000 live objects of this script (the embedder, redis, httpx, the gateway modules it
    imports) in ~50 ms on this machine, during which no request was sent or read: the requests scheduled meanwhile
    showed a 50-60 ms latency that was the load generator's, not the gateway's (one such pause in a 5 s run is a
    p99 of tens of ms). The run's garbage is freed by reference counting; its few cycles wait for the end."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def closed(url: str, raw_for: RawFor, *, connections: int, duration: float, warmup: float = 1.0) -> RunResult:
    """`connections` clients back to back; only answers inside the recorded window count."""
    pool = Pool.for_url(url, connections)
    await pool.warm(connections)
    counter = itertools.count()
    result = RunResult("closed", False, duration, connections=connections)
    begin = time.perf_counter() + warmup
    end = begin + duration

    async def worker() -> None:
        while time.perf_counter() < end:
            try:
                reply = await fetch(pool, raw_for(next(counter)))
            except (ConnectionClosed, OSError) as exc:
                result.errors[type(exc).__name__] += 1
                continue
            if reply.sent < begin or reply.done > end:
                continue
            if reply.status >= 400:
                result.errors[f"HTTP {reply.status}"] += 1
                continue
            result.ok += 1
            result.latencies.append((reply.done - reply.sent) * 1000)

    await asyncio.gather(*(worker() for _ in range(connections)))
    pool.close()
    result.achieved_rate = result.ok / duration
    return result


async def opened(url: str, raw_for: RawFor, *, rate: float, duration: float, connections: int,
                 warmup: float = 1.0) -> RunResult:
    """`rate` req/s at scheduled times over at most `connections` connections; latency from the schedule."""
    pool = Pool.for_url(url, connections)
    await pool.warm(connections)
    n_warm, n = int(warmup * rate), max(1, int(duration * rate))
    result = RunResult("open", False, duration, offered_rate=rate, connections=connections)

    async def one(index: int, scheduled: float) -> None:
        try:
            reply = await fetch(pool, raw_for(index))
        except (ConnectionClosed, OSError) as exc:
            result.errors[type(exc).__name__] += 1
            return
        if index < n_warm:
            return
        if reply.status >= 400:
            result.errors[f"HTTP {reply.status}"] += 1
            return
        result.ok += 1
        result.latencies.append((reply.done - min(scheduled, reply.sent)) * 1000)

    tasks = []
    t0 = time.perf_counter() + 0.01
    for i, offset in enumerate(arrival_offsets(n_warm + n, rate, poisson=False)):
        delay = t0 + offset - time.perf_counter() - 0.0005
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.get_running_loop().create_task(one(i, t0 + offset)))
    await asyncio.wait(tasks, timeout=30)
    pool.close()
    result.sent = n
    result.achieved_rate = result.ok / duration
    return result


# -- targets ----------------------------------------------------------------------------------------------------------
@contextmanager
def run_gateway(upstream: str, redis_url: str, semantic_rows: int = 0,
                tree: Path = ROOT) -> Iterator[tuple[str, dict[str, str]]]:
    with run_gateway_process(upstream, redis_url, semantic_rows, tree) as (base, headers, _):
        yield base, headers


@contextmanager
def run_gateway_process(upstream: str, redis_url: str, semantic_rows: int = 0,
                        tree: Path = ROOT, workers: int = 1) -> Iterator[tuple[str, dict[str, str], Any]]:
    """`python -m gateway serve` from `tree` (this checkout, or a baseline's); yields (base URL, headers, server)."""
    port = free_port()
    cache: dict[str, Any] = {"key_prefix": GATEWAY_PREFIX}
    if semantic_rows:
        cache = {"key_prefix": SEMANTIC_PREFIX, "semantic": {
            "enabled": True, "default": True, "max_rows_per_scope": semantic_rows + 200_000,
            "max_vectors": semantic_rows + 200_000}}
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        config = Path(tmp) / "gateway.yaml"
        config.write_text(json.dumps({"cache": cache}))
        argv = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--upstream-url", upstream, "--redis-url", redis_url, "--config", str(config), "--log-level", "warning", "--workers", str(workers)]
        env = {"PYTHONPATH": os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)}
        with spawn_server(argv, f"http://127.0.0.1:{port}/readyz", timeout=120, env=env, cwd=tree) as server:
            yield f"http://127.0.0.1:{port}/v1", {"x-gateway-route": "upstream"}, server


@contextmanager
def run_litellm_cached(upstream: str, redis_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """LiteLLM's proxy (bench/litellm_proxy.py's venv and config) with `cache: true` on Redis."""
    exe = litellm_proxy.ensure_venv()
    parts = urlsplit(redis_url)
    db = int((parts.path or "/0").lstrip("/") or 0)
    cache = (
        "litellm_settings:\n  cache: true\n  cache_params:\n    type: redis\n"
        f"    host: {parts.hostname}\n    port: {parts.port or 6379}\n    db: {db}\n"
        f"    namespace: {LITELLM_NAMESPACE}\n    ttl: 3600\n"
    )
    text = litellm_proxy.config_yaml(upstream, [MODEL]).replace("litellm_settings:\n", cache, 1)
    with tempfile.TemporaryDirectory(prefix="litellm-cache-bench-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(text)
        port = free_port()
        argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        env = {**litellm_proxy.ENV, "HOME": os.environ.get("HOME", tmp)}
        with spawn_server(argv, f"http://127.0.0.1:{port}/health/liveliness", timeout=240, env=env, cwd=tmp):
            yield f"http://127.0.0.1:{port}/v1", dict(litellm_proxy.AUTH_HEADERS)


def upstream_calls(upstream: str) -> int:
    return int(httpx.get(upstream.removesuffix("/v1") + "/_fake/stats").json()["chat_completions"])


FILLER_CLASSES = ("one", "spread")
"""`--filler-classes`: every seeded row with the guard signature of "filler prompt" (whose classes are the stored
prompt's and its paraphrases': every hit and populated miss scans the whole scope), or with those of real prompts
in turn (`real_guards`)."""
REAL_PROMPTS = ("../shared/data/chat/arena-hard-prompts.jsonl", "../shared/data/routing/dev.jsonl")


def real_guards() -> list[bytes]:
    """The encoded guard signatures of the 11,838 arena-hard and routing-dev prompts (cut at 2,000 characters, as
    the semantic layer does), in file order: 3.1 % of them have the stored prompt's guard classes."""
    from gateway.cache.semantic.guard import LexicalGuard, encode_signature

    guard = LexicalGuard()
    out = []
    for name in REAL_PROMPTS:
        with open(ROOT / name, encoding="utf-8") as lines:
            out += [encode_signature(guard.signature(json.loads(line)["prompt"][:2000])) for line in lines]
    return out


def seed_semantic_scope(r: redis.Redis, rows: int, scope: int = 0, guards: list[bytes] | None = None) -> str:
    """`rows` random unit vectors in the scope of the bench's requests (tenant "anonymous", upstream, MODEL,
    `body(..., scope)`), in the gateway's stream format (gateway/cache/semantic/redis_index.py), with the guard
    signature of "filler prompt", or `guards` in turn; the stream key."""
    import numpy as np

    from gateway.cache.semantic.guard import LexicalGuard, encode_signature
    from gateway.cache.semantic.scope import scope_of_request

    found = scope_of_request("anonymous", "upstream", MODEL, json.loads(body(HIT_PROMPT, scope)))
    assert not isinstance(found, str)
    key = f"{SEMANTIC_PREFIX}:{found[0].scope_id}"
    rng = np.random.default_rng(7 + scope)
    filler = encode_signature(LexicalGuard().signature("filler prompt"))
    expires = str(int(time.time() * 1000) + 3_600_000)
    for start in range(0, rows, 1000):
        block = rng.standard_normal((min(1000, rows - start), 256)).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        with r.pipeline(transaction=False) as pipe:
            for i, vector in enumerate(block):
                guard = guards[(start + i) % len(guards)] if guards else filler
                pipe.xadd(key, {"k": f"{SEMANTIC_PREFIX}:filler:{start + i}", "v": vector.tobytes(), "g": guard,
                                "x": expires})
            pipe.execute()
    r.pexpire(key, 3_600_000)
    return key


def semantic_rejections(url: str, reason: str) -> float:
    for line in httpx.get(url.split("/v1", 1)[0] + "/metrics").text.splitlines():
        if line.startswith(f'slm_gateway_semantic_cache_rejected_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def semantic_counters(url: str) -> dict[str, float]:
    """The gateway's semantic miss reasons (`rejected:<reason>`), guard refusals (`guard:<check>`) and `hits`."""
    names = {"slm_gateway_semantic_cache_rejected_total{reason=": "rejected",
             "slm_gateway_semantic_cache_guard_refusals_total{check=": "guard"}
    out: dict[str, float] = {}
    for line in httpx.get(url.split("/v1", 1)[0] + "/metrics").text.splitlines():
        if line.startswith("slm_gateway_semantic_cache_hits_total "):
            out["hits"] = float(line.rsplit(" ", 1)[1])
        for start, kind in names.items():
            if line.startswith(start):
                out[f"{kind}:{line[len(start):].split(chr(34))[1]}"] = float(line.rsplit(" ", 1)[1])
    return out


def median_ms(url: str, contents: list[bytes], headers: dict[str, str], n: int = 20) -> tuple[float, str]:
    """Median latency of `n` sequential requests (`contents` in turn), and the last one's `x-gateway-cache`."""
    times, outcome = [], ""
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            started = time.perf_counter()
            answer = client.post(url, content=contents[i % len(contents)],
                                 headers={**headers, "content-type": "application/json"})
            times.append((time.perf_counter() - started) * 1000)
            outcome = answer.headers.get("x-gateway-cache", "")
    return sorted(times)[n // 2], outcome


def warm_semantic(url: str, headers: dict[str, str], scopes: int, settle_seconds: float, warm_texts: list[str],
                  settle_texts: list[str]) -> str:
    """Store the hit prompt in every scope (a miss) and wait until its paraphrase is a semantic hit (the replica's
    mirror has caught up with the seeded scope), then up to `settle_seconds` until a paraphrase hit is about as fast
    as an exact hit (a large mirror's approximate index is built in the background); what was seen, as a note.
    The settling hits are `settle_texts` in turn: one paraphrase each time would be answered by the scope's
    remembered search (`ScopeMatrix.search`) as fast with the exact scan as with the index, and the runs started
    before the index was installed (seen: 299.7 ms p99 in one run of a 100,000-row scope)."""
    post = {"headers": {**headers, "content-type": "application/json"}, "timeout": 30}
    no_store = {**headers, "cache-control": "no-store"}
    deadline = time.monotonic() + 120
    # a lookup on a cold mirror waits for the catch-up only up to its deadline (a miss, not indexed): warm it first.
    # The warm-up prompts are not stored (no-store): stored, a later one could come near an earlier one (two random
    # hex strings reach the threshold now and then), be refused by the guard instead, and the wait never end
    for scope in range(scopes):
        before = semantic_rejections(url, "threshold")
        while semantic_rejections(url, "threshold") == before:
            if time.monotonic() > deadline:
                raise RuntimeError("the mirror of a seeded scope never caught up")
            # a new prompt with the seeded rows' guard classes: embedded and scanned (a number would make it a
            # `classes` miss, decided without the scan)
            text = warm_texts[int(uuid.uuid4().int % len(warm_texts))]
            httpx.post(url, content=body(text, scope), timeout=30,
                       headers={**no_store, "content-type": "application/json"}).raise_for_status()
            time.sleep(0.05)
        while True:
            # (again each time: on a loaded machine the store of its answer, or its indexing, may be over a deadline)
            httpx.post(url, content=body(HIT_PROMPT, scope), **post).raise_for_status()
            paraphrase = httpx.post(url, content=body(PARAPHRASE, scope), timeout=30,
                                    headers={**no_store, "content-type": "application/json"})
            if paraphrase.headers.get("x-gateway-cache") == "semantic-hit":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the paraphrase never became a semantic hit")
            time.sleep(0.05)
    settle = time.monotonic() + settle_seconds
    while True:
        exact, _ = median_ms(url, [body(HIT_PROMPT)], headers)
        para, outcome = median_ms(url, [body(text) for text in settle_texts], no_store)
        note = f"sequential medians before the runs: exact hit {exact:.2f} ms, semantic hit {para:.2f} ms ({outcome})"
        if para <= exact + 1.0 or time.monotonic() > settle:
            return note
        time.sleep(1.0)


SETTLE_TEXTS = 20
"""Distinct paraphrases `warm_semantic` settles with (the last of bench/paraphrases.py's)."""

SEMANTIC_KINDS = ("semantic-hit", "exact-hit", "semantic-miss", "exact-miss")
"""What a semantic gateway is loaded with, one open-loop run each: a paraphrase of the stored prompt (sent with
`Cache-Control: no-store`, so a lookup over its deadline stays a miss and shows as an upstream call instead of
storing the paraphrase's answer under its own key and turning the run into exact hits), the stored prompt itself,
new prompts (exact miss, then a semantic miss over the growing scope, the upstream, the store and the indexing),
and new prompts with `x-gateway-cache: exact` (the same without the semantic lookup): the last two give what a
semantic miss adds, in the same process."""


def semantic_kinds(modes: list[str], misses: tuple[str, ...] = ("numbered",)) -> tuple[str, ...]:
    """`SEMANTIC_KINDS` for `--paraphrases`: `semantic-hit` is the distinct run when asked for, else the repeated
    one; with both, the repeated one follows as `semantic-hit-repeat`. With `--misses populated` a last run,
    `semantic-miss-populated`: new prompts with the seeded rows' guard classes (bench/miss_prompts.py)."""
    kinds = SEMANTIC_KINDS
    if "distinct" in modes and "repeat" in modes:
        kinds = ("semantic-hit", "semantic-hit-repeat", *SEMANTIC_KINDS[1:])
    return (*kinds, "semantic-miss-populated") if "populated" in misses else kinds


def semantic_requests(kind: str, url: str, headers: dict[str, str], scopes: int,
                      texts: list[str] | None = None, populated: list[str] | None = None) -> RawFor:
    """`texts`: the distinct paraphrases a semantic-hit run rotates through (None: `PARAPHRASE` each time)."""
    if kind == "semantic-hit" and texts:
        return paraphrase_requests(url, {**headers, "cache-control": "no-store"}, texts, scopes)
    if kind in ("semantic-hit", "semantic-hit-repeat"):
        return hit_requests(url, {**headers, "cache-control": "no-store"}, PARAPHRASE, scopes)
    if kind == "exact-hit":
        return hit_requests(url, headers, HIT_PROMPT, scopes)
    if kind == "exact-miss":
        return miss_requests(url, {**headers, "x-gateway-cache": "exact"}, scopes)
    if kind == "semantic-miss-populated":
        assert populated is not None
        return populated_miss_requests(url, headers, populated, scopes)
    return miss_requests(url, headers, scopes)


def measure_semantic(base: str, headers: dict[str, str], upstream: str, args: argparse.Namespace, *, rows: int,
                     scopes: int, pgid: int, label: str, texts: list[str] | None = None) -> dict[str, Any]:
    """Warm the gateway (`warm_semantic`), then one open-loop run per `SEMANTIC_KINDS` (and closed loops with
    `--closed`): p50/p99, the gateway's CPU per request, upstream calls; for a semantic-hit run with upstream calls
    also the lookups that missed and why (the gateway's counters)."""
    url = base + "/chat/completions"
    note = warm_semantic(url, headers, scopes, args.settle, args.populated[miss_prompts.WARM_UP:],
                         (texts or paraphrases.checked().kept)[-SETTLE_TEXTS:])
    name = f"{label} {rows:,}" + (f" / {scopes} scopes" if scopes > 1 else "")
    print(f"  {name}: {note}", flush=True)
    out: dict[str, Any] = {"target": name, "tree": label, "rows": rows, "scopes": scopes, "note": note,
                           "load_average": procstat.load_average()}
    for kind in semantic_kinds(args.paraphrases, args.misses):
        hit_run = kind.startswith("semantic-hit")
        raw_for = semantic_requests(kind, url, headers, scopes, texts, args.populated[:miss_prompts.WARM_UP])
        figures: dict[str, Any] = {}
        counters = semantic_counters(url) if hit_run else {}
        if args.closed and kind in ("semantic-hit", "semantic-miss"):
            with client_gc_paused():
                c = run_async(lambda: closed(url, raw_for, connections=args.connections, duration=args.duration))
            cs = c.stats()
            figures.update(closed_rps=round(c.achieved_rate, 1), closed_p50=round(cs["p50"], 2),
                           closed_p99=round(cs["p99"], 2))
        before, cpu = upstream_calls(upstream), procstat.group_cpu_seconds(pgid)
        with client_gc_paused():
            o = run_async(lambda: opened(url, raw_for, rate=args.rate, duration=args.duration,
                                         connections=args.connections))
        cpu = procstat.group_cpu_seconds(pgid) - cpu
        calls = upstream_calls(upstream) - before
        os_ = o.stats()
        served = max(1, o.sent + int(args.rate))  # the recorded requests and the 1 s warm-up before them
        figures.update(open_p50=round(os_["p50"], 2), open_p99=round(os_["p99"], 2), achieved=round(o.achieved_rate, 1),
                       cpu_ms=round(cpu * 1000 / served, 3), errors=o.error_count, upstream_calls=calls, requests=o.ok)
        if hit_run:
            after = semantic_counters(url)
            moved = {k: round(v - counters.get(k, 0.0)) for k, v in after.items() if v != counters.get(k, 0.0)}
            figures.update(misses=sum(v for k, v in moved.items() if k.startswith("rejected:")), counters=moved)
        out[kind] = figures
        closed_part = (f"closed {figures['closed_rps']:7.1f} req/s p99 {figures['closed_p99']:7.2f} | "
                       if "closed_rps" in figures else "")
        print(f"  {name:<30} {kind:<19} {closed_part}open {args.rate:.0f}/s ({o.achieved_rate:.0f}) p50 "
              f"{os_['p50']:7.2f}  p99 {os_['p99']:8.2f}  cpu {figures['cpu_ms']:.3f} ms/req | upstream calls {calls}"
              f"{'  ERRORS ' + str(o.error_count) if o.error_count else ''}", flush=True)
        if hit_run and (calls or figures["misses"]):
            print(f"  {name:<30} {kind:<19} NOT ALL HITS: {figures['misses']} lookups missed, {calls} upstream calls; "
                  f"counters moved: {figures['counters']}", flush=True)
    return out


def clear(r: redis.Redis) -> None:
    for pattern in (f"{GATEWAY_PREFIX}:*", f"{SEMANTIC_PREFIX}:*", f"{LITELLM_NAMESPACE}:*"):
        keys = list(r.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            r.delete(*keys[i : i + 500])


def measure(name: str, base: str, headers: dict[str, str], upstream: str, args: argparse.Namespace) -> dict[str, Any]:
    url = base + "/chat/completions"
    warm = httpx.post(url, content=hit_requests(url, headers)(0).split(b"\r\n\r\n", 1)[1],
                      headers={**headers, "content-type": "application/json"}, timeout=30)
    warm.raise_for_status()
    out: dict[str, Any] = {"target": name}
    for kind, raw_for in (("hit", hit_requests(url, headers)), ("miss", miss_requests(url, headers))):
        before = upstream_calls(upstream)
        with client_gc_paused():
            c = run_async(lambda: closed(url, raw_for, connections=args.connections, duration=args.duration))
            o = run_async(lambda: opened(url, raw_for, rate=args.rate, duration=args.duration,
                                         connections=args.connections))
        calls = upstream_calls(upstream) - before
        cs, os_ = c.stats(), o.stats()
        out[kind] = {
            "closed_rps": round(c.achieved_rate, 1), "closed_p50": round(cs["p50"], 2), "closed_p99": round(cs["p99"], 2),
            "open_p50": round(os_["p50"], 2), "open_p99": round(os_["p99"], 2), "errors": c.error_count + o.error_count,
            "upstream_calls": calls, "requests": c.ok + o.ok,
        }
        print(f"  {name:<14} {kind:<5} closed {c.achieved_rate:8.1f} req/s  p50 {cs['p50']:7.2f}  p99 {cs['p99']:7.2f} | "
              f"open {args.rate:.0f}/s p50 {os_['p50']:6.2f}  p99 {os_['p99']:7.2f} | upstream calls {calls}"
              f"{'' if not out[kind]['errors'] else '  ERRORS ' + str(out[kind]['errors'])}", flush=True)
    return out


def hit_cost_us() -> dict[str, float]:
    """In-process cost of a hit's own work: key (canonicalise + hash), entry decode, replay encode."""
    from gateway.openai.request import parse_chat_request
    from gateway.cache.entry import CacheEntry, completion_body, decode_entry, encode_entry
    from gateway.cache.keys import cache_key

    parsed = parse_chat_request(body("What is the capital of France? (cache bench)"))
    entry = CacheEntry(MODEL, "Paris is the capital of France.", "stop", 20, 7, "upstream", 1700000000)
    data = encode_entry(entry)
    n = 20000

    def per_call(fn: Callable[[], object]) -> float:
        return min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6

    return {
        "key_us": round(per_call(lambda: cache_key("p", "t-abc", "upstream", MODEL, parsed.raw)), 2),
        "decode_us": round(per_call(lambda: decode_entry(data)), 2),
        "replay_us": round(per_call(lambda: completion_body(entry)), 2),
    }


def print_medians(runs: list[dict[str, Any]], populated: bool) -> None:
    """`--repeat`: per tree and configuration, the median semantic hit p99 and miss adds p50 (and CPU) over its runs,
    and how many runs met each target."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for sem in runs:
        groups.setdefault((sem["tree"], sem["rows"], sem["scopes"]), []).append(sem)
    print("\nmedians over the repeated runs (targets: semantic hit p99 <= 3 ms, a semantic miss adds <= 0.5 ms p50):")
    for (tree, rows, scopes), group in sorted(groups.items(), key=lambda item: (item[0][1], item[0][2], item[0][0])):
        p99 = [sem["semantic-hit"]["open_p99"] for sem in group]
        adds = [sem["semantic-miss"]["open_p50"] - sem["exact-miss"]["open_p50"] for sem in group]
        cpu = [sem["semantic-miss"]["cpu_ms"] - sem["exact-miss"]["cpu_ms"] for sem in group]
        line = (f"  {tree:<10} {rows:>8,} in {scopes:>3} scope(s), {len(group)} runs: semantic hit p99 "
                f"{statistics.median(p99):.2f} ms (met in {sum(x <= 3.0 for x in p99)}); miss adds "
                f"{statistics.median(adds):+.2f} ms p50 (met in {sum(x <= 0.5 for x in adds)}; cpu "
                f"{statistics.median(cpu):+.3f} ms/req); hit cpu "
                f"{statistics.median(sem['semantic-hit']['cpu_ms'] for sem in group):.3f} ms/req")
        if populated:
            more = [sem["semantic-miss-populated"]["open_p50"] - sem["exact-miss"]["open_p50"] for sem in group]
            line += f"; populated miss adds {statistics.median(more):+.2f} ms p50"
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="recorded seconds per run (<= 60)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=320.0, help="open-loop offered rate, req/s")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--semantic", type=int, nargs="+", default=[], metavar="N",
                        help="also measure the semantic cache with N vectors seeded (one configuration per N)")
    parser.add_argument("--scopes", type=int, nargs="+", default=[1], metavar="S",
                        help="with --semantic: spread the N vectors (and the requests) over S scopes (one "
                             "configuration per N and S)")
    parser.add_argument("--baseline-tree", type=Path, metavar="DIR",
                        help="with --semantic: also run each configuration's gateway from this checkout (e.g. "
                             "`git worktree add --detach /tmp/base main`), alternating which goes first")
    parser.add_argument("--closed", action="store_true",
                        help="with --semantic: also closed loops (throughput) of semantic hits and misses")
    parser.add_argument("--workers", type=int, default=1,
                        help="with --semantic: gateway worker processes (both trees; default 1, as deployed by default)")
    parser.add_argument("--paraphrases", choices=("distinct", "repeat"), nargs="+", default=["distinct"],
                        help="with --semantic: semantic-hit runs rotate through bench/paraphrases.py's distinct "
                             "paraphrases (more than the gateway's prompt memo holds; checked as hits in-process at "
                             "start) or send the one PARAPHRASE each time (the memoised case); both: both runs")
    parser.add_argument("--settle", type=float, default=30.0, metavar="SECONDS",
                        help="with --semantic: wait up to this long after warming for a large scope's approximate "
                             "index (until a sequential paraphrase hit is within 1 ms of an exact hit)")
    parser.add_argument("--skip-exact", action="store_true", help="skip the exact-only gateway's hit/miss runs")
    parser.add_argument("--misses", choices=("numbered", "populated"), nargs="+", default=["numbered"],
                        help="with --semantic: semantic-miss runs of new prompts with numbers of their own (each in "
                             "guard classes no stored row has: a miss before embedding) and, with `populated`, also a "
                             "run of new prompts with the seeded rows' guard classes (embedded, the scope scanned; "
                             "bench/miss_prompts.py)")
    parser.add_argument("--filler-classes", choices=FILLER_CLASSES, default="one",
                        help="with --semantic: the seeded rows' guard classes: `one` (\"filler prompt\"'s, which are "
                             "the stored prompt's and its paraphrases': every hit and populated miss scans the whole "
                             "scope, the worst case) or `spread` (real prompts' in turn, 3.1 %% of them in the hit's "
                             "classes: a lookup at 10,000 rows scans only those; gateway/cache/semantic/index.py)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="with --semantic: run each configuration N times (alternating which tree goes first) "
                             "and print each tree's median figures too (this machine's run-to-run noise is as large "
                             "as the differences measured)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    args.duration = min(max(args.duration, 1.0), 60.0)

    r = redis.Redis.from_url(args.redis_url)
    r.ping()
    redis_version = r.info("server")["redis_version"]
    clear(r)
    results: dict[str, Any] = {
        "machine": procstat.machine_line(), "load_average_before": procstat.load_average(),
        "redis": redis_version, "connections": args.connections, "rate": args.rate, "duration": args.duration,
        "hit_cost": hit_cost_us(), "targets": [],
    }
    print(f"machine: {results['machine']}; redis {redis_version}; load {results['load_average_before']}")
    print(f"hit work in-process: {results['hit_cost']}")
    texts = None
    args.misses = tuple(sorted(set(args.misses)))
    guards = real_guards() if args.filler_classes == "spread" else None
    args.populated = miss_prompts.populated_texts(miss_prompts.WARM_UP + 10_000)  # run texts, then warm-up ones
    if "populated" in args.misses:
        miss_prompts.check_populated(len(args.populated))
    args.paraphrases = sorted(set(args.paraphrases))  # distinct first
    results["paraphrases"] = {"mode": args.paraphrases}
    if args.semantic and "distinct" in args.paraphrases:
        found = paraphrases.checked()
        print(found.summary())
        if len(found.kept) < paraphrases.MIN_DISTINCT:
            raise SystemExit(f"only {len(found.kept)} paraphrases are semantic hits (need {paraphrases.MIN_DISTINCT}): "
                             f"refused {found.refused}")
        texts = found.kept
        results["paraphrases"].update(kept=len(found.kept), dropped=len(found.refused), threshold=found.threshold,
                                      min_similarity=round(found.min_similarity, 4))
    try:
        with run_fake_upstream() as upstream:
            if not args.skip_exact:
                with run_gateway(upstream, args.redis_url) as (base, headers):
                    results["targets"].append(measure("slm-gateway", base, headers, upstream, args))
            trees = [("this tree", ROOT)] + ([("baseline", args.baseline_tree.resolve())] if args.baseline_tree else [])
            results["semantic"] = []
            configs = itertools.product(args.semantic, args.scopes, range(args.repeat))
            for round_no, (rows, scopes, _) in enumerate(configs):
                order = trees if round_no % 2 == 0 else trees[::-1]
                for label, tree in order:
                    clear(r)
                    for scope in range(scopes):
                        seed_semantic_scope(r, rows // scopes, scope, guards)
                    with run_gateway_process(upstream, args.redis_url, semantic_rows=rows, tree=tree,
                                             workers=args.workers) as (
                            base, headers, server):
                        results["semantic"].append(measure_semantic(
                            base, headers, upstream, args, rows=rows, scopes=scopes, pgid=server.pid, label=label,
                            texts=texts))
            if not args.skip_litellm:
                name = f"litellm {litellm_proxy.version()}"
                with run_litellm_cached(upstream, args.redis_url) as (base, headers):
                    results["targets"].append(measure(name, base, headers, upstream, args))
    finally:
        clear(r)
        r.close()
    print("\ntarget          kind   closed r/s   c.p50   c.p99   open p50   open p99   upstream calls")
    for t in results["targets"]:
        for kind in ("hit", "miss"):
            f = t[kind]
            print(f"{t['target']:<15} {kind:<5} {f['closed_rps']:>11.1f} {f['closed_p50']:>7.2f} {f['closed_p99']:>7.2f} "
                  f"{f['open_p50']:>10.2f} {f['open_p99']:>10.2f} {f['upstream_calls']:>16}")
    gw = next((t for t in results["targets"] if t["target"] == "slm-gateway"), None)
    if gw is not None:
        verdict = "met" if gw["hit"]["open_p99"] <= 3.0 else "NOT met"
        print(f"\ntarget: gateway hit p99 <= 3 ms at {args.rate:.0f} req/s over {args.connections} connections: "
              f"{gw['hit']['open_p99']:.2f} ms ({verdict}); closed-loop hit p99 with {args.connections} clients "
              f"back to back: {gw['hit']['closed_p99']:.2f} ms")
    if results["semantic"]:
        kinds = semantic_kinds(args.paraphrases, args.misses)
        repeated = f"the one paraphrase {PARAPHRASE!r} each time"
        mode = (f"semantic-hit: {len(texts):,} distinct paraphrases, rotated" if texts else f"semantic-hit: {repeated}")
        if "semantic-hit-repeat" in kinds:
            mode += f"; semantic-hit-repeat: {repeated}"
        print(f"\nsemantic cache, open loop at {args.rate:.0f} req/s over {args.connections} connections "
              f"(ms; cpu: the gateway's CPU ms per request); --paraphrases {' '.join(args.paraphrases)} ({mode}):")
        populated = "semantic-miss-populated" in kinds
        print(f"{'tree':<10} {'vectors':>8} {'scopes':>6} | " + " | ".join(f"{k:^28}" for k in kinds)
              + " | miss adds p50" + (" | populated adds" if populated else ""))
        print(f"{'':<10} {'':>8} {'':>6} | " + " | ".join(f"{'p50':>7} {'p99':>8} {'cpu':>6} {'up':>4}"
                                                          for _ in kinds) + " |")
        for sem in results["semantic"]:
            cells = " | ".join(f"{sem[k]['open_p50']:>7.2f} {sem[k]['open_p99']:>8.2f} {sem[k]['cpu_ms']:>6.3f} "
                               f"{sem[k]['upstream_calls']:>4}" for k in kinds)
            adds = sem["semantic-miss"]["open_p50"] - sem["exact-miss"]["open_p50"]
            extra = (f" | {sem['semantic-miss-populated']['open_p50'] - sem['exact-miss']['open_p50']:+.2f} ms"
                     if populated else "")
            print(f"{sem['tree']:<10} {sem['rows']:>8,} {sem['scopes']:>6} | {cells} | {adds:+.2f} ms{extra}")
        print("('up': upstream calls in the run: 0 for hits; a hit run's calls are lookups that missed)")
        for sem in results["semantic"]:
            for kind in kinds[:2]:
                hit = sem[kind]
                if kind.startswith("semantic-hit") and (hit["upstream_calls"] or hit["misses"]):
                    print(f"NOT ALL HITS [{sem['tree']}, {sem['rows']:,} in {sem['scopes']} scope(s)]: {hit['misses']} "
                          f"{kind} lookups missed, {hit['upstream_calls']} upstream calls: {hit['counters']}")
        for sem in results["semantic"]:
            hit = sem["semantic-hit"]["open_p99"]
            adds = sem["semantic-miss"]["open_p50"] - sem["exact-miss"]["open_p50"]
            cpu = sem["semantic-miss"]["cpu_ms"] - sem["exact-miss"]["cpu_ms"]
            print(f"target [{sem['tree']}, {sem['rows']:,} in {sem['scopes']} scope(s)]: semantic hit p99 <= 3 ms: "
                  f"{hit:.2f} ({'met' if hit <= 3.0 else 'NOT met'}); a semantic miss adds <= 0.5 ms p50: "
                  f"{adds:+.2f} ({'met' if adds <= 0.5 else 'NOT met'}; cpu {cpu:+.3f} ms/req)"
                  + (f"; a populated miss adds {sem['semantic-miss-populated']['open_p50'] - sem['exact-miss']['open_p50']:+.2f}"
                     f" (cpu {sem['semantic-miss-populated']['cpu_ms'] - sem['exact-miss']['cpu_ms']:+.3f} ms/req)"
                     if populated else "") + f"; load {sem['load_average']}")
        if args.repeat > 1:
            print_medians(results["semantic"], populated)
    print(f"machine: {results['machine']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

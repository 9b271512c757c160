"""Semantic cache benchmark (component level, in-process; optionally the Redis index too).

Prints, on this machine:
  embed    the bundled embedder's latency per prompt: the pair set's prompts (short) and arena-hard prompts
           (cut at the semantic layer's 2,000-character limit)
  lookup   SemanticCache.lookup p50/p99 for hits and for misses with N stored vectors, for N = 10,000 and
           100,000 in one scope and spread over 100 scopes (the in-process index and store; hits are the
           pair set's paraphrases of stored prompts, the rest of the scope is random unit vectors)
  added    the cost of a semantic miss (embed + scan) over an exact miss (cache_key + MemoryStore.get)

Each figure is given as wall-clock time and as the thread's CPU time: on a machine with more runnable
processes than cores the wall clock mostly measures waiting for a core, the CPU time does not.

    python bench/semantic_cache.py [--lookups 400] [--sizes 10000x1,100000x1,10000x100,100000x100]
                                   [--redis-url redis://127.0.0.1:6379/5] [--json FILE]

Lookups embed as the gateway does (short prompts in the event loop, longer ones in a worker thread); for 10,000
vectors in one scope the same lookups are also measured embedding always in the worker thread and always in the
event loop.

With --redis-url the Redis index is measured with 10,000 vectors in one scope (the DB is flushed first and after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cache.keys import cache_key  # noqa: E402
from gateway.cache.memory import MemoryStore  # noqa: E402
from gateway.cache.semantic.cache import INLINE_CHARS, SemanticCache, SemanticHit, SemanticSettings  # noqa: E402
from gateway.cache.semantic.calibrate import DEFAULT_PAIRS, load_pairs, shipped_threshold  # noqa: E402
from gateway.cache.semantic.guard import LexicalGuard, encode_signature  # noqa: E402
from gateway.cache.semantic.index import MemoryVectorIndex  # noqa: E402
from gateway.cache.semantic.scope import scope_of_request  # noqa: E402
from gateway.embedding import WordLlamaEmbedder  # noqa: E402

ARENA = Path("/work/shared/data/chat/arena-hard-prompts.jsonl")
TTL_MS = 3_600_000


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def line(label: str, samples: list[tuple[float, float]]) -> dict[str, float]:
    """Wall-clock and this thread's CPU time of each sample (CPU time does not count waiting for a core)."""
    if not samples:
        print(f"  {label:48s} (none)")
        return {"n": 0}
    wall = [w for w, _ in samples]
    cpu = [c for _, c in samples]
    row = {"p50_ms": round(pct(wall, 50), 4), "p99_ms": round(pct(wall, 99), 4),
           "cpu_p50_ms": round(pct(cpu, 50), 4), "cpu_p99_ms": round(pct(cpu, 99), 4), "n": len(samples)}
    print(f"  {label:48s} wall p50 {row['p50_ms']:8.4f} p99 {row['p99_ms']:8.4f} ms | "
          f"cpu p50 {row['cpu_p50_ms']:8.4f} p99 {row['cpu_p99_ms']:8.4f} ms  (n={row['n']})")
    return row


class Timer:
    """Wall-clock and thread CPU time of a block."""

    def __enter__(self) -> "Timer":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample = (time.perf_counter() - self._wall, time.process_time() - self._cpu)


def bench_embed(embedder: WordLlamaEmbedder, short: list[str], arena: list[str]) -> dict[str, dict[str, float]]:
    print("embed (one prompt per call)")
    out = {}
    for label, texts in (("pair-set prompts (avg %d chars)" % np.mean([len(t) for t in short]), short),
                         ("arena-hard prompts (avg %d chars, cut at 2000)" % np.mean([len(t) for t in arena]), arena)):
        samples = []
        for text in texts:
            with Timer() as timer:
                embedder.embed([text])
            samples.append(timer.sample)
        out[label] = line(label, samples)
    return out


def scope_for(tenant: str, text: str):
    found = scope_of_request(tenant, "upstream", "gpt-x", {"model": "m", "messages": [{"role": "user", "content": text}]})
    assert not isinstance(found, str)
    return found


EMBED_WHERE = {"gateway": "as the gateway does (<= %d chars in the event loop, longer in the worker thread)" % INLINE_CHARS,
               "thread": "always in the worker thread", "loop": "always in the event loop"}


async def bench_lookup(embedder, pairs, total: int, scopes: int, lookups: int, index=None,
                       embed: str = "gateway") -> dict[str, dict]:
    """`embed`: where prompts are embedded (EMBED_WHERE)."""
    rng = np.random.default_rng(7)
    index = index if index is not None else MemoryVectorIndex(embedder.dim, max_rows_per_scope=total, max_vectors=total)
    store = MemoryStore(total + 1000)
    executor = ThreadPoolExecutor(max_workers=1) if embed != "loop" else None
    cache = SemanticCache(embedder, index, store, SemanticSettings(shipped_threshold(embedder.name), deadline_seconds=5),
                          executor=executor, inline_chars=0 if embed == "thread" else INLINE_CHARS)
    await cache.start()
    guard = LexicalGuard()
    tenants = [f"tenant-{i}" for i in range(scopes)]
    per_scope = total // scopes
    # filler: random unit vectors with a real signature
    filler_sig = encode_signature(guard.signature("filler prompt"))
    for t_index, tenant in enumerate(tenants):
        scope, _ = scope_for(tenant, "x")
        block = rng.standard_normal((per_scope, embedder.dim)).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        for row in range(per_scope):
            await index.add(scope.scope_id, f"filler:{t_index}:{row}", block[row], filler_sig, TTL_MS)
    # the stored prompts: the 'a' side of paraphrase pairs, in tenant-0's scope (the scope being measured)
    stored = [p for p in pairs if p.same]
    for p in stored:
        scope, text = scope_for(tenants[0], p.a)
        key = cache_key("bench", tenants[0], "upstream", "gpt-x", {"messages": [p.a]})
        await store.set(key, b"answer", TTL_MS)
        await cache.store(scope, text, key, TTL_MS)
    hits: list[tuple[float, float]] = []
    misses: list[tuple[float, float]] = []
    reasons: Counter[str] = Counter()
    queries = [p.b for p in stored] + [p.b for p in pairs if not p.same]
    rng.shuffle(queries)
    for text in (queries * (1 + lookups // len(queries)))[:lookups]:
        scope, prompt = scope_for(tenants[0], text)
        with Timer() as timer:
            found = await cache.lookup(scope, prompt)
        (hits if isinstance(found, SemanticHit) else misses).append(timer.sample)
        reasons["hit" if isinstance(found, SemanticHit) else found.reason] += 1
    await cache.close()
    label = (f"{total:,} vectors in {scopes} scope{'s' if scopes > 1 else ''} ({per_scope:,}/scope), "
             f"embedding {EMBED_WHERE[embed]}")
    print(label, "  outcomes:", dict(reasons.most_common()))
    return {"outcomes": dict(reasons), "hit": line("hit", hits), "miss": line("miss (embed + scan + guard if above threshold)", misses)}


async def bench_added(embedder, pairs, lookups: int) -> dict[str, dict]:
    store = MemoryStore(10_000)
    index = MemoryVectorIndex(embedder.dim)
    cache = SemanticCache(embedder, index, store, SemanticSettings(shipped_threshold(embedder.name), deadline_seconds=5),
                          executor=ThreadPoolExecutor(max_workers=1))
    texts = [p.a for p in pairs][:lookups]
    exact: list[tuple[float, float]] = []
    semantic: list[tuple[float, float]] = []
    for text in texts:
        raw = {"model": "m", "messages": [{"role": "user", "content": text}]}
        with Timer() as timer:
            await store.get(cache_key("bench", "tenant", "upstream", "gpt-x", raw))
        exact.append(timer.sample)
        scope, prompt = scope_for("tenant", text)
        with Timer() as timer:
            await cache.lookup(scope, prompt)  # an empty scope after an exact miss: embed + scope lookup
        semantic.append(timer.sample)
    print("an exact miss vs the semantic miss that follows it (empty scope: embed + index lookup)")
    out = {"exact_miss": line("exact miss (cache_key + MemoryStore.get)", exact),
           "semantic_miss": line("semantic miss added after it", semantic)}
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=400)
    parser.add_argument("--redis-url")
    parser.add_argument("--json")
    parser.add_argument("--sizes", default="10000x1,100000x1,10000x100,100000x100",
                        help="vectors x scopes to measure (comma-separated)")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared with other work)")
    embedder = WordLlamaEmbedder()
    pairs, _ = load_pairs(DEFAULT_PAIRS)
    arena: list[str] = []
    if ARENA.exists():
        arena = [json.loads(l)["prompt"][:2000] for l in ARENA.read_text().splitlines()[:400]]
    results: dict[str, object] = {"embed": bench_embed(embedder, [p.a for p in pairs][:400], arena or ["x"])}
    results["added"] = await bench_added(embedder, pairs, args.lookups)
    for total, scopes in sizes:
        results[f"lookup_{total}_{scopes}"] = await bench_lookup(embedder, pairs, total, scopes, args.lookups)
        if (total, scopes) == (10_000, 1):  # side by side: always in the worker thread, always in the event loop
            for embed in ("thread", "loop"):
                results[f"lookup_{total}_{scopes}_{embed}"] = await bench_lookup(
                    embedder, pairs, total, scopes, args.lookups, embed=embed)
    if args.redis_url:
        import redis.asyncio as aioredis

        from gateway.cache.semantic.redis_index import RedisVectorIndex

        client = aioredis.Redis.from_url(args.redis_url)
        await client.flushdb()
        for interval in (0.0, 0.1):  # a round trip on every lookup, and the gateway's default
            index = RedisVectorIndex(args.redis_url, embedder.dim, prefix="bench", max_rows_per_scope=20_000,
                                     timeout_seconds=1, sync_interval_seconds=interval)
            print(f"Redis index, sync interval {interval} s:", end=" ")
            results[f"redis_10000_1_sync_{interval}"] = await bench_lookup(embedder, pairs, 10_000, 1, args.lookups, index)
            await client.flushdb()
        await client.aclose()
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

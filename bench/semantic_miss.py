"""What a semantic miss adds, in-process on Redis: per request an exact `GET`, the semantic lookup, the entry's
`SET` and `store_soon` (the index write), paced at --rate, against the same without the semantic part; process
CPU ms per request, two rounds each (steadier than bench/cache.py's HTTP runs on a loaded machine), and the CPU
spent inside the lookup and inside `store_soon` (the part run after the answer is sent). Seeds --rows
random vectors over --scopes scopes (keys under `micro:sem:`, deleted before and after). Compare trees by
running it with PYTHONPATH=<tree>, alternating:

    for t in $PWD /work/wt/base $PWD /work/wt/base; do PYTHONPATH=$t python bench/semantic_miss.py --rows 10000 --scopes 100; done
"""
import argparse, asyncio, json, os, time, uuid
import numpy as np
import redis as syncredis
p = argparse.ArgumentParser()
p.add_argument('--rows', type=int, default=10000); p.add_argument('--scopes', type=int, default=1)
p.add_argument('--n', type=int, default=1600); p.add_argument('--rate', type=float, default=320)
p.add_argument('--url', default='redis://127.0.0.1:6379/14')
p.add_argument('--misses', choices=('numbered', 'populated'), default='numbered',
               help="numbered: prompts with numbers of their own (guard classes no row has); populated: "
                    "bench/miss_prompts.py's, in the seeded rows' classes (embedded, scanned, guard-refused)")
a = p.parse_args()
from gateway.cache.semantic.cache import SemanticCache, SemanticSettings
from gateway.cache.semantic.redis_index import RedisVectorIndex
from gateway.cache.semantic.calibrate import shipped_threshold
from gateway.cache.semantic.guard import LexicalGuard, encode_signature
from gateway.cache.semantic.scope import scope_of_request
from gateway.cache.redis_store import RedisStore
from gateway.embedding import WordLlamaEmbedder
PREFIX = 'micro:sem'
def body(prompt, s):
    return {"model": "m", "temperature": 0, "messages": [{"role": "system", "content": f"scope {s}"}, {"role": "user", "content": prompt}]}
r = syncredis.Redis.from_url(a.url)


def clear() -> None:
    for key in list(r.scan_iter(match=f"{PREFIX}:*", count=1000)):
        r.unlink(key)


clear()
scopes = [scope_of_request("anonymous", "upstream", "m", body("x", s))[0] for s in range(a.scopes)]
rng = np.random.default_rng(7); guard = encode_signature(LexicalGuard().signature("filler prompt"))
exp = str(int(time.time()*1000) + 3_600_000)
for s, scope in enumerate(scopes):
    key = f"{PREFIX}:{scope.scope_id}"; n = a.rows // a.scopes
    for start in range(0, n, 1000):
        block = rng.standard_normal((min(1000, n-start), 256)).astype(np.float32); block /= np.linalg.norm(block, axis=1, keepdims=True)
        with r.pipeline(transaction=False) as pipe:
            for i, v in enumerate(block): pipe.xadd(key, {"k": f"f{s}:{start+i}", "v": v.tobytes(), "g": guard, "x": exp})
            pipe.execute()
async def main():
    emb = WordLlamaEmbedder()
    index = RedisVectorIndex(a.url, 256, prefix=PREFIX, sync_interval_seconds=0.1, max_rows_per_scope=400000, max_mirrored_vectors=400000)
    store = RedisStore(a.url)
    cache = SemanticCache(emb, index, store, SemanticSettings(shipped_threshold(emb.name)))
    await store.start(); await cache.start()
    for scope in scopes:  # warm every mirror
        for _ in range(200):
            await index.search(scope.scope_id, emb.embed(["warm"])[0], 4)
            m = index._mirrors.get(scope.scope_id)
            if m is not None and m.synced_at != -float('inf'): break
            await asyncio.sleep(0.01)
    await index.builds.wait()
    run = uuid.uuid4().hex[:8]
    import miss_prompts
    populated = miss_prompts.populated_texts(4 * a.n) if a.misses == 'populated' else []
    sent = iter(populated)
    rounds = iter(range(4))

    async def loop(semantic):
        round_no = next(rounds)  # in the texts: a later round's prompts are new too (not hits of an earlier one's)
        t0 = time.perf_counter(); c0 = time.process_time()
        for i in range(a.n):
            due = t0 + i / a.rate
            d = due - time.perf_counter()
            if d > 0: await asyncio.sleep(d)
            text = next(sent) if populated else f"Question {run}-{round_no}-{i}: what is {i} + {i}?"
            scope = scopes[i % len(scopes)]
            key = f"{PREFIX}:e:{run}:{int(semantic)}:{i}"
            await store.get(key)
            if semantic:
                c = time.process_time()
                found = await cache.lookup(scope, text)
                parts[0] += time.process_time() - c
            await store.set(key, b"answer", 3_600_000)
            if semantic:
                c = time.process_time()
                cache.store_soon(scope, text, key, 3_600_000, found)
                parts[1] += time.process_time() - c
        await asyncio.sleep(0.3)
        return (time.process_time() - c0) / a.n * 1000, time.perf_counter() - t0
    res = {}
    for kind in (False, True, False, True):
        parts = [0.0, 0.0]  # process CPU inside the lookup and inside store_soon (Redis I/O waits excluded)
        cpu, wall = await loop(kind)
        res.setdefault('semantic' if kind else 'exact', []).append(cpu)
        if kind:
            res.setdefault('lookup', []).append(parts[0] / a.n * 1000)
            res.setdefault('store', []).append(parts[1] / a.n * 1000)
    await cache.close(); await store.close()
    ex, se = min(res['exact']), min(res['semantic'])
    print(json.dumps({"tree": os.environ.get('PYTHONPATH'), "rows": a.rows, "scopes": a.scopes, "misses": a.misses,
                      "exact_cpu_ms": [round(x,3) for x in res['exact']], "semantic_cpu_ms": [round(x,3) for x in res['semantic']],
                      "adds_ms": round(se - ex, 3), "lookup_cpu_ms": round(min(res['lookup']), 3),
                      "store_soon_cpu_ms": round(min(res['store']), 3), "load": os.getloadavg()[0]}))
asyncio.run(main())
clear()

"""The approximate index of a large semantic scope (gateway/cache/semantic/ann.py) against the exact scan.

    PYTHONPATH=. python bench/semantic_ann.py [--random 88000]

One scope holds real prompts as fillers (the routing dev set and the arena-hard prompts under
/work/shared/data, ~12,000), the first halves of the pair set's paraphrase pairs, and `--random` random unit
vectors; each pair's second half is a query. For every query whose exact-scan best candidate is above the shipped
threshold, does the IVF (built as the gateway builds it) propose that same candidate first? Prints the agreement,
the build time and both searches' p50. In-process, no Redis.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from gateway.cache.semantic.ann import IvfIndex  # noqa: E402
from gateway.cache.semantic.calibrate import shipped_threshold  # noqa: E402
from gateway.cache.semantic.index import ScopeMatrix  # noqa: E402
from gateway.embedding import WordLlamaEmbedder  # noqa: E402
from quantiles import quantile_line  # noqa: E402

DEV = Path("/work/shared/data/routing/dev.jsonl")
ARENA = Path("/work/shared/data/chat/arena-hard-prompts.jsonl")
PAIRS = ROOT / "gateway/cache/data/semantic_pairs.jsonl"


def prompts(path: Path) -> list[str]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        text = row.get("prompt") or (row.get("turns") or [{}])[0].get("content", "")
        if text:
            out.append(text[:2000])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", type=int, default=0, help="random unit vectors added to the fillers")
    parser.add_argument("--probe-all", action="store_true",
                        help="probe every list: what is lost then is the lists' codes' doing, not the probes'")
    args = parser.parse_args(argv)
    embedder = WordLlamaEmbedder()
    threshold = shipped_threshold(embedder.name)
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    paraphrases = [p for p in pairs if p["label"] == "same"]
    stored = sorted({p["a"] for p in paraphrases})
    fillers = embedder.embed(prompts(DEV) + prompts(ARENA))
    rng = np.random.default_rng(0)
    if args.random:
        noise = rng.standard_normal((args.random, embedder.dim)).astype(np.float32)
        fillers = np.vstack([fillers, noise / np.linalg.norm(noise, axis=1, keepdims=True)])
    vectors = np.vstack([fillers, embedder.embed(stored)])
    keys = [f"filler{i}" for i in range(len(fillers))] + stored
    exact = ScopeMatrix(embedder.dim, len(vectors), ann_min_rows=0)
    approximate = ScopeMatrix(embedder.dim, len(vectors), ann_min_rows=0)
    for i in rng.permutation(len(vectors)):
        exact.add(keys[i], vectors[i], b"", 1e12)
        approximate.add(keys[i], vectors[i], b"", 1e12)
    started = time.perf_counter()
    index = IvfIndex.build(approximate.start_build())
    built = time.perf_counter() - started
    approximate.install(index)
    if args.probe_all:
        index._ivf.nprobe = index.nlist
    print(f"{len(vectors):,} rows ({len(fillers):,} fillers, {args.random:,} of them random), built in {built:.2f} s: "
          f"{index.nlist} lists, nprobe {index._ivf.nprobe}")
    above = agree = same = 0
    exact_ms, approx_ms = [], []
    for query in embedder.embed([p["b"] for p in paraphrases]):
        started = time.perf_counter()
        best = [c for c in exact.search(query, 4, 0.0) if c.similarity >= threshold]
        exact_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        found = [c for c in approximate.search(query, 4, 0.0) if c.similarity >= threshold]
        approx_ms.append((time.perf_counter() - started) * 1000)
        if best:
            above += 1
            agree += bool(found) and found[0].entry_key == best[0].entry_key
            same += [c.entry_key for c in found] == [c.entry_key for c in best]
    print(f"{len(paraphrases)} queries, {above} with an exact candidate above {threshold}: the index proposes the same "
          f"best for {agree} ({agree / max(1, above):.1%}), the same candidates above it (of 4) for {same} "
          f"({same / max(1, above):.1%})")
    print(f"search ms, exact:       {quantile_line(exact_ms, digits=3)}")
    print(f"search ms, approximate: {quantile_line(approx_ms, digits=3)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

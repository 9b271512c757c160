"""CPU per embedding of one prompt: the baseline tree's `WordLlamaEmbedder` against this tree's, in one run.

Both implementations are imported side by side (the baseline's gateway/embedding/wordllama.py is loaded from
--baseline-tree under another module name) and embed the same texts, one per call as the semantic cache does, in
alternating blocks of 100 (base first, then ours first). Each call is timed with the thread's CPU clock (and the
wall clock); the garbage collector is off while timing. Every pair of vectors is compared bit for bit.

Workloads (each text is new to both embedders when first sent, as a semantic miss's prompt is):
  pairs      the pair set's 753 distinct prompts (gateway/cache/data/semantic_pairs.jsonl), each sent once (cold)
  repeats    the same prompts again, every round (the tokenizer's whole-text cache; our piece memo)
  populated  bench/miss_prompts.py's populated prompts, new each round (known words, new texts)
  numbered   "Question <r>-<i>: what is <i> + <i>?", new each round (new numbers: new pieces)
  arena      arena-hard prompts cut at 2,000 characters (the semantic layer's limit), sent every round

    flock /work/wt/bench.lock python bench/embed_cpu.py [--baseline-tree /work/wt/base] [--rounds 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway.embedding.wordllama import WordLlamaEmbedder  # noqa: E402
from miss_prompts import populated_texts  # noqa: E402

PAIRS = ROOT / "gateway/cache/data/semantic_pairs.jsonl"
ARENA = Path("/work/shared/data/chat/arena-hard-prompts.jsonl")
BLOCK = 100
PER_ROUND = 600


def baseline_embedder(tree: Path):
    """The baseline tree's `WordLlamaEmbedder` (its module file, loaded as `baseline_wordllama`)."""
    spec = importlib.util.spec_from_file_location("baseline_wordllama", tree / "gateway/embedding/wordllama.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WordLlamaEmbedder()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(embedder, texts: list[str], cpu: list[float], wall: list[float]) -> list[np.ndarray]:
    rows = []
    for text in texts:
        w, c = time.perf_counter_ns(), time.thread_time_ns()
        row = embedder.embed([text])
        cpu.append((time.thread_time_ns() - c) / 1000.0)
        wall.append((time.perf_counter_ns() - w) / 1000.0)
        rows.append(row)
    return rows


def workloads(rounds: int) -> dict[str, list[list[str]]]:
    pairs = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    distinct = list(dict.fromkeys(t for p in pairs for t in (p["a"], p["b"])))
    populated = populated_texts(PER_ROUND * rounds)
    out = {
        "pairs": [distinct],
        "repeats": [distinct] * rounds,
        "populated": [populated[r * PER_ROUND:(r + 1) * PER_ROUND] for r in range(rounds)],
        "numbered": [[f"Question {r}-{i}: what is {i} + {i}?" for i in range(PER_ROUND)] for r in range(rounds)],
    }
    if ARENA.is_file():
        arena = [json.loads(line)["prompt"][:2000] for line in ARENA.read_text(encoding="utf-8").splitlines()]
        out["arena"] = [arena[:400]] * rounds
    return out


def stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"p50_us": round(float(np.percentile(a, 50)), 2), "p99_us": round(float(np.percentile(a, 99)), 2),
            "mean_us": round(float(a.mean()), 2), "n": int(a.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-tree", type=Path, default=Path("/work/wt/base"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"start: {uptime()}")
    base, ours = baseline_embedder(args.baseline_tree), WordLlamaEmbedder()
    results: dict[str, dict] = {}
    for name, rounds in workloads(args.rounds).items():
        samples = {k: ([], []) for k in ("base", "ours")}
        differ = 0
        for r, texts in enumerate(rounds):
            for b, start in enumerate(range(0, len(texts), BLOCK)):
                block = texts[start:start + BLOCK]
                order = (("base", base), ("ours", ours)) if b % 2 == 0 else (("ours", ours), ("base", base))
                got = {}
                gc.disable()
                for label, embedder in order:
                    got[label] = timed(embedder, block, *samples[label])
                gc.enable()
                differ += sum(not (x.dtype == y.dtype and np.array_equal(x, y)) for x, y in zip(got["base"], got["ours"]))
        chars = np.mean([len(t) for texts in rounds for t in texts])
        row = {"chars": round(float(chars), 1), "differ": differ}
        print(f"{name} ({len(rounds[0])} texts x {len(rounds)} rounds, avg {chars:.0f} chars; vectors differing: {differ})")
        for label in ("base", "ours"):
            cpu, wall = samples[label]
            row[label] = {"cpu": stats(cpu), "wall": stats(wall)}
            c, w = row[label]["cpu"], row[label]["wall"]
            print(f"  {label:4s} cpu p50 {c['p50_us']:7.2f} p99 {c['p99_us']:8.2f} mean {c['mean_us']:7.2f} us | "
                  f"wall p50 {w['p50_us']:7.2f} p99 {w['p99_us']:8.2f} us  (n={c['n']})")
        print(f"  ours/base cpu p50 {row['ours']['cpu']['p50_us'] / row['base']['cpu']['p50_us']:.2f}, "
              f"p99 {row['ours']['cpu']['p99_us'] / row['base']['cpu']['p99_us']:.2f}")
        results[name] = row
    print(f"end: {uptime()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

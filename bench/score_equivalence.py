"""Router scores of this tree against a baseline tree's, prompt by prompt: the scoring fast path must not move.

Usage: python bench/score_equivalence.py --baseline-tree /work/wt/base [--data FILE ...] [--synthetic 500]

Each tree's own classifier code (a subprocess with that tree first on the path) loads the shipped model and scores
every prompt (and the latency bench's synthetic ones) with ``score`` (the text the gateway scores for a one-message chat: ``messages_text`` of one user turn
is the prompt itself in this tree), its family, and ``familiarity``; this tree's child also checks that
``score_messages`` of the prompt as one user message equals ``score`` of it. The parent prints, per data set, how
many scores differ, the largest |difference|, how many decisions (score >= the default policy's threshold) change
and how many families and familiarities differ. Exit status 1 when any decision or family changes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = [HERE.parent.parent / "shared/data/routing/dev.jsonl",
                HERE.parent.parent / "shared/data/chat/arena-hard-prompts.jsonl"]


def _prompts(data: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in data.open(encoding="utf-8") if line.strip()]


def _dump(tree: Path, data: list[Path], out: Path, check_messages: bool, synthetic: int) -> None:
    """Child: `tree`'s classifier scores every prompt of `data` into `out` (JSON; floats round-trip exactly)."""
    sys.path.insert(0, str(tree))
    from classifier import DEFAULT_MODEL_PATH, load_model
    from gateway.routing.calibration import calibrate

    model = load_model(DEFAULT_MODEL_PATH)
    result: dict = {"model_sha256": hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest(),
                    "threshold": calibrate(model, 0.6)[0], "sets": {}}
    sets = [(path.name, _prompts(path)) for path in data]
    if synthetic:  # the latency bench's synthetic prompts (long pasted-log chat messages among them)
        sys.path.insert(0, str(HERE))
        from classifier_latency import _synthetic

        sets.append((f"synthetic (bench, seed 1, {synthetic})", _synthetic(random.Random(1), synthetic)))
    for name, prompts in sets:
        scores = [float(model.score(p)) for p in prompts]
        if check_messages:
            via = [float(model.score_messages([{"role": "user", "content": p}])) for p in prompts]
            assert via == scores, "score_messages of one user turn differs from score of it"
        result["sets"][name] = {
            "scores": scores,
            "families": [model.family_of(p) for p in prompts],
            "familiarity": [model.familiarity(p) for p in prompts],
        }
    out.write_text(json.dumps(result))


def _run(tree: Path, data: list[Path], out: Path, check_messages: bool, synthetic: int) -> dict:
    cmd = [sys.executable, str(HERE / "score_equivalence.py"), "--tree", str(tree), "--dump", str(out),
           "--synthetic", str(synthetic), "--data", *map(str, data)] + (["--check-messages"] if check_messages else [])
    subprocess.run(cmd, check=True, cwd=tree)
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", type=Path)
    ap.add_argument("--data", type=Path, nargs="+", default=DEFAULT_DATA)
    ap.add_argument("--synthetic", type=int, default=500, help="also the latency bench's synthetic prompts (0: none)")
    ap.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--check-messages", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump is not None:
        _dump(args.tree, args.data, args.dump, args.check_messages, args.synthetic)
        return 0
    if args.baseline_tree is None:
        ap.error("--baseline-tree is required")
    with tempfile.TemporaryDirectory() as tmp:
        base = _run(args.baseline_tree.resolve(), args.data, Path(tmp) / "baseline.json", False, args.synthetic)
        this = _run(HERE.parent, args.data, Path(tmp) / "this.json", True, args.synthetic)
    assert base["model_sha256"] == this["model_sha256"], "the two trees ship different router models"
    threshold = this["threshold"]
    print(f"threshold {threshold!r} (baseline {base['threshold']!r}); model {this['model_sha256'][:12]}")
    bad = base["threshold"] != threshold
    total = 0
    for name, got in this["sets"].items():
        ref = base["sets"][name]
        pairs = list(zip(ref["scores"], got["scores"]))
        total += len(pairs)
        diff = [abs(a - b) for a, b in pairs]
        decisions = sum((a >= threshold) != (b >= base["threshold"]) for a, b in pairs)
        families = sum(a != b for a, b in zip(ref["families"], got["families"]))
        fam_diff = [abs(a - b) for a, b in zip(ref["familiarity"], got["familiarity"]) if a is not None]
        print(f"  {name}: {len(pairs)} prompts, scores bit-identical {sum(d == 0.0 for d in diff)}, "
              f"max |score diff| {max(diff):.3g}, decisions changed {decisions}, families changed {families}, "
              f"max |familiarity diff| {max(fam_diff, default=0.0):.3g}")
        bad |= bool(decisions or families)
    print(f"all: {total} prompts; {'FAIL' if bad else 'OK'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

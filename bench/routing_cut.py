"""Router decisions on the dev set, this tree against a baseline tree: the prompts under the scoring cut must keep
every decision; the longer ones (multiple-choice questions whose options came after the cut) are what changes.

Usage: python bench/routing_cut.py --baseline-tree /work/wt/base [--data ../shared/data/routing/dev.jsonl]

Each prompt is sent as one user message and scored with `score_messages` (the gateway's decision path) by each
tree's own code and shipped model, the baseline in a subprocess; the decision is score >= the default policy's
threshold (target_local_share 0.6 on the model's training-score quantiles).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _scores(tree: Path, data: Path, out: Path) -> None:
    """Child: `tree`'s classifier scores every prompt of `data` (score_messages) into `out` (JSON)."""
    sys.path.insert(0, str(tree))
    from classifier import DEFAULT_MODEL_PATH, load_model
    from classifier.model import messages_text

    model = load_model(DEFAULT_MODEL_PATH)
    cut = int(model.featurizer.max_chars)
    messages = [[{"role": "user", "content": json.loads(line)["prompt"]}] for line in data.open(encoding="utf-8")
                if line.strip()]
    out.write_text(json.dumps({
        "model_sha256": hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest(), "max_chars": cut,
        "threshold": _threshold(model), "scores": [float(model.score_messages(m)) for m in messages],
        "families": [model.family_of(messages_text(m, cut)) for m in messages],
    }))


def _threshold(model: object) -> float:
    from gateway.routing.calibration import calibrate

    return calibrate(model, 0.6)[0]


def _run(tree: Path, data: Path, out: Path) -> dict:
    subprocess.run([sys.executable, str(HERE / "routing_cut.py"), "--tree", str(tree), "--data", str(data),
                    "--dump", str(out)], check=True, cwd=tree)
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", type=Path)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared/data/routing/dev.jsonl")
    ap.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump is not None:
        _scores(args.tree, args.data, args.dump)
        return 0
    if args.baseline_tree is None:
        ap.error("--baseline-tree is required")
    prompts = [json.loads(line)["prompt"] for line in args.data.open(encoding="utf-8") if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        base = _run(args.baseline_tree.resolve(), args.data, Path(tmp) / "baseline.json")
        this = _run(HERE.parent, args.data, Path(tmp) / "this.json")
    assert base["model_sha256"] == this["model_sha256"], "the two trees ship different router models"
    cut, threshold = this["max_chars"], this["threshold"]
    print(f"{len(prompts)} prompts from {args.data.name}; scoring cut {cut} characters; threshold {threshold} "
          f"(both trees: model {this['model_sha256'][:12]})")
    for name, rows in (("under the cut", [i for i, p in enumerate(prompts) if len(p) <= cut]),
                       ("over the cut", [i for i, p in enumerate(prompts) if len(p) > cut]),
                       ("all", list(range(len(prompts))))):
        before = [base["scores"][i] >= threshold for i in rows]
        after = [this["scores"][i] >= threshold for i in rows]
        changed_scores = sum(base["scores"][i] != this["scores"][i] for i in rows)
        print(f"  {name}: {len(rows)} prompts, scores changed {changed_scores}, decisions changed "
              f"{sum(a != b for a, b in zip(before, after))}; local share {1 - sum(before) / max(1, len(rows)):.1%} "
              f"-> {1 - sum(after) / max(1, len(rows)):.1%}")
    long_rows = [i for i, p in enumerate(prompts) if len(p) > cut]
    for name, run in (("baseline", base), ("this tree", this)):
        print(f"  families over the cut, {name}: {dict(collections.Counter(run['families'][i] for i in long_rows))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

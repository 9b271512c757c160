"""`slm-gateway classifier {train,eval,score}` sub-commands (argparse)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["register", "main"]


def _cmd_train(args: argparse.Namespace) -> int:
    from classifier.evaluate import format_table
    from classifier.train import train

    config = _config(args)
    metrics = train(args.data, args.out, config, cv_folds=args.cv)
    print(f"wrote {args.out} (+ metrics.json beside it)")
    if "cv" in metrics:
        print(f"{args.cv}-fold cross-validation, per-fold mean ± std:")
        print(format_table(metrics["cv"]["per_fold_mean_std"]))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from classifier.evaluate import cross_validate, evaluate_scores, format_table
    from classifier.model import load_model
    from classifier.train import load_dataset

    data = load_dataset(args.data)
    if args.cv:
        config = _config(args)
        result = cross_validate(data, config, folds=args.cv)
        print(f"{args.cv}-fold cross-validation (grouped by prompt), per-fold mean ± std:")
        print(format_table(result["per_fold_mean_std"]))
        print("\npooled out-of-fold scores:")
        print(format_table(result["pooled_oof"]))
        if args.json:
            print(json.dumps(result, indent=2))
        return 0
    model = load_model(args.model)
    result = evaluate_scores(data, model.score_many(data.prompts))
    print(f"model {args.model or 'shipped'} on {args.data} (in-sample if this is its training data):")
    print(format_table(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from classifier.model import load_model, messages_text

    model = load_model(args.model)
    out = sys.stdout
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except ValueError:
            print(f"error: stdin line {lineno} is not JSON", file=sys.stderr)
            return 2
        if not isinstance(row, dict):
            print(f"error: stdin line {lineno} is not a JSON object", file=sys.stderr)
            return 2
        if isinstance(row.get("prompt"), str):
            p = model.score(row["prompt"])
        elif isinstance(row.get("messages"), list):
            p = model.score(messages_text(row["messages"]))
        else:
            print(f"error: stdin line {lineno} has no string 'prompt'", file=sys.stderr)
            return 2
        result = {k: v for k, v in row.items() if k not in ("prompt", "messages")}
        result["p_strong"] = round(float(p), 6)
        out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


def _config(args: argparse.Namespace) -> Any:
    from classifier.train import RouterConfig

    return RouterConfig(
        label=args.label,
        C_mc=args.C_mc,
        C_text=args.C_text,
        word_problem_weight=args.word_problem_weight,
        subject_prior_weight=args.subject_prior_weight,
        tree_weight=args.tree_weight,
        seed=args.seed,
    )


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn ModelLoadError / bad data into a one-line error and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        from classifier.model import ModelLoadError

        try:
            return func(args)
        except (ModelLoadError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _add_hparams(p: argparse.ArgumentParser) -> None:
    from classifier.train import LABELS, RouterConfig

    defaults = RouterConfig()
    p.add_argument("--label", choices=LABELS, default=defaults.label, help="training target")
    p.add_argument("--C-mc", type=float, default=defaults.C_mc, help="inverse L2 strength, multiple-choice prompts")
    p.add_argument("--C-text", type=float, default=defaults.C_text, help="inverse L2 strength, free-text prompts")
    p.add_argument("--word-problem-weight", type=float, default=defaults.word_problem_weight,
                   help="scale of the word-problem features in free-text models (0: off)")
    p.add_argument("--subject-prior-weight", type=float, default=defaults.subject_prior_weight,
                   help="share of the subject-prior head in multiple-choice scores (0: off)")
    p.add_argument("--tree-weight", type=float, default=defaults.tree_weight,
                   help="share of the hand-feature tree head in multiple-choice scores (0: off)")
    p.add_argument("--seed", type=int, default=defaults.seed)


def register(subparsers: Any) -> None:
    """Add the ``classifier`` command (train / eval / score) to an argparse subparsers object."""
    from classifier.model import DEFAULT_MODEL_PATH

    cmd = subparsers.add_parser("classifier", help="train, evaluate and run the prompt router")
    sub = cmd.add_subparsers(dest="classifier_command", required=True)

    p = sub.add_parser("train", help="train a router on RouteLLM-style JSONL data")
    p.add_argument("--data", required=True, help="JSONL with prompt, benchmark, weak_correct, strong_correct")
    p.add_argument("--out", default=str(DEFAULT_MODEL_PATH), help="model file (.skops); metrics.json is written beside it")
    p.add_argument("--cv", type=int, default=0, help="also run k-fold CV and store it in metrics.json")
    _add_hparams(p)
    p.set_defaults(func=_guarded(_cmd_train))

    p = sub.add_parser("eval", help="APGR / CPT per benchmark vs random and oracle routers")
    p.add_argument("--data", required=True)
    p.add_argument("--model", default=None, help="model file (default: shipped model)")
    p.add_argument("--cv", type=int, default=0, help="k-fold cross-validation: train per fold, report out-of-fold")
    p.add_argument("--json", action="store_true", help="also print the full result as JSON")
    _add_hparams(p)
    p.set_defaults(func=_guarded(_cmd_eval))

    p = sub.add_parser("score", help="JSONL rows with 'prompt' on stdin -> rows with 'p_strong' on stdout")
    p.add_argument("--model", default=None, help="model file (default: shipped model)")
    p.set_defaults(func=_guarded(_cmd_score))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m classifier.cli classifier ...`` or ``... train ...``."""
    parser = argparse.ArgumentParser(prog="slm-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("train", "eval", "score"):
        argv = ["classifier", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

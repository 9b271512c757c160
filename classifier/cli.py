"""`slm-gateway classifier {train,eval,score,promote,rollback}` sub-commands (argparse)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["register", "main", "EXIT_REFUSED", "EXIT_UNDECIDED", "EXIT_RELOAD_FAILED"]

EXIT_REFUSED = 3  # promote: the candidate is worse than the current model; nothing installed
EXIT_UNDECIDED = 4  # promote: too few held-out labels (or PGR undefined on them) to judge; nothing installed
EXIT_RELOAD_FAILED = 5  # promote / rollback: the file was installed but the gateway reload failed


def _cmd_train(args: argparse.Namespace) -> int:
    from classifier.evaluate import format_table
    from classifier.train import train

    config = _config(args)
    metrics = train(args.data, args.out, config, cv_folds=args.cv, traffic_row_weight=args.traffic_weight,
                    hold_out=args.hold_out)
    trained_on = metrics["trained_on"]
    print(f"wrote {args.out} (+ metrics.json beside it): {trained_on['rows']} training rows")
    if "traffic_row_weight" in trained_on:
        print(f"traffic label rows weigh {trained_on['traffic_row_weight']:g} each "
              f"({trained_on['one_sided_rows']} one-sided rows train one side only)")
    if "held_out_from_ts" in trained_on:
        print(f"held out for `classifier promote`: {trained_on['held_out_rows']} most recent rows "
              f"(ts >= {trained_on['held_out_from_ts']:.0f})")
    if "cv" in metrics:
        print(f"{args.cv}-fold cross-validation, per-fold mean ± std:")
        print(format_table(metrics["cv"]["per_fold_mean_std"]))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from classifier.data import concat, load_dataset
    from classifier.evaluate import cross_validate, evaluate_scores, format_table
    from classifier.model import load_model

    data = concat([load_dataset(p) for p in args.data])
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
    print(f"model {args.model or 'shipped'} on {', '.join(args.data)} (in-sample if this is its training data):")
    print(format_table(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _default_target() -> str:
    from classifier.model import DEFAULT_MODEL_PATH

    return os.environ.get("SLM_GATEWAY_CLASSIFIER_MODEL") or str(DEFAULT_MODEL_PATH)


def _reload(args: argparse.Namespace) -> int:
    """Reload the gateway after an install (exit code 0, or 5 when the reload failed)."""
    from classifier.install import reload_gateway, signal_reload

    if args.gateway_url:
        ok, message = reload_gateway(args.gateway_url, args.admin_key or os.environ.get("SLM_GATEWAY_ADMIN_KEY"))
    elif args.pid:
        ok, message = signal_reload(args.pid)
    else:
        print("reload needed: POST /admin/reload to the gateway or send it SIGHUP "
              "(or pass --gateway-url / --pid next time)")
        return 0
    print(message if ok else f"error: reload failed: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else EXIT_RELOAD_FAILED


def _cmd_promote(args: argparse.Namespace) -> int:
    from classifier.data import load_dataset
    from classifier.install import install
    from classifier.model import load_model
    from classifier.promote import PromoteConfig, compare, format_report, promotion_metadata

    target = args.target or _default_target()
    labels = load_dataset(args.labels)
    current = load_model(target)
    candidate = load_model(args.candidate)
    config = PromoteConfig(hold_out=args.hold_out, tolerance=args.tolerance, bootstrap=args.bootstrap,
                           seed=args.seed, min_rows=args.min_rows, local_share=args.local_share,
                           threshold=args.threshold)
    result = compare(labels, current, candidate, config)
    print(f"current: {target}\ncandidate: {args.candidate}")
    print(format_report(result.report))
    if args.json:
        print(json.dumps(dict(result.report, verdict=result.verdict, reason=result.reason), indent=2))
    if result.verdict != "install":
        print(f"not installed: {result.reason}")
        return EXIT_REFUSED if result.verdict == "refuse" else EXIT_UNDECIDED
    if args.dry_run:
        print(f"would install ({result.reason}); --dry-run: nothing changed")
        return 0
    metadata = promotion_metadata(result, candidate, args.candidate, args.labels, len(labels), current)
    saved = install(args.candidate, target, metadata)
    apgr = "n/a" if metadata["apgr"] is None else f"{metadata['apgr']:.3f}"
    print(f"version {metadata['version']}, held-out APGR {apgr} (written to the installed metrics.json)")
    print(f"installed {args.candidate} at {target} ({result.reason}); previous model kept at {saved} "
          "(`slm-gateway classifier rollback` restores it)")
    return _reload(args)


def _cmd_rollback(args: argparse.Namespace) -> int:
    from classifier.install import rollback
    from classifier.model import load_model

    target = args.target or _default_target()
    saved = rollback(target)
    load_model(target)  # the restored file must load; ModelLoadError otherwise
    print(f"restored the previous model at {target}; the replaced one is now at {saved}")
    return _reload(args)


def _cmd_score(args: argparse.Namespace) -> int:
    from classifier.model import load_model

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
            p = model.score_messages(row["messages"])  # the text the gateway scores
        else:
            print(f"error: stdin line {lineno} has no string 'prompt'", file=sys.stderr)
            return 2
        result = {k: v for k, v in row.items() if k not in ("prompt", "messages")}
        result["p_strong"] = round(float(p), 6)
        out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


def _config(args: argparse.Namespace) -> Any:
    from classifier.fit import RouterConfig

    return RouterConfig(
        label=args.label,
        C_mc=args.C_mc,
        C_text=args.C_text,
        word_problem_weight=args.word_problem_weight,
        subject_prior_weight=args.subject_prior_weight,
        tree_weight=args.tree_weight,
        chat_head=not args.no_chat_head,
        chat_C=args.chat_C,
        seed=args.seed,
    )


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn ModelLoadError / bad data into a one-line error and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        from classifier.install import InstallError
        from classifier.model import ModelLoadError

        try:
            return func(args)
        except (ModelLoadError, InstallError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _add_hparams(p: argparse.ArgumentParser) -> None:
    from classifier.data import LABELS
    from classifier.fit import RouterConfig

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
    p.add_argument("--no-chat-head", action="store_true",
                   help="leave out the open-chat head (embedding + format-free features; see classifier/chathead.py)")
    p.add_argument("--chat-C", type=float, default=defaults.chat_C, help="inverse L2 strength of the chat head")
    p.add_argument("--seed", type=int, default=defaults.seed)


def register(subparsers: Any) -> None:
    """Add the ``classifier`` command (train / eval / score / promote / rollback) to argparse subparsers."""
    from classifier.data import DEFAULT_HOLD_OUT, DEFAULT_TRAFFIC_SHARE, MAX_TRAFFIC_WEIGHT
    from classifier.model import DEFAULT_MODEL_PATH
    from classifier.promote import PromoteConfig

    defaults = PromoteConfig()

    cmd = subparsers.add_parser("classifier", help="train, evaluate and run the prompt router")
    sub = cmd.add_subparsers(dest="classifier_command", required=True)

    p = sub.add_parser("train", help="train a router on benchmark rows and/or traffic labels (JSONL)")
    p.add_argument("--data", required=True, action="append",
                   help="JSONL with prompt, weak_correct, strong_correct (+ benchmark, subject, ts); repeatable")
    p.add_argument("--out", default=str(DEFAULT_MODEL_PATH), help="model file (.skops); metrics.json is written beside it")
    p.add_argument("--cv", type=int, default=0, help="also run k-fold CV and store it in metrics.json")
    p.add_argument("--traffic-weight", type=float, default=None,
                   help="weight of each traffic label row (rows without 'benchmark'); default: together they "
                        f"weigh {DEFAULT_TRAFFIC_SHARE:g} x the benchmark rows, at least 1 and at most "
                        f"{MAX_TRAFFIC_WEIGHT:g} each")
    p.add_argument("--hold-out", type=float, default=DEFAULT_HOLD_OUT,
                   help="leave out this share of the most recent rows with 'ts' (for `promote`); 0: use all")
    _add_hparams(p)
    p.set_defaults(func=_guarded(_cmd_train))

    p = sub.add_parser("eval", help="APGR / CPT per benchmark vs random and oracle routers")
    p.add_argument("--data", required=True, action="append", help="JSONL data; repeatable")
    p.add_argument("--model", default=None, help="model file (default: shipped model)")
    p.add_argument("--cv", type=int, default=0, help="k-fold cross-validation: train per fold, report out-of-fold")
    p.add_argument("--json", action="store_true", help="also print the full result as JSON")
    _add_hparams(p)
    p.set_defaults(func=_guarded(_cmd_eval))

    p = sub.add_parser("score", help="JSONL rows with 'prompt' on stdin -> rows with 'p_strong' on stdout")
    p.add_argument("--model", default=None, help="model file (default: shipped model)")
    p.set_defaults(func=_guarded(_cmd_score))

    p = sub.add_parser("promote", help="install a candidate model if it is not worse on the most recent labels")
    p.add_argument("--labels", required=True, help="traffic labels JSONL (rows with ts)")
    p.add_argument("--candidate", required=True, help="candidate model file (from `classifier train`)")
    _add_target(p)
    p.add_argument("--hold-out", type=float, default=DEFAULT_HOLD_OUT,
                   help="share of the most recent labels to judge on when the candidate records no hold-out cut")
    p.add_argument("--tolerance", type=float, default=defaults.tolerance,
                   help="APGR the candidate may lose: install when the lower end of the paired bootstrap "
                        f"{int(defaults.confidence * 100)}%% CI of the difference is >= -tolerance")
    p.add_argument("--bootstrap", type=int, default=defaults.bootstrap, help="bootstrap resamples (<= 10000)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="bootstrap seed")
    p.add_argument("--min-rows", type=int, default=defaults.min_rows,
                   help="fewest held-out rows labelled on both sides to judge on")
    p.add_argument("--local-share", type=float, default=defaults.local_share,
                   help="policy target_local_share: each model's threshold is its score quantile at this share")
    p.add_argument("--threshold", type=float, default=None, help="a fixed policy threshold instead")
    p.add_argument("--dry-run", action="store_true", help="judge only; install nothing")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.set_defaults(func=_guarded(_cmd_promote))

    p = sub.add_parser("rollback", help="restore the model that the last promote replaced")
    _add_target(p)
    p.set_defaults(func=_guarded(_cmd_rollback))


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=None,
                   help="installed model file (default: $SLM_GATEWAY_CLASSIFIER_MODEL, else the shipped model)")
    p.add_argument("--gateway-url", default=None, help="reload this running gateway (POST <url>/admin/reload)")
    p.add_argument("--admin-key", default=None, help="key for /admin/reload (default: $SLM_GATEWAY_ADMIN_KEY)")
    p.add_argument("--pid", type=int, default=None, help="reload by sending SIGHUP to this gateway process")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m classifier.cli classifier ...`` or ``... train ...``."""
    parser = argparse.ArgumentParser(prog="slm-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("train", "eval", "score", "promote", "rollback"):
        argv = ["classifier", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

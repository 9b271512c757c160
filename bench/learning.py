"""A simulated deployment of the learning loop, and the request-path cost of learning's hook.

Part 1 (the loop): the routing dev data stands for traffic whose true per-tier correctness is known. A router is
trained on a small seed set; each simulated day, `--requests-per-day` prompts arrive from the traffic pool, a
`--shadow-rate` share is shadow-judged (the judge is the true labels, each grade flipped with probability
`--judge-noise`), the label rows are added to the training set, the router is retrained (the real
`classifier.train.fit_router`, a lighter configuration than the shipped one) and evaluated on held-out prompts (APGR per benchmark, `classifier.evaluate`).
Judge spend is estimated from the judge's message (prompt + two answers) at the `--judge-price` per million
input tokens, counting 1.3 tokens per word.

Part 2 (the hook): `Learning.attach` with shadow judging and feedback on, as the gateway calls it for every
answered request: median time per call over `--hook-calls` calls.

    python bench/learning.py                          # 3 days of 1500 requests, 20% shadowed
    python bench/learning.py --days 5 --shadow-rate 0.05 --judge-noise 0.1
    python bench/learning.py --hook-only
    python bench/learning.py --shift                  # prior without STEM MMLU, STEM traffic, 100/300/1000 labels

Part 3 (--shift): the deployment the method is meant for, see `shifted`. Part 1 above trains from a 300-row
seed of the *same* distribution as its traffic, with a configuration lacking the subject-prior and tree heads:
it does not measure learning a deployment (its "no gain" is within the noise of its held-out APGR, whose
bootstrap sd is ~0.03 on MMLU and ~0.075 on GSM8K there).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from procstat import load_average, machine_line  # noqa: E402

DEV_DATA = Path("shared") / "data" / "routing" / "dev.jsonl"
# ../shared/data/routing/dev.jsonl next to the checkout (or next to a folder holding several worktrees)
DEFAULT_DATA = next((d / DEV_DATA for d in ROOT.parents if (d / DEV_DATA).is_file()), ROOT.parent / DEV_DATA)
TOKENS_PER_WORD = 1.3


def subset(data, index: np.ndarray):  # type: ignore[no-untyped-def]
    from classifier.train import RoutingDataset

    return RoutingDataset(
        [data.prompts[i] for i in index], data.benchmark[index], data.weak_correct[index],
        data.strong_correct[index], data.subject[index] if data.subject.size else data.subject,
    )


def concat(a, b):  # type: ignore[no-untyped-def]
    from classifier.train import RoutingDataset

    return RoutingDataset(
        a.prompts + b.prompts, np.concatenate([a.benchmark, b.benchmark]),
        np.concatenate([a.weak_correct, b.weak_correct]), np.concatenate([a.strong_correct, b.strong_correct]),
        np.concatenate([a.subject, b.subject]),
    )


def apgr_line(router, held) -> str:  # type: ignore[no-untyped-def]
    from classifier.evaluate import evaluate_scores

    result = evaluate_scores(held, router.score_many(held.prompts))
    return "  ".join(f"{bench} {r['router']['apgr']:.3f} (random {r['random']['apgr']:.3f})"
                     for bench, r in result.items())


def simulate(args: argparse.Namespace) -> None:
    from classifier.train import RouterConfig, fit_router, load_dataset

    data = load_dataset(args.data)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(data.prompts))
    n_held = int(len(order) * 0.3)
    held = subset(data, order[:n_held])
    seed_set = subset(data, order[n_held : n_held + args.seed_rows])
    pool = order[n_held + args.seed_rows :]
    # lighter than the shipped configuration (no tree / subject-prior heads, 2**16 word features): a fit per
    # simulated day stays within minutes on a loaded 2-core machine
    config = RouterConfig(word_features=2**16, tree_weight=0.0, subject_prior_weight=0.0)
    print(f"traffic pool {len(pool)} prompts, held-out {n_held}, seed set {args.seed_rows}; shadow rate "
          f"{args.shadow_rate}, judge noise {args.judge_noise}")
    started = time.perf_counter()
    router = fit_router(seed_set, config)
    print(f"day 0: {args.seed_rows:5d} training rows  {apgr_line(router, held)}  "
          f"(fit {time.perf_counter() - started:.1f}s)")
    train = seed_set
    cursor = 0
    labels = 0
    judge_tokens = 0.0
    for day in range(1, args.days + 1):
        arrived = pool[cursor : cursor + args.requests_per_day]
        cursor += len(arrived)
        judged = arrived[rng.random(len(arrived)) < args.shadow_rate]
        rows = subset(data, judged)
        flip_w = rng.random(len(judged)) < args.judge_noise
        flip_s = rng.random(len(judged)) < args.judge_noise
        rows = dataclasses.replace(rows, weak_correct=np.where(flip_w, ~rows.weak_correct, rows.weak_correct),
                                   strong_correct=np.where(flip_s, ~rows.strong_correct, rows.strong_correct))
        labels += len(judged)
        # the judge reads the prompt and two answers (taken as long as the prompt each) and writes ~8 tokens
        judge_tokens += sum(3 * len(p.split()) * TOKENS_PER_WORD for p in rows.prompts)
        train = concat(train, rows)
        started = time.perf_counter()
        router = fit_router(train, config)
        print(f"day {day}: {len(train.prompts):5d} training rows ({labels} judged labels)  "
              f"{apgr_line(router, held)}  (fit {time.perf_counter() - started:.1f}s)")
    print(f"estimated judge spend: ${judge_tokens * args.judge_price / 1e6:.2f} for {labels} labels "
          f"({judge_tokens / max(1, labels):.0f} input tokens per label at ${args.judge_price}/M)")


STEM = ("mathematics", "physics", "chemistry", "computer", "statistics", "algebra", "engineering",
        "machine_learning", "astronomy", "econometrics")


def shifted(args: argparse.Namespace) -> None:
    """The deployment the shipped method faces: a prior trained on the dev rows *outside* the traffic's domain
    (every MMLU subject but the STEM ones, and GSM8K), traffic from the domain it was not fitted to (the STEM
    subjects' rows, true labels, each grade flipped with probability ``--judge-noise``). Learning = what
    ``classifier train --data dev --data labels`` does: the prior's rows plus k label rows, weighted by
    ``--weights`` (1, or "default": :func:`classifier.data.traffic_weight`). APGR / CPT(50%) on held-out traffic
    rows, with 90% bootstrap intervals and the paired APGR difference to the prior (the same resamples)."""
    from classifier import metrics as M
    from classifier.data import concat, weight_traffic
    from classifier.fit import RouterConfig, fit_router
    from classifier.train import load_dataset

    data = load_dataset(args.data)
    in_domain = np.array([data.benchmark[i] == "mmlu" and any(s in data.subject[i] for s in STEM)
                          for i in range(len(data))])
    prior_rows = data.subset(np.flatnonzero(~in_domain))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(np.flatnonzero(in_domain))
    held, pool = data.subset(order[: args.held_out]), order[args.held_out :]
    boot = [rng.integers(0, len(held), len(held)) for _ in range(args.bootstrap)]
    config = RouterConfig(word_features=2**16, tree_weight=0.0, subject_prior_weight=0.0)
    print(f"shifted deployment: prior on {len(prior_rows)} dev rows (not STEM MMLU), traffic = {in_domain.sum()} STEM "
          f"MMLU rows ({args.held_out} held out); judge noise {args.judge_noise}; {args.bootstrap} bootstrap resamples")

    def apgr(scores: np.ndarray, b: np.ndarray) -> float:
        w, st = held.weak_correct[b], held.strong_correct[b]
        return M.summarize(scores[b], w, st)["apgr"] if M.pgr_defined(w, st) else float("nan")  # skipped

    def line(label: str, scores: np.ndarray, base: np.ndarray | None) -> str:
        whole = M.summarize(scores, held.weak_correct, held.strong_correct)
        lo, hi = np.nanquantile([apgr(scores, b) for b in boot], [0.05, 0.95])
        text = f"{label:<24} APGR {whole['apgr']:.3f} [{lo:.3f}, {hi:.3f}]  CPT(50%) {whole['cpt50']:.3f}"
        if base is not None:
            diffs = [apgr(scores, b) - apgr(base, b) for b in boot]
            dlo, dhi = np.nanquantile(diffs, [0.05, 0.95])
            text += f"  vs prior {float(np.nanmean(diffs)):+.3f} [{dlo:+.3f}, {dhi:+.3f}]"
        return text

    started = time.perf_counter()
    prior = fit_router(prior_rows, config)
    base = prior.score_many(held.prompts)
    print(line("prior only", base, None) + f"  (fit {time.perf_counter() - started:.0f}s)", flush=True)
    flip_w, flip_s = rng.random(len(pool)) < args.judge_noise, rng.random(len(pool)) < args.judge_noise
    for k in args.labels:
        rows = data.subset(pool[:k])
        rows = dataclasses.replace(
            rows, benchmark=np.full(k, "traffic", dtype=object), subject=np.full(k, "", dtype=object),
            weak_correct=np.where(flip_w[:k], ~rows.weak_correct, rows.weak_correct),
            strong_correct=np.where(flip_s[:k], ~rows.strong_correct, rows.strong_correct))
        for weight in args.weights:
            train, used = weight_traffic(concat([prior_rows, rows]), None if weight == "default" else float(weight))
            started = time.perf_counter()
            model = fit_router(train, config)
            print(line(f"+{k} labels x{used:.1f}", model.score_many(held.prompts), base)
                  + f"  (fit {time.perf_counter() - started:.0f}s)", flush=True)


def hook_cost_main(calls: int) -> None:
    """Median µs per `Learning.attach` (shadow rate 0.05, feedback on; no tier is called)."""
    from gateway.exchange import Exchange
    from gateway.openai.request import parse_chat_request
    from gateway.costs import CostModel
    from gateway.dispatch import Answer, Tiers
    from gateway.learning.service import Learning
    from gateway.metrics import GatewayMetrics
    from gateway.routing.decision import RouteDecision
    from gateway.routing.reloadable import router_from_settings
    from gateway.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(environ={}, overrides={
            "learning": {"shadow_rate": 0.05, "feedback": True, "labels_path": f"{tmp}/labels.jsonl"}})
        metrics = GatewayMetrics()
        router = router_from_settings(settings, metrics)
        learning = Learning(settings, tiers=Tiers(), costs=CostModel(settings.costs, "gpt-4o-mini"),
                            metrics=metrics.learning, router=router)
        learning.shadow_on = True  # no upstream here: force the sampler on (nothing is queued past its bound)
        parsed = parse_chat_request(b'{"model":"auto","messages":[{"role":"user","content":"What is the capital '
                                    b'of France? Answer in one word."}],"temperature":0}')
        decision = RouteDecision(tier="local", reason="classifier", detail="classifier", score=0.31)
        headers = {"authorization": "Bearer x", "content-type": "application/json"}
        body = b'{"choices":[{"message":{"content":"Paris"}}]}'
        answer_headers = {"x-gateway-route": "local", "x-gateway-model": "local"}  # the dispatcher's
        timings = []
        random.seed(1)

        async def run() -> None:
            for i in range(calls):
                answer = Answer(200, body, dict(answer_headers))
                ex = Exchange(f"req-{i}", headers, time.perf_counter())
                ex.accept("t-1", parsed)
                ex.routed(decision, "local")
                t0 = time.perf_counter_ns()
                after = learning.attach(answer, ex)
                if after is not None:
                    await after()
                timings.append(time.perf_counter_ns() - t0)
                if learning.shadow.queue.full():
                    while not learning.shadow.queue.empty():
                        learning.shadow.queue.get_nowait()

        asyncio.run(run())
    timings.sort()
    print(f"Learning.attach + offer, {calls} calls: p50 {timings[len(timings) // 2] / 1000:.1f} µs, "
          f"p99 {timings[int(len(timings) * 0.99)] / 1000:.1f} µs, mean {statistics.fmean(timings) / 1000:.1f} µs")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--seed-rows", type=int, default=300)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--requests-per-day", type=int, default=1500)
    p.add_argument("--shadow-rate", type=float, default=0.2)
    p.add_argument("--judge-noise", type=float, default=0.05)
    p.add_argument("--judge-price", type=float, default=2.5, help="$ per million judge input tokens")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hook-calls", type=int, default=20000)
    p.add_argument("--hook-only", action="store_true")
    p.add_argument("--shift", action="store_true",
                   help="the shifted deployment instead: prior without the STEM MMLU subjects, STEM traffic")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 300, 1000], help="--shift: label counts")
    p.add_argument("--weights", nargs="+", default=["1", "default"], help="--shift: traffic row weights")
    p.add_argument("--held-out", type=int, default=700, help="--shift: held-out traffic rows")
    p.add_argument("--bootstrap", type=int, default=300, help="--shift: bootstrap resamples")
    args = p.parse_args()
    print(f"machine: {machine_line()}; load average {load_average()}")
    if args.shift:
        shifted(args)
        print(f"load average after: {load_average()}")
        return 0
    hook_cost_main(args.hook_calls)
    if not args.hook_only:
        simulate(args)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

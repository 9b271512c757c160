"""The learning loop's headline figures, printed by one command: what a deployment gains from judged labels, and
what shadow judging costs its clients.

Part 1 (learning; `shifted`): a simulated deployment on traffic the router was not fitted to. The routing dev data
(`shared/data/routing/dev.jsonl`) is split by domain: the stand-in for the shipped model (the "prior") is trained on
every dev row *outside* the traffic's domain (8,750 rows: GSM8K and every MMLU subject but the STEM ones); the
traffic is the 1,838 STEM MMLU rows (mathematics, physics, chemistry, computer science, statistics, algebra,
engineering, machine learning, astronomy, econometrics), of which `--held-out` are held out. Judged requests are
traffic rows with their true labels, each grade flipped with probability `--judge-noise` (a judge that errs).
Learning from k judged requests = what `slm-gateway classifier train --data dev --data labels` does: the prior's
rows plus k label rows, the label rows weighted by the documented default (`classifier.data.traffic_weight`), a
refit (the light configuration: 2^16 word features, no tree or subject-prior head: 2-4 minutes a fit at load
5-10 on the 2-core VM, several times that with the shipped configuration). Printed: APGR and CPT(50%) on the held-out traffic, with 90% bootstrap intervals, and the paired
APGR difference to the prior (same resamples), for 0 and `--labels` (100, 300, 1,000) judged requests.

Part 2 (latency; `bench/shadow_latency.py`): the client latency shadow judging adds, through two running gateways
(shadow_rate 0 and 1.0, the bundled local model) and the fake upstream acting as the upstream LLM and the judge:
p50/p99 at a fixed open-loop rate, pinned-upstream and pinned-local requests, alternating rounds.

Part 3 (hook): `Learning.attach` with shadow judging and feedback on, as the gateway calls it for every answered
request: time per call over `--hook-calls` calls.

    python bench/learning.py                          # all three parts (~14 min at load 5-10 on the 2-core VM)
    python bench/learning.py --quick                  # smaller: 100/300 labels, 1 latency round of 5 s
    python bench/learning.py --only learning --labels 100 300 1000 --weights 1 default
    python bench/learning.py --only latency --rounds 3 --duration 15 --upstream-rate 8 --local-rate 0.5
    python bench/learning.py --loop                   # the old same-distribution loop (see bench/README.md)
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


def shifted(args: argparse.Namespace) -> list[str]:
    """Part 1 (see the module docstring): the report's lines, also printed as they come."""
    from classifier import metrics as M
    from classifier.data import concat, weight_traffic
    from classifier.fit import RouterConfig, fit_router
    from classifier.train import load_dataset

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    data = load_dataset(args.data)
    in_domain = np.array([data.benchmark[i] == "mmlu" and any(s in data.subject[i] for s in STEM)
                          for i in range(len(data))])
    rng = np.random.default_rng(args.seed)
    outside = np.flatnonzero(~in_domain)
    if args.prior_rows and args.prior_rows < len(outside):
        outside = np.sort(rng.choice(outside, args.prior_rows, replace=False))
    prior_rows = data.subset(outside)
    order = rng.permutation(np.flatnonzero(in_domain))
    held, pool = data.subset(order[: args.held_out]), order[args.held_out :]
    if max(args.labels) > len(pool):
        raise SystemExit(f"--labels {max(args.labels)} > the {len(pool)} traffic rows not held out")
    # separate streams: the judge's errors do not depend on --bootstrap (so --quick judges the same labels)
    noise = np.random.default_rng([args.seed, 1])
    flip_w, flip_s = noise.random(len(pool)) < args.judge_noise, noise.random(len(pool)) < args.judge_noise
    resample = np.random.default_rng([args.seed, 2])
    boot = [resample.integers(0, len(held), len(held)) for _ in range(args.bootstrap)]
    config = RouterConfig(word_features=2**16, tree_weight=0.0, subject_prior_weight=0.0)
    say(f"1. learning: a deployment whose traffic the router was not fitted to ({args.data})")
    say(f"   prior (stand-in for the shipped model): {len(prior_rows)} dev rows outside the traffic's domain "
        f"(GSM8K + non-STEM MMLU)")
    say(f"   traffic: the {int(in_domain.sum())} STEM MMLU rows ({', '.join(STEM)}); {len(held)} held out "
        f"(local acc {held.weak_correct.mean():.3f}, upstream acc {held.strong_correct.mean():.3f})")
    say(f"   judged request = a traffic row, each grade flipped with p={args.judge_noise}; learning = prior rows + "
        f"k label rows, refit; 90% bootstrap CIs over the held-out rows ({args.bootstrap} resamples, seed {args.seed})")

    def apgr(scores: np.ndarray, b: np.ndarray) -> float:
        w, st = held.weak_correct[b], held.strong_correct[b]
        return M.summarize(scores[b], w, st)["apgr"] if M.pgr_defined(w, st) else float("nan")  # skipped

    def cpt(scores: np.ndarray, b: np.ndarray) -> float:
        w, st = held.weak_correct[b], held.strong_correct[b]
        return M.summarize(scores[b], w, st)["cpt50"] if M.pgr_defined(w, st) else float("nan")

    def ci(values: list[float], fmt: str) -> str:
        lo, hi = np.nanquantile(values, [0.05, 0.95])
        return f"[{lo:{fmt}}, {hi:{fmt}}]"

    def row(label: str, weight: str, scores: np.ndarray, base: np.ndarray | None, seconds: float) -> None:
        whole = M.summarize(scores, held.weak_correct, held.strong_correct)
        text = (f"   {label:>9} {weight:>7}  {whole['apgr']:.3f} {ci([apgr(scores, b) for b in boot], '.3f')}  "
                f"{whole['cpt50']:6.1%} {ci([cpt(scores, b) for b in boot], '.1%')}  ")
        if base is None:
            text += f"{'-':>24}"
        else:
            diff = whole["apgr"] - M.summarize(base, held.weak_correct, held.strong_correct)["apgr"]
            text += f"{diff:+.3f} {ci([apgr(scores, b) - apgr(base, b) for b in boot], '+.3f')}"
        say(text + f"  {seconds:5.0f}")

    say(f"   {'labels':>9} {'weight':>7}  {'APGR [90% CI]':<22}  {'CPT(50%) [90% CI]':<23}  "
        f"{'APGR vs prior [90% CI]':<24}  fit s")
    started = time.perf_counter()
    prior = fit_router(prior_rows, config)
    base = prior.score_many(held.prompts)
    row("0 (prior)", "-", base, None, time.perf_counter() - started)
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
            shown = f"{used:.2f}" + ("*" if weight == "default" else "")
            row(str(k), shown, model.score_many(held.prompts), base, time.perf_counter() - started)
    say("   (weight: each label row's training weight; * the documented default, classifier.data.traffic_weight: "
        "labels weigh half the benchmark rows in total, capped at 4 per row)")
    return lines


def hook_cost_main(calls: int) -> str:
    """Median µs per `Learning.attach` (shadow rate 0.05, feedback on; no tier is called)."""
    from gateway.exchange import Exchange
    from gateway.openai.request import parse_chat_request
    from gateway.costs import CostModel
    from gateway.devtools.fake_backend import FakeBackend
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
        tiers = Tiers(local=FakeBackend("local"), upstream=FakeBackend())  # never called: no worker runs
        learning = Learning(settings, tiers=tiers, costs=CostModel(settings.costs, "gpt-4o-mini"),
                            metrics=metrics.learning, router=router)
        assert learning.shadow_on and learning.feedback_on
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
    line = (f"3. hook: Learning.attach + offer (shadow rate 0.05, feedback on), {calls} calls: "
            f"p50 {timings[len(timings) // 2] / 1000:.1f} µs, p99 {timings[int(len(timings) * 0.99)] / 1000:.1f} µs, "
            f"mean {statistics.fmean(timings) / 1000:.1f} µs")
    print(line, flush=True)
    return line


def main() -> int:
    import shadow_latency

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("learning", "latency", "hook"), action="append",
                   help="run only these parts (repeatable; default all three)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller run: --labels 100 300, --bootstrap 200, latency --rounds 1 --duration 5")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--judge-noise", type=float, default=0.05, help="learning: probability a judged grade is wrong")
    p.add_argument("--labels", type=int, nargs="+", default=None,
                   help="learning: judged-request counts (default 100 300 1000)")
    p.add_argument("--weights", nargs="+", default=["default"],
                   help="learning: label row weights to try ('default' = classifier.data.traffic_weight)")
    p.add_argument("--held-out", type=int, default=700, help="learning: held-out traffic rows")
    p.add_argument("--bootstrap", type=int, default=None, help="learning: bootstrap resamples (default 300)")
    p.add_argument("--prior-rows", type=int, default=0, help="learning: subsample the prior's rows (0: all)")
    shadow_latency.add_arguments(p)
    p.add_argument("--hook-calls", type=int, default=20000, help="hook: Learning.attach calls")
    p.add_argument("--shift", action="store_true", help=argparse.SUPPRESS)  # the old name of --only learning
    p.add_argument("--loop", action="store_true", help="instead: the old same-distribution loop (--days ...)")
    p.add_argument("--seed-rows", type=int, default=300, help="--loop: seed set")
    p.add_argument("--days", type=int, default=3, help="--loop: simulated days")
    p.add_argument("--requests-per-day", type=int, default=1500, help="--loop")
    p.add_argument("--shadow-rate", type=float, default=0.2, help="--loop")
    p.add_argument("--judge-price", type=float, default=2.5, help="--loop: $ per million judge input tokens")
    args = p.parse_args()
    if args.quick:
        args.labels = args.labels or [100, 300]
        args.bootstrap = args.bootstrap or 200
        args.rounds, args.duration, args.hook_calls = 1, 5.0, 5000
    args.labels = args.labels or [100, 300, 1000]
    args.bootstrap = args.bootstrap or 300
    parts = args.only or (["learning"] if args.shift else ["learning", "latency", "hook"])
    print(f"machine: {machine_line()}; load average {load_average()}", flush=True)
    started = time.perf_counter()
    if args.loop:
        simulate(args)
        print(f"load average after: {load_average()}")
        return 0
    report: list[str] = []
    if "learning" in parts:
        report += shifted(args)
    if "latency" in parts:
        print("2. ", end="")
        report += shadow_latency.measure(args)
    if "hook" in parts:
        report.append(hook_cost_main(args.hook_calls))
    print(f"\n== summary ({time.perf_counter() - started:.0f} s; load average now {load_average()})")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Routing decision latency: policy evaluation + classifier (feature extraction included), p50/p99.

    python bench/routing_latency.py [--classifier-model FILE] [--policy FILE ...] [--requests 3000]

With a classifier that reports familiarity (the `familiarity` policy condition), its cost is printed next to
the score's, on the same requests.

Requests are synthetic but realistic in shape: short questions, multi-turn chats, code, long pasted
documents (2-12k characters), some with personal data, some with tools. Without --classifier-model the
shipped model is used; if it is not built yet, a small model is trained on synthetic prompts (noted).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.openai.request import parse_chat_request  # noqa: E402
from gateway.routing.decision import RouteContext  # noqa: E402
from gateway.routing.policy import load_policy  # noqa: E402
from gateway.routing.policy_router import PolicyRejected, PolicyRouter  # noqa: E402

TOPICS = ["the French revolution", "photosynthesis", "TCP congestion control", "a sourdough starter",
          "the Kelly criterion", "Kubernetes liveness probes", "the Krebs cycle", "Rust lifetimes"]
QUESTIONS = ["Explain {t} simply.", "Give me three facts about {t}.", "What are common mistakes with {t}?",
             "Write a short poem about {t}.", "Compare {t} with an alternative and list trade-offs.",
             "Prove a key property of {t} step by step, with all assumptions stated."]
CODE = "def merge(a, b):\n    out = []\n    while a and b:\n        out.append(a.pop(0) if a[0] < b[0] else b.pop(0))\n    return out + a + b\n"
PII = ["Please reply to jane.doe@example.com.", "Call me at +44 20 7946 0958.", "IBAN GB82WEST12345698765432."]
TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}]


def make_requests(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        question = rng.choice(QUESTIONS).format(t=topic)
        kind = rng.random()
        if kind < 0.45:
            messages = [{"role": "user", "content": question}]
        elif kind < 0.7:
            messages = [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": f"Tell me about {topic}."},
                        {"role": "assistant", "content": f"{topic.capitalize()} is a broad subject. " * 6},
                        {"role": "user", "content": question}]
        elif kind < 0.85:
            messages = [{"role": "user", "content": f"Review this code and {question.lower()}\n```python\n{CODE * rng.randint(1, 8)}```"}]
        else:
            doc = " ".join(f"Paragraph {i} about {topic} with figures {rng.randint(1, 10**6)} and notes." for i in range(rng.randint(30, 180)))
            messages = [{"role": "user", "content": f"Summarise this document:\n{doc}\n{question}"}]
        if rng.random() < 0.1:
            messages[-1]["content"] += " " + rng.choice(PII)
        body: dict[str, Any] = {"model": rng.choice(["gpt-4o", "gpt-4o-mini", "auto"]), "messages": messages}
        if rng.random() < 0.05:
            body["tools"] = TOOLS
        out.append(body)
    return out


def load_classifier(path: str | None) -> tuple[Any, str]:
    from classifier import DEFAULT_MODEL_PATH, load_model

    if path or DEFAULT_MODEL_PATH.is_file():
        return load_model(path), str(path or DEFAULT_MODEL_PATH)
    from classifier.train import RouterConfig, train

    rows = []
    for i in range(300):
        rows.append({"prompt": f"Prove theorem {i} about {TOPICS[i % 8]}.", "weak_correct": i % 4 == 0, "strong_correct": True})
        rows.append({"prompt": f"Say hello about {TOPICS[i % 8]} {i}.", "weak_correct": i % 9 != 0, "strong_correct": True})
    folder = Path(tempfile.mkdtemp(prefix="bench-router-"))
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train(folder / "d.jsonl", folder / "router.skops", RouterConfig())
    return load_model(folder / "router.skops"), "synthetic stand-in (shipped model not built yet)"


class ConstantScorer:
    """Zero-cost stand-in classifier: isolates the policy's own cost (conditions, PII scan, token estimate)."""

    metadata = {"score_quantiles": [0.0, 1.0]}

    def score_messages(self, messages: Any) -> float:
        return 0.5


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(router: PolicyRouter, requests: list[Any]) -> tuple[list[float], list[float]]:
    total, scoring = [], []
    clock = time.perf_counter
    for parsed in requests:
        ctx = RouteContext(request=parsed, headers={}, has_upstream=True, has_local=True)
        features = router.features(ctx)
        started = clock()
        try:
            router._apply(router.match(features), features, ctx)
        except PolicyRejected:
            pass
        total.append(clock() - started)
        if features.score_seconds is not None:
            scoring.append(features.score_seconds)
    return total, scoring


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier-model")
    parser.add_argument("--policy", action="append", help="policy files (default: every shipped policy)")
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    model, model_name = load_classifier(args.classifier_model)
    bodies = make_requests(args.requests)
    parsed = [parse_chat_request(json.dumps(b).encode()) for b in bodies]
    chars = [sum(len(str(m["content"])) for m in b["messages"]) for b in bodies]
    print(f"classifier: {model_name}")
    print(f"requests: {len(parsed)}, prompt chars p50={statistics.median(chars):.0f} max={max(chars)}")
    print(f"{'policy':<28} {'decide p50':>9} {'p99':>9} {'max':>9} | {'classifier p50':>14} {'p99':>9} {'n':>5}")
    policies = args.policy or sorted(str(p) for p in (ROOT / "policies").glob("*.yaml"))
    us = 1e6
    for label, scorer in (("", model), (" (policy only)", ConstantScorer())):
        for path in policies:
            router = PolicyRouter(load_policy(path), scorer)
            bench(router, parsed[:200])  # warm-up
            total, scoring = bench(router, parsed)
            cls = f"{pct(scoring, 0.5) * us:>12.0f}us {pct(scoring, 0.99) * us:>7.0f}us {len(scoring):>5}" if scoring else "-"
            print(f"{Path(path).stem + label:<28} {pct(total, 0.5) * us:>7.0f}us {pct(total, 0.99) * us:>7.0f}us "
                  f"{max(total) * us:>7.0f}us | {cls}")
    print("(wall-clock per decision on this machine; other processes sharing the CPUs inflate p99)")
    if getattr(model, "familiarity_head", None) is not None:
        familiarity_vs_score(model, bodies)
    return 0


def familiarity_vs_score(model: Any, bodies: list[dict[str, Any]]) -> None:
    """The classifier's familiarity (policy condition `familiarity`) next to its score, interleaved per request."""
    fam, score = [], []
    clock = time.perf_counter
    for body in bodies:
        messages = body["messages"]
        t0 = clock()
        model.familiarity_messages(messages)
        t1 = clock()
        model.score_messages(messages)
        t2 = clock()
        fam.append(t1 - t0)
        score.append(t2 - t1)
    us = 1e6
    for name, values in (("familiarity", fam), ("score", score)):
        print(f"classifier {name:<12} p50 {pct(values, 0.5) * us:>6.0f}us  p99 {pct(values, 0.99) * us:>6.0f}us  "
              f"(same {len(values)} requests, interleaved)")


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-request cost of parsing a chat body and of the policy decision (capability check included), in µs.

    python bench/request_checks.py [--repeat 5] [--number 20000]

Bodies: a typical one (system + 3 turns, ~1 KB, string contents), a code prompt full of braces (the depth
check's walk runs), one with tools + an image part. Policy: the shipped default with a zero-cost classifier,
so the figure is the router's own work. Best of `--repeat` runs of `--number` calls each.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.openai.request import parse_chat_request  # noqa: E402
from gateway.routing.decision import RouteContext  # noqa: E402
from gateway.routing.policy import load_policy  # noqa: E402
from gateway.routing.policy_router import PolicyRouter  # noqa: E402

TYPICAL: dict[str, Any] = {"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 256, "messages": [
    {"role": "system", "content": "You are a helpful assistant for a travel company. Answer briefly."},
    {"role": "user", "content": "What documents do I need to travel from France to Japan for two weeks?"},
    {"role": "assistant", "content": "For a two-week tourist stay you need a valid passport; " * 6},
    {"role": "user", "content": "And if I also stop in Singapore on the way back, for three nights?"},
]}
CODE: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Fix this:\n" + (
    "function f(a) { if (a[0]) { return {x: [a[1], {y: a[2]}]}; } }\n" * 20)}]}
FEATURES: dict[str, Any] = {**TYPICAL, "tools": [{"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}], "messages": [*TYPICAL["messages"], {
        "role": "user", "content": [{"type": "text", "text": "and this?"},
                                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}


class ConstantScorer:
    metadata = {"score_quantiles": [0.0, 1.0]}

    def score_messages(self, messages: Any) -> float:
        return 0.5


def best_us(fn: Any, repeat: int, number: int) -> float:
    return min(timeit.repeat(fn, repeat=repeat, number=number)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    router = PolicyRouter(load_policy(None), ConstantScorer())
    print(f"{'body':10} {'bytes':>6} {'parse us':>9} {'decide us':>10}")
    for name, body in (("typical", TYPICAL), ("code", CODE), ("features", FEATURES)):
        raw = json.dumps(body).encode()
        parsed = parse_chat_request(raw)
        ctx = RouteContext(request=parsed, headers={}, has_upstream=True, has_local=True)
        parse = best_us(lambda: parse_chat_request(raw), args.repeat, args.number)
        decide = best_us(lambda: router.decide(ctx), args.repeat, args.number)
        print(f"{name:10} {len(raw):6d} {parse:9.2f} {decide:10.2f}")
    try:
        from gateway.routing.capabilities import required_features
    except ImportError:
        return 0
    parsed = parse_chat_request(json.dumps(TYPICAL).encode())
    print(f"required_features(typical): {best_us(lambda: required_features(parsed), args.repeat, args.number):.3f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

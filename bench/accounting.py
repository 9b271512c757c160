"""What `Accounting` costs per request on the event loop: `routed(ex)` then `record(ex)` of a finished exchange
(a local answer with tokens, cost and savings; a streamed one with its time to first token; an upstream one), no
access log. Figures are process CPU time per request, the best of 5 runs.

    PYTHONPATH=. python bench/accounting.py [--number 20000]   (from the repo root; run it in two trees to compare)
"""

from __future__ import annotations

import argparse
import time
import timeit

from gateway.accounting import Accounting
from gateway.costs import CostModel
from gateway.exchange import Exchange
from gateway.metrics import GatewayMetrics
from gateway.openai.request import parse_chat_request
from gateway.openai.wire import Usage
from gateway.routing.decision import RouteDecision
from gateway.settings import CostSettings

BODY = b'{"model":"%s","messages":[{"role":"user","content":"What is the capital of France?"}]%s}'


def finished_exchange(tier: str, model: str, stream: bool) -> Exchange:
    """A finished exchange as the dispatcher leaves it (decided, answered by `tier` with 12 + 6 tokens)."""
    body = BODY % (model.encode(), b',"stream":true' if stream else b"")
    ex = Exchange("0123456789abcdef0123456789abcdef", {}, time.perf_counter())
    ex.accept("t-" + "ab" * 12, parse_chat_request(body))
    ex.routed(RouteDecision(tier=tier, reason="classifier", detail="classifier p_strong=0.2 < 0.5"), model)
    ex.cache = "miss"
    ex.usage = Usage(12, 6)
    ex.tier_seconds = 0.004
    if stream:
        ex.first_token_at = ex.started + 0.001
    return ex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="requests per run (default 20000)")
    n = parser.parse_args().number
    accounting = Accounting(GatewayMetrics(), CostModel(CostSettings(), "gpt-4o-mini"))
    cases = {
        "local answer": finished_exchange("local", "qwen-local", stream=False),
        "local stream": finished_exchange("local", "qwen-local", stream=True),
        "upstream answer": finished_exchange("upstream", "gpt-4o-mini", stream=False),
    }
    for name, ex in cases.items():
        def one(ex: Exchange = ex) -> None:
            accounting.routed(ex)
            accounting.record(ex)

        best = min(timeit.repeat(one, number=n, repeat=5, timer=time.process_time)) / n * 1e6
        print(f"{name:16s} routed + record: {best:6.2f} µs CPU per request")


if __name__ == "__main__":
    main()

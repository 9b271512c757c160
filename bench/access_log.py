"""What the access log costs per request: `AccessLog(ex, latency)` with the stderr JSON handler writing to
/dev/null, with prompts, with the logger above INFO, and disabled (no AccessLog: one `is None` test).

    PYTHONPATH=. python bench/access_log.py [--number 20000]   (from the repo root)
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import timeit

from gateway.access_log import AccessLog, JsonFormatter
from gateway.exchange import Exchange
from gateway.openai.request import parse_chat_request
from gateway.openai.wire import Usage
from gateway.routing.decision import RouteDecision


def finished_exchange() -> Exchange:
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"What is the capital of France?"}]}'
    ex = Exchange("0123456789abcdef0123456789abcdef", {}, time.perf_counter())
    ex.accept("t-" + "ab" * 12, parse_chat_request(body))
    ex.routed(RouteDecision(tier="local", reason="classifier", detail="classifier p_strong=0.2 < 0.5"), "local")
    ex.cache = "miss"
    ex.usage = Usage(12, 6)
    return ex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    n = parser.parse_args().number
    ex = finished_exchange()
    devnull = open(os.devnull, "w")  # noqa: SIM115
    logger = logging.getLogger("bench.access")
    logger.propagate = False
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    cases = {
        "enabled, JSON line to /dev/null": AccessLog(logger),
        "enabled with prompts": AccessLog(logger, prompts=True),
    }
    for name, log in cases.items():
        best = min(timeit.repeat(lambda: log(ex, 0.0123), number=n, repeat=5)) / n
        print(f"{name:34s} {best * 1e6:7.2f} us/request")
    best = min(timeit.repeat(lambda: logger.info("x"), number=n, repeat=5)) / n
    print(f"{'baseline: logger.info(str) there':34s} {best * 1e6:7.2f} us/request")
    logger.setLevel(logging.WARNING)
    best = min(timeit.repeat(lambda: cases["enabled, JSON line to /dev/null"](ex, 0.0123), number=n, repeat=5)) / n
    print(f"{'logger level above INFO':34s} {best * 1e6:7.2f} us/request")
    disabled: AccessLog | None = None
    best = min(timeit.repeat(lambda: disabled is not None and disabled(ex, 0.0123), number=n, repeat=5)) / n
    print(f"{'disabled (access_log: false)':34s} {best * 1e6:7.2f} us/request")


if __name__ == "__main__":
    main()

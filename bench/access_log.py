"""What the access log costs per request on the event loop: `AccessLog(ex, latency)` as the gateway sets it up
(its `LineWriter` alone on the logger, writing to /dev/null from its thread), with prompts, through `logging`
when a host added its own handler (a `StreamHandler` with `JsonFormatter` to /dev/null), with the logger above
INFO, and disabled (no AccessLog: one `is None` test). Figures are process CPU time per request (the writer
thread's batched writes included, flushed at the end for the "incl. writes" line).

    PYTHONPATH=. python bench/access_log.py [--number 20000]   (from the repo root)
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import timeit
from collections.abc import Callable

from gateway.access_log import AccessLog, JsonFormatter, LineWriter
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


def logger_with(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def best_us(call: Callable[[], object], n: int) -> float:
    """Best of 5 runs of `n` calls: process CPU time per call (the writer thread's included; robust to a busy
    machine, where wall time mostly measures the other processes)."""
    return min(timeit.repeat(call, number=n, repeat=5, timer=time.process_time)) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    n = parser.parse_args().number
    ex = finished_exchange()
    devnull = open(os.devnull, "w")  # noqa: SIM115
    writer = LineWriter(devnull)
    default = logger_with("bench.access.default", writer)
    plain = logging.StreamHandler(devnull)
    plain.setFormatter(JsonFormatter())
    host = logger_with("bench.access.host", plain)
    log, with_prompts, through_logging = AccessLog(default), AccessLog(default, prompts=True), AccessLog(host)
    for name, call in {
        "default (LineWriter, /dev/null)": lambda: log(ex, 0.0123),
        "default with prompts": lambda: with_prompts(ex, 0.0123),
        "host handler (through logging)": lambda: through_logging(ex, 0.0123),
        "baseline: logger.info(str) there": lambda: host.info("x"),
    }.items():
        print(f"{name:34s} {best_us(call, n):7.2f} us CPU/request")
    writer.flush()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        log(ex, 0.0123)
    writer.flush()
    cpu = (time.process_time() - cpu) / n * 1e6
    print(f"{'default, all queued lines written':34s} {cpu:7.2f} us CPU/request "
          f"({(time.perf_counter() - wall) / n * 1e6:.2f} us wall)")
    default.setLevel(logging.WARNING)
    print(f"{'logger level above INFO':34s} {best_us(lambda: log(ex, 0.0123), n):7.2f} us CPU/request")
    disabled: AccessLog | None = None
    print(f"{'disabled (access_log: false)':34s} "
          f"{best_us(lambda: disabled is not None and disabled(ex, 0.0123), n):7.2f} us CPU/request")


if __name__ == "__main__":
    main()

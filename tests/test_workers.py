"""Several worker processes: metrics are aggregated across all of them (prometheus-client multiprocess mode)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import RunningGateway


def requests_total(text: str, tier: str) -> float:
    pattern = re.compile(r'^slm_gateway_requests_total\{([^}]*)\} (\S+)$', re.M)
    return sum(float(value) for labels, value in pattern.findall(text) if f'tier="{tier}"' in labels)


def test_metrics_add_up_across_workers(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str], tmp_path: Path
) -> None:
    upstream = upstream_factory()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    gw = gateway_factory(
        "--workers", "2", "--upstream-url", upstream, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    )
    sent = 60
    with httpx.Client(timeout=30) as http:
        for i in range(sent):
            # a new connection each time, so the kernel spreads them over both workers
            response = httpx.post(
                f"{gw.base_url}/chat/completions",
                json={"model": "upstream", "messages": [{"role": "user", "content": f"question {i}"}]},
                headers={"connection": "close"},
            )
            assert response.status_code == 200
        for _ in range(4):  # whichever worker answers the scrape reports the sum of all
            text = http.get(f"{gw.root}/metrics", headers={"connection": "close"}).text
            assert requests_total(text, "upstream") == sent
            assert "slm_gateway_local_inflight" in text
    writers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
    assert len(writers) == 2, f"expected both workers to have served requests, got {writers}"


FIRST = "defaults: {action: upstream}\nrules:\n  - name: first\n    action: upstream\n    when: {model: alpha}\n"
SECOND = "defaults: {action: upstream}\nrules:\n  - name: second\n    action: upstream\n    when: {model: alpha}\n"
BROKEN = "rules:\n  - name: alpha\n    action: teleport\n"


def reasons_seen(gw: RunningGateway, count: int = 30) -> set[str]:
    """The route reasons of `count` requests on new connections (spread over the workers)."""
    seen = set()
    for _ in range(count):
        response = httpx.post(
            f"{gw.base_url}/chat/completions", timeout=30, headers={"connection": "close"},
            json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200
        seen.add(response.headers["x-gateway-route-reason"])
    return seen


def worker_pids(supervisor: int) -> set[str]:
    """The supervisor's worker processes (multiprocessing children, not its resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return {pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def policy_reloads(gw: RunningGateway, result: str) -> float:
    text = httpx.get(f"{gw.root}/metrics", headers={"connection": "close"}).text
    pattern = re.compile(r'^slm_gateway_reloads_total\{([^}]*)\} (\S+)$', re.M)
    return sum(float(v) for labels, v in pattern.findall(text) if 'component="policy"' in labels and f'result="{result}"' in labels)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_reloads_reach_every_worker_without_restarting_them(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(FIRST)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    gw = gateway_factory(
        "--workers", "2", "--upstream-url", upstream_factory(), "--policy", str(policy),
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    workers = worker_pids(gw.server.pid)
    assert len(workers) == 2
    assert reasons_seen(gw) == {"rule 'first'"}

    # POST /admin/reload on one worker: it reloads, then the supervisor has every worker reload.
    policy.write_text(SECOND)
    answer = httpx.post(f"{gw.root}/admin/reload", timeout=30)
    assert answer.status_code == 200 and answer.json()["scope"] == "all workers"
    wait_until(lambda: policy_reloads(gw, "success") == 3)  # the asking worker twice, the other once
    assert reasons_seen(gw) == {"rule 'second'"}

    # SIGHUP to the supervisor with a broken policy: every worker keeps the old one and keeps serving.
    policy.write_text(BROKEN)
    os.kill(gw.server.pid, signal.SIGHUP)
    wait_until(lambda: policy_reloads(gw, "failure") == 2)
    assert reasons_seen(gw) == {"rule 'second'"}
    assert worker_pids(gw.server.pid) == workers  # reloaded in place, not replaced

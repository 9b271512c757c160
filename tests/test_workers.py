"""Several worker processes: metrics are aggregated across all of them (prometheus-client multiprocess mode)."""

from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Callable

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

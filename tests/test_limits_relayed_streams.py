"""A relayed stream the client leaves before the upstream's usage arrives is settled with what it reserved (issue
16: no budget bypass by hanging up before the last event): a gateway PROCESS (`gateway.devtools.fake_gateway`)
relaying `/v1/responses` to the fake upstream (a process, one event every 300 ms), limits on a REAL Redis
(`SLM_TEST_REDIS_URL`). Exact tokens and dollars; a stream read to its end settles the usage it reported."""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import msgspec
import pytest
import redis
import yaml

from gateway.devtools.process import LOOPBACK, free_port, run_fake_upstream, spawn_server
from tests.conftest import REPO_ROOT
from tests.test_limits import ADMIN, REDIS_URL, mini_cost, settled_usage
from tests.test_limits_replicas import not_near_a_minute_boundary


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    prefix = f"slmgw:test-relayed-streams:{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        upstream = stack.enter_context(run_fake_upstream(chunk_delay_ms=300))
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump({
            "admin_api_keys": ["sk-admin"], "upstream": {"url": upstream}, "cache": {"enabled": False},
            "limits": {"enabled": True, "redis_url": REDIS_URL, "key_prefix": prefix}}))
        port = free_port()
        argv = [sys.executable, "-m", "gateway.devtools.fake_gateway", "--config", str(path), "--port", str(port)]
        stack.enter_context(spawn_server(argv, f"http://{LOOPBACK}:{port}/healthz", timeout=120, cwd=REPO_ROOT,
                                         env={"PYTHONPATH": str(REPO_ROOT)}))
        yield f"http://{LOOPBACK}:{port}"
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


async def test_a_relayed_stream_left_before_its_usage_settles_its_reservation(gateway: str) -> None:
    request = {"model": "gpt-4o-mini", "input": "Capital of France?", "max_output_tokens": 6, "stream": True}
    prompt = len(msgspec.json.encode(request)) // 3  # the relayed request's estimate: its bytes / 3, plus 6
    reserved_nano = math.ceil(mini_cost(prompt, 6) * 1e9)
    not_near_a_minute_boundary()  # tokens are counted per UTC minute
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{gateway}/admin/keys", headers=ADMIN, json={"team": "eng", "limits": {"tpm": 100_000}})
        key, kid = r.json()["key"], r.json()["id"]
        headers = {"authorization": f"Bearer {key}", "x-gateway-route": "upstream"}
        async with http.stream("POST", f"{gateway}/v1/responses", json=request, headers=headers) as answer:
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                if line.startswith("data: "):
                    break  # the first event; the usage comes with the last, seconds later
        used = await settled_usage(http, gateway, kid, 0.0, seconds=10.0)
        assert (used["tokens_this_minute"], used["usd_this_month"]) == (prompt + 6, reserved_nano / 1e9)

        whole = await http.post(f"{gateway}/v1/responses", json=request, headers=headers)
        assert whole.status_code == 200 and '"response.completed"' in whole.text
        used = await settled_usage(http, gateway, kid, reserved_nano / 1e9, seconds=10.0)
        reported = round(mini_cost(3, 6) * 1e9)  # the fake upstream's usage: 3 prompt words, 6 answer words
        assert (used["tokens_this_minute"], used["usd_this_month"]) == (prompt + 6 + 9,
                                                                        (reserved_nano + reported) / 1e9)

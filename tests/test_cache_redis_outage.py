"""Redis trouble never fails a request: a throwaway `redis-server` of this test's own is frozen, killed and
restarted under traffic; every request is answered, and the gateway reconnects and hits again by itself."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gateway.devtools.process import LOOPBACK, free_port, run_fake_upstream
from tests.conftest import RunningGateway, run_gateway

KEY = "sk-outage"
HEADERS = {"authorization": f"Bearer {KEY}", "x-gateway-route": "upstream"}


class OwnRedis:
    """A redis-server process started (and ended) by this test only, always on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "own redis-server did not start"
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis(free_port())
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.signal(signal.SIGCONT)
        server.kill()


@pytest.fixture
def upstream() -> Iterator[str]:
    with run_fake_upstream() as url:
        yield url


@pytest.fixture
def gw(own_redis: OwnRedis, upstream: str, tmp_path: Path) -> Iterator[RunningGateway]:
    config = {"api_keys": [KEY], "upstream": {"url": upstream}, "cache": {"key_prefix": "outage"}}
    url = f"redis://{LOOPBACK}:{own_redis.port}/0"
    with run_gateway("--redis-url", url, config=config, tmp_dir=tmp_path) as g:
        yield g


async def _traffic(gw: RunningGateway, prompts: list[str], rounds: int) -> list[httpx.Response]:
    """`rounds` passes over `prompts`, 8 concurrent requests at a time, streamed and not."""
    async with httpx.AsyncClient(timeout=30) as http:
        out: list[httpx.Response] = []
        bodies = [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p}], "temperature": 0, "stream": i % 2 == 1}
            for i, p in enumerate(prompts * rounds)
        ]
        for start in range(0, len(bodies), 8):
            batch = bodies[start : start + 8]
            out += await asyncio.gather(
                *(http.post(f"{gw.base_url}/chat/completions", json=b, headers=HEADERS) for b in batch)
            )
        return out


def cache_result(gw: RunningGateway, content: str) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "temperature": 0}
    response = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=HEADERS, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-cache"]


def errors(gw: RunningGateway) -> float:
    total = 0.0
    for line in httpx.get(f"{gw.root}/metrics").text.splitlines():
        if line.startswith("slm_gateway_cache_errors_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_redis_killed_and_restarted_under_traffic(gw: RunningGateway, own_redis: OwnRedis) -> None:
    known = f"known {uuid.uuid4().hex}"
    assert cache_result(gw, known) == "miss"
    assert cache_result(gw, known) == "hit"

    prompts = [f"p{i} {uuid.uuid4().hex}" for i in range(6)] + [known]
    during = asyncio.run(_traffic(gw, prompts, rounds=2))
    assert all(resp.status_code == 200 for resp in during)

    own_redis.kill()
    started = time.monotonic()
    outage = asyncio.run(_traffic(gw, prompts, rounds=4))
    elapsed = time.monotonic() - started
    assert [resp.status_code for resp in outage] == [200] * len(outage)
    results = [resp.headers["x-gateway-cache"] for resp in outage]
    # Nothing comes from Redis; identical requests in one concurrent batch still collapse in-process ("hit").
    assert "miss" in results and set(results) <= {"miss", "hit"}
    for resp in outage:
        streamed = resp.headers["content-type"].startswith("text/event-stream")
        assert (b"data: [DONE]" in resp.content and b'"error"' not in resp.content) if streamed else (
            b"fake answer to:" in resp.content
        )
    assert elapsed < 10, f"{len(outage)} requests took {elapsed:.1f}s with Redis down"
    assert errors(gw) > 0

    own_redis.start()  # same port, empty
    fresh = f"after {uuid.uuid4().hex}"
    deadline = time.monotonic() + 15
    results: list[str] = []
    while not results or results[-1] != "hit":
        assert time.monotonic() < deadline, f"the gateway did not reconnect: {results}"
        results.append(cache_result(gw, fresh))
        time.sleep(0.1)
    assert cache_result(gw, fresh) == "hit"


def test_frozen_redis_costs_at_most_its_timeout(gw: RunningGateway, own_redis: OwnRedis) -> None:
    known = f"frozen {uuid.uuid4().hex}"
    cache_result(gw, known)
    assert cache_result(gw, known) == "hit"
    own_redis.signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        answers = [cache_result(gw, f"{known} {i}") for i in range(10)]
        elapsed = time.monotonic() - started
        assert set(answers) == {"miss"}
        assert elapsed < 5, f"10 requests took {elapsed:.1f}s with Redis frozen"
    finally:
        own_redis.signal(signal.SIGCONT)
    deadline = time.monotonic() + 15
    while cache_result(gw, known) != "hit":
        assert time.monotonic() < deadline, "no hit after Redis woke up"
        time.sleep(0.1)

"""`/readyz` (gateway/health.py): ready when any tier can serve, per-tier and cache status in the body, the
upstream probe cached (N probes -> one upstream request), a Redis that is down reported, counted and logged once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import httpx

from gateway.devtools.process import free_port
from gateway.health import CachedCheck
from tests.conftest import RunningGateway
from tests.test_cache_redis_outage import OwnRedis

HELLO = {"model": "upstream", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
REDIS_DOWN_LOG = "cache: Redis is unreachable"


def metric(gw: RunningGateway, sample: str) -> float:
    for line in httpx.get(f"{gw.root}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not exposed")


async def test_a_cached_check_runs_once_per_ttl_for_any_number_of_callers() -> None:
    now = itertools.count()
    clock_value = [0.0]
    runs: list[int] = []

    async def probe() -> str:
        runs.append(next(now))
        await asyncio.sleep(0)
        return f"run {len(runs)}"

    check = CachedCheck(probe, ttl=10.0, clock=lambda: clock_value[0])
    assert await asyncio.gather(*(check() for _ in range(50))) == ["run 1"] * 50
    clock_value[0] = 9.9
    assert await check() == "run 1"
    clock_value[0] = 10.1
    assert await check() == "run 2"
    assert len(runs) == 2


def test_probes_reach_the_upstream_once_per_ttl(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    upstream = upstream_factory()
    root = upstream.removesuffix("/v1")
    gw = gateway_factory(config={"upstream": {"url": upstream}, "server": {"readiness_cache_seconds": 3600}})

    async def probes() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(limits=limits, timeout=60) as http:
            return await asyncio.gather(*(http.get(f"{gw.root}/readyz") for _ in range(300)))

    answers = asyncio.run(probes())
    assert {a.status_code for a in answers} == {200}
    assert {a.text for a in answers} == {
        '{"status":"ready","tiers":{"local":"ready","upstream":"reachable"},"cache":{"backend":"memory","status":"up"}}'
    }
    stats = httpx.get(f"{root}/_fake/stats").json()
    assert stats["models"] == 1  # the startup wait's first /readyz; the 300 after it reused it
    assert stats["connections"] == 3  # its own start-up wait, the gateway's one pooled connection, this query


def test_ready_on_the_local_tier_alone_when_the_upstream_is_down(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gw = gateway_factory("--upstream-url", f"http://127.0.0.1:{free_port()}/v1")
    ready = httpx.get(f"{gw.root}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "tiers": {"local": "ready", "upstream": "unreachable"},
        "cache": {"backend": "memory", "status": "up"},
    }
    assert metric(gw, "slm_gateway_cache_backend_up") == 1.0


def test_a_redis_down_at_start_is_reported_counted_and_logged_once(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/3"
    gw = gateway_factory(config={"upstream": {"url": upstream_factory()}, "cache": {"redis_url": dead_redis}})
    for _ in range(3):
        assert httpx.post(f"{gw.base_url}/chat/completions", json=HELLO, timeout=60).status_code == 200
        ready = httpx.get(f"{gw.root}/readyz")
        assert ready.status_code == 200
        assert ready.json()["cache"] == {"backend": "redis", "status": "down"}
    assert metric(gw, "slm_gateway_cache_backend_up") == 0.0
    assert gw.server.output(tail=100_000).count(REDIS_DOWN_LOG) == 1


def test_a_redis_that_goes_away_later_is_reported_and_logged_once(
    gateway_factory: Callable[..., RunningGateway], upstream_factory: Callable[..., str]
) -> None:
    redis_server = OwnRedis(free_port())
    redis_server.start()
    try:
        url = f"redis://127.0.0.1:{redis_server.port}/0"
        gw = gateway_factory(config={"upstream": {"url": upstream_factory()}, "cache": {"redis_url": url},
                                     "server": {"readiness_cache_seconds": 3600}})
        assert httpx.get(f"{gw.root}/readyz").json()["cache"] == {"backend": "redis", "status": "up"}
        assert metric(gw, "slm_gateway_cache_backend_up") == 1.0
        redis_server.kill()
        for n in range(3):  # requests notice it (the readiness ping is cached for an hour here)
            body = {**HELLO, "messages": [{"role": "user", "content": f"hi {n}"}]}
            assert httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=60).status_code == 200
        assert httpx.get(f"{gw.root}/readyz").json()["cache"] == {"backend": "redis", "status": "down"}
        assert metric(gw, "slm_gateway_cache_backend_up") == 0.0
        assert gw.server.output(tail=100_000).count(REDIS_DOWN_LOG) == 1
    finally:
        redis_server.kill()

"""Limits hold across replicas (issue 16): two gateways served on loopback by uvicorn in this process, each with
its own pipeline, Redis pool and key directory, sharing one REAL Redis (`SLM_TEST_REDIS_URL`, default DB 15; a
key prefix per test), driven by concurrent HTTP requests. The tiers are `FakeBackend`s that take their time, so
requests overlap."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import redis
import uvicorn

from gateway.app import create_app
from gateway.build import build_gateway
from gateway.devtools.fake_backend import FakeBackend
from gateway.devtools.process import free_port
from gateway.dispatch import Tiers
from gateway.pipeline import Pipeline
from gateway.routing.static import StaticRouter
from gateway.settings import load_settings
from tests.test_limits import ADMIN, REDIS_URL, REPLY, body, estimate_tokens, mini_cost

PIN = {"x-gateway-route": "upstream"}


class Replica:
    def __init__(self, url: str, pipeline: Pipeline) -> None:
        self.url = url
        self.pipeline = pipeline

    def metric(self, name: str, **labels: str) -> float:
        return self.pipeline.metrics.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def replicas(prefix: str, delay: float, n: int = 2) -> AsyncIterator[list[Replica]]:
    """`n` gateways on loopback sharing Redis under `prefix`; their upstream answers after `delay` seconds."""
    servers, tasks, out = [], [], []
    for _ in range(n):
        settings = load_settings(environ={}, overrides={
            "admin_api_keys": ["sk-admin"], "upstream": {"url": "http://127.0.0.1:9/v1"},
            "limits": {"enabled": True, "redis_url": REDIS_URL, "key_prefix": prefix},
        })
        tiers = Tiers(local=FakeBackend("local", reply=REPLY), upstream=FakeBackend(reply=REPLY, delay=delay))
        pipeline = build_gateway(settings, tiers=tiers, router=StaticRouter())
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings, pipeline), host="127.0.0.1", port=port,
                                               log_level="warning", loop="asyncio", access_log=False))
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve()))
        out.append(Replica(f"http://127.0.0.1:{port}", pipeline))
    deadline = time.monotonic() + 30
    while not all(s.started for s in servers):
        assert time.monotonic() < deadline, "replicas did not start"
        await asyncio.sleep(0.01)
    try:
        yield out
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


def new_prefix() -> str:
    return f"slmgw:test-replicas:{uuid.uuid4().hex[:8]}"


def freeze(reps: list[Replica], at: float) -> None:
    for r in reps:
        assert r.pipeline.limits is not None
        r.pipeline.limits.clock = r.pipeline.limits.directory.clock = lambda: at


async def drain(reps: list[Replica]) -> None:
    for r in reps:
        assert r.pipeline.limits is not None
        await r.pipeline.limits.drain()


async def create_key(http: httpx.AsyncClient, rep: Replica, **fields: Any) -> tuple[str, str]:
    r = await http.post(f"{rep.url}/admin/keys", json={"team": "eng", **fields}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


async def wait_until(check: Callable[[], Any], seconds: float) -> float:
    """Poll the async `check` until it is true; the time it took (AssertionError after `seconds`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def burst(http: httpx.AsyncClient, reps: list[Replica], key: str, count: int, **extra: Any) -> list[httpx.Response]:
    """`count` requests at once, alternating between the replicas."""
    headers = {"authorization": f"Bearer {key}", **PIN}
    return await asyncio.gather(*(
        http.post(f"{reps[i % len(reps)].url}/v1/chat/completions", json=body(**extra), headers=headers)
        for i in range(count)
    ))


def in_the_middle_of_a_minute() -> float:
    return math.floor(time.time() / 60) * 60 + 90.0


async def test_fifty_concurrent_requests_over_two_replicas_never_overshoot_a_dollar_cap() -> None:
    prefix = new_prefix()
    request = body(max_tokens=6)
    held = math.ceil(mini_cost(estimate_tokens(request, 0), 6) * 1e9)  # nano-dollars one request reserves
    actual = round(mini_cost(12, 6) * 1e9)  # nano-dollars one answer costs: 12 prompt + 6 completion tokens
    cap_nano = 12 * held
    async with replicas(prefix, delay=0.05) as reps, httpx.AsyncClient(timeout=30, limits=httpx.Limits(
            max_connections=100)) as http:
        r = await http.put(f"{reps[0].url}/admin/teams/eng/limits", json={"usd_per_day": cap_nano / 1e9},
                           headers=ADMIN)
        assert r.status_code == 200
        key, _ = await create_key(http, reps[0])
        await reps[1].pipeline.limits.directory.refresh()  # type: ignore[union-attr]
        answers = await burst(http, reps, key, 50, max_tokens=6)
        await drain(reps)
        statuses = [a.status_code for a in answers]
        served = statuses.count(200)
        assert served + statuses.count(429) == 50
        assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {"budget_exceeded"}
        client = redis.Redis.from_url(REDIS_URL)
        day = time.strftime("%Y%m%d", time.gmtime())
        spent = int(client.get(f"{prefix}:s:t:eng:usd:d:{day}") or 0)
        assert spent == served * actual  # the counter is exactly what the answers cost: no drift
        assert spent <= cap_nano  # estimates cover the answers: no overshoot at all (the bound allows one estimate)
        assert 12 <= served <= cap_nano // actual  # never fewer than the reservations allow
        assert int(client.hget(f"{prefix}:s:t:eng:held", "_u") or 0) == 0  # every hold settled
        assert client.zcard(f"{prefix}:s:t:eng:inflight") == 0
        limited = sum(r.metric("slm_gateway_limited_requests_total", scope="team", reason="usd_day") for r in reps)
        assert limited == 50 - served
        assert [sum(r.metric("slm_gateway_requests_total", tier="upstream", status=s, reason="pinned")
                    for s in ("200", "429")) for r in reps] == [25, 25]


async def test_requests_tokens_and_concurrency_per_minute_hold_across_replicas() -> None:
    prefix = new_prefix()
    request = body(max_tokens=6)
    held = estimate_tokens(request, 6)
    async with replicas(prefix, delay=0.5) as reps, httpx.AsyncClient(timeout=30) as http:
        freeze(reps, in_the_middle_of_a_minute())
        rpm_key, _ = await create_key(http, reps[0], limits={"rpm": 10})
        tpm_key, _ = await create_key(http, reps[0], limits={"tpm": 3 * held})
        conc_key, _ = await create_key(http, reps[0], limits={"concurrency": 2})
        await reps[1].pipeline.limits.directory.refresh()  # type: ignore[union-attr]
        by_rpm, by_tpm, by_conc = await asyncio.gather(
            burst(http, reps, rpm_key, 30, max_tokens=6), burst(http, reps, tpm_key, 10, max_tokens=6),
            burst(http, reps, conc_key, 6, max_tokens=6),
        )
        assert sorted(a.status_code for a in by_rpm) == [200] * 10 + [429] * 20
        assert sorted(a.status_code for a in by_tpm) == [200] * 3 + [429] * 7  # 3 holds fill the minute
        assert sorted(a.status_code for a in by_conc) == [200] * 2 + [429] * 4
        remaining = sorted(a.headers["x-ratelimit-remaining-requests"] for a in by_rpm if a.status_code == 200)
        assert remaining == sorted(str(n) for n in range(10))  # each admission saw every other one
        await drain(reps)
        totals = {reason: sum(r.metric("slm_gateway_limited_requests_total", scope="key", reason=reason)
                              for r in reps) for reason in ("requests", "tokens", "concurrency")}
        assert totals == {"requests": 20, "tokens": 7, "concurrency": 4}


async def test_a_revoked_key_stops_working_on_both_replicas_within_a_second() -> None:
    prefix = new_prefix()
    async with replicas(prefix, delay=0.0) as reps, httpx.AsyncClient(timeout=30) as http:
        key, kid = await create_key(http, reps[0])
        headers = {"authorization": f"Bearer {key}", **PIN}

        def status_on(rep: Replica, want: int) -> Callable[[], Any]:
            async def check() -> bool:
                r = await http.post(f"{rep.url}/v1/chat/completions", json=body(), headers=headers)
                return r.status_code == want
            return check

        await wait_until(status_on(reps[1], 200), 1.0)  # the new key reaches the other replica too
        r = await http.post(f"{reps[0].url}/admin/keys/{kid}/revoke", headers=ADMIN)
        assert msgspec.json.decode(r.content)["revoked"] is True
        assert await status_on(reps[0], 401)()  # at once where it was revoked
        await wait_until(status_on(reps[1], 401), 1.0)

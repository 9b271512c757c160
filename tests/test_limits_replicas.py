"""Limits hold across replicas (issue 16): two gateway PROCESSES (`gateway.devtools.fake_gateway`: the gateway
`slm-gateway serve` builds, with a fake local tier so no model loads) sharing one REAL Redis (`SLM_TEST_REDIS_URL`,
default DB 15; a key prefix per module, a team per test), in front of the fake upstream (a process too), driven by
concurrent HTTP requests spread over both."""

from __future__ import annotations

import asyncio
import math
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.devtools.process import LOOPBACK, free_port, run_fake_upstream, spawn_server
from gateway.limits.scripts import FORMAT
from tests.conftest import REPO_ROOT
from tests.test_limits import ADMIN, REDIS_URL, body, estimate_tokens, mini_cost

PIN = {"x-gateway-route": "upstream"}
PIN_REASON = "pin-upstream-header"  # the policy router's reason for that header
UPSTREAM_LATENCY_MS = 300  # long enough for the requests of a burst to overlap
FAKE_PROMPT, FAKE_COMPLETION = 3, 6  # fake upstream: "Capital of France?" is 3 words; "fake answer to: ..." 6


class Replica:
    """One gateway process: its root URL."""

    def __init__(self, root: str) -> None:
        self.root = root

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the process's /metrics (0 when absent)."""
        text = httpx.get(f"{self.root}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    name = f"slmgw:test-replicas:{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{name}:*", count=1000):
        client.delete(key)


@pytest.fixture(scope="module")
def reps(prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    """Two gateway processes on one Redis prefix, in front of one fake upstream process."""
    with ExitStack() as stack:
        upstream = stack.enter_context(run_fake_upstream(latency_ms=UPSTREAM_LATENCY_MS))
        config = {
            "admin_api_keys": ["sk-admin"], "upstream": {"url": upstream}, "cache": {"enabled": False},
            "limits": {"enabled": True, "redis_url": REDIS_URL, "key_prefix": prefix, "key_refresh_seconds": 0.25},
        }
        path: Path = tmp_path_factory.mktemp("replicas") / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        out = []
        for _ in range(2):
            port = free_port()
            argv = [sys.executable, "-m", "gateway.devtools.fake_gateway", "--config", str(path), "--port", str(port)]
            stack.enter_context(spawn_server(argv, f"http://{LOOPBACK}:{port}/healthz", timeout=120, cwd=REPO_ROOT,
                                             env={"PYTHONPATH": str(REPO_ROOT)}))
            out.append(Replica(f"http://{LOOPBACK}:{port}"))
        yield out


async def create_key(http: httpx.AsyncClient, rep: Replica, team: str, **fields: Any) -> tuple[str, str]:
    r = await http.post(f"{rep.root}/admin/keys", json={"team": team, **fields}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


async def wait_until(check: Callable[[], Any], seconds: float) -> float:
    """Poll the async `check` until it is true; the time it took (AssertionError after `seconds`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def on_both(http: httpx.AsyncClient, reps: list[Replica], key: str) -> None:
    """Wait until the key (made on the first replica) works on the second too."""
    async def known() -> bool:
        r = await http.post(f"{reps[1].root}/v1/chat/completions", json=body(max_tokens=6),
                            headers={"authorization": f"Bearer {key}", **PIN})
        return r.status_code != 401
    await wait_until(known, 1.0)


async def burst(http: httpx.AsyncClient, reps: list[Replica], key: str, count: int, **extra: Any) -> list[httpx.Response]:
    """`count` requests at once, alternating between the replicas."""
    headers = {"authorization": f"Bearer {key}", **PIN}
    return await asyncio.gather(*(
        http.post(f"{reps[i % len(reps)].root}/v1/chat/completions", json=body(**extra), headers=headers)
        for i in range(count)
    ))


def settled(prefix: str, scope: str) -> Callable[[], Any]:
    """An async check: no hold is left in `scope` (every settle has been written)."""
    client = redis.Redis.from_url(REDIS_URL)

    async def check() -> bool:
        state = counters(client, prefix, scope)
        return state[HELD_NANO] == 0 and state[HOLDS] == 0 and client.hkeys(f"{prefix}:c:{scope}") == [b"s"]
    return check


HELD_NANO, HOLDS, DAY_NANO = 8, 9, 4  # in the scope's packed counters (gateway/limits/scripts.py)


def counters(client: redis.Redis, prefix: str, scope: str) -> tuple[float, ...]:
    """A scope's counters as Redis holds them (`s`, packed: `scripts.FORMAT`)."""
    packed = client.hget(f"{prefix}:c:{scope}", "s")
    return struct.unpack(FORMAT, packed) if packed else (0.0,) * 11


def not_near_a_minute_boundary() -> None:
    """Per-minute windows are the replicas' UTC minutes: start a burst with at least 10 s of the minute left."""
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.1)


async def test_fifty_concurrent_requests_over_two_replicas_never_overshoot_a_dollar_cap(
        reps: list[Replica], prefix: str) -> None:
    request = body(max_tokens=6)
    held = math.ceil(mini_cost(estimate_tokens(request, 0), 6) * 1e9)  # nano-dollars one request reserves
    actual = round(mini_cost(FAKE_PROMPT, FAKE_COMPLETION) * 1e9)  # nano-dollars one answer costs
    cap_nano = 12 * held
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as http:
        r = await http.put(f"{reps[0].root}/admin/teams/dollars/limits", json={"usd_per_day": cap_nano / 1e9},
                           headers=ADMIN)
        assert r.status_code == 200
        key, _ = await create_key(http, reps[0], "dollars")
        await on_both(http, reps, key)  # one request served: it counts
        before = [r.metric("slm_gateway_requests_total", tier="upstream", status="200", reason=PIN_REASON) for r in reps]
        answers = await burst(http, reps, key, 50, max_tokens=6)
        await wait_until(settled(prefix, "t:dollars"), 5.0)
        statuses = [a.status_code for a in answers]
        served = statuses.count(200) + 1
        assert served - 1 + statuses.count(429) == 50
        assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {"budget_exceeded"}
        client = redis.Redis.from_url(REDIS_URL)
        spent = int(counters(client, prefix, "t:dollars")[DAY_NANO])
        assert spent == served * actual  # the counter is exactly what the answers cost: no drift
        assert spent <= cap_nano  # estimates cover the answers: no overshoot at all (the bound allows one estimate)
        assert 12 <= served <= cap_nano // actual  # never fewer than the reservations allow
        limited = sum(r.metric("slm_gateway_limited_requests_total", scope="team", reason="usd_day") for r in reps)
        assert limited == 50 - (served - 1)
        after = [r.metric("slm_gateway_requests_total", tier="upstream", status=s, reason=PIN_REASON)
                 for r in reps for s in ("200", "429")]
        assert [after[0] + after[1] - before[0], after[2] + after[3] - before[1]] == [25, 25]  # both replicas served


async def test_requests_tokens_and_concurrency_per_minute_hold_across_replicas(
        reps: list[Replica], prefix: str) -> None:
    held = estimate_tokens(body(max_tokens=6), 6)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as http:
        rpm_key, _ = await create_key(http, reps[0], "rates", limits={"rpm": 10})
        tpm_key, _ = await create_key(http, reps[0], "rates", limits={"tpm": 3 * held})
        conc_key, _ = await create_key(http, reps[0], "rates", limits={"concurrency": 2})
        await asyncio.sleep(0.6)  # the second replica has loaded the keys (refresh: 0.25 s)
        not_near_a_minute_boundary()
        by_rpm, by_tpm, by_conc = await asyncio.gather(
            burst(http, reps, rpm_key, 30, max_tokens=6), burst(http, reps, tpm_key, 10, max_tokens=6),
            burst(http, reps, conc_key, 6, max_tokens=6),
        )
        assert sorted(a.status_code for a in by_rpm) == [200] * 10 + [429] * 20
        assert sorted(a.status_code for a in by_tpm) == [200] * 3 + [429] * 7  # 3 holds fill the minute
        assert sorted(a.status_code for a in by_conc) == [200] * 2 + [429] * 4
        remaining = sorted(a.headers["x-ratelimit-remaining-requests"] for a in by_rpm if a.status_code == 200)
        assert remaining == sorted(str(n) for n in range(10))  # each admission saw every other one
        assert {a.json()["error"]["code"] for a in by_rpm + by_tpm + by_conc if a.status_code == 429} == {
            "rate_limit_exceeded"}
        totals = {reason: sum(r.metric("slm_gateway_limited_requests_total", scope="key", reason=reason)
                              for r in reps) for reason in ("requests", "tokens", "concurrency")}
        assert totals == {"requests": 20, "tokens": 7, "concurrency": 4}


async def test_a_revoked_key_stops_working_on_both_replicas_within_a_second(reps: list[Replica]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        key, kid = await create_key(http, reps[0], "revoke")
        headers = {"authorization": f"Bearer {key}", **PIN}

        def status_on(rep: Replica, want: int) -> Callable[[], Any]:
            async def check() -> bool:
                r = await http.post(f"{rep.root}/v1/chat/completions", json=body(), headers=headers)
                return r.status_code == want
            return check

        await wait_until(status_on(reps[1], 200), 1.0)  # the new key reaches the other replica too
        r = await http.post(f"{reps[0].root}/admin/keys/{kid}/revoke", headers=ADMIN)
        assert msgspec.json.decode(r.content)["revoked"] is True
        assert await status_on(reps[0], 401)()  # at once where it was revoked
        await wait_until(status_on(reps[1], 401), 1.0)

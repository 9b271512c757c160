"""Gateway keys, rate limits and budgets (issue 16) in-process, on a REAL Redis (`SLM_TEST_REDIS_URL`, default
DB 15; every test uses its own key prefix) with `FakeBackend` tiers: exact headers, bodies, token counts and
dollars; the in-process store without Redis; the CLI; and no layer at all when limits are off."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis

from gateway.build import build_gateway
from gateway.cli import main as cli_main
from gateway.devtools.fake_backend import FakeBackend
from gateway.dispatch import Dispatcher, StreamAnswer, Tiers
from gateway.errors import TierUnavailable
from gateway.limits.admin import KeyAdmin, KeyRequest
from gateway.limits.memory_store import MemoryLimitStore
from gateway.limits.over_budget import BUDGET_DETAIL
from gateway.limits.records import Limits, hash_key
from gateway.openai.request import parse_chat_request
from gateway.routing.static import StaticRouter
from gateway.settings import load_settings
from tests.conftest import InProcessGateway

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CHAT = "/v1/chat/completions"
ADMIN = {"authorization": "Bearer sk-admin"}


async def settled_usage(http: Any, root: str, kid: str, usd_above: float, seconds: float = 30.0) -> dict[str, Any]:
    """A key's usage (admin API at `root`) once a settle has added dollars beyond `usd_above` (holds count in
    tokens, never in dollars: only a settle adds those)."""
    deadline = time.monotonic() + seconds
    while True:
        used = (await http.get(f"{root}/admin/keys/{kid}/usage", headers=ADMIN)).json()
        if used["usd_this_month"] > usd_above:
            return used
        assert time.monotonic() < deadline, f"not settled: {used}"
        await asyncio.sleep(0.05)
MINI_IN, MINI_OUT = 0.15, 0.6  # gpt-4o-mini, $ per million tokens (the default cost table)
REPLY = "Paris is the capital of France."  # FakeBackend: 6 completion tokens; prompt 12


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}], **extra}


def estimate_tokens(request: dict[str, Any], completion: int) -> int:
    """The limiter's documented estimate: JSON bytes / 3, plus max_tokens."""
    return len(msgspec.json.encode(request)) // 3 + completion


def mini_cost(prompt: int, completion: int) -> float:
    return (prompt * MINI_IN + completion * MINI_OUT) / 1e6


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"slmgw:test-limits:{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{name}:*", count=1000):
        client.delete(key)


def config(prefix: str | None, **limits: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"enabled": True, "key_prefix": prefix or "mem", **limits}
    if prefix is not None:
        section["redis_url"] = REDIS_URL
    return {"admin_api_keys": ["sk-admin"], "upstream": {"url": "http://127.0.0.1:9/v1"}, "limits": section}


async def start(app_factory: Any, prefix: str | None, *, upstream: FakeBackend | None = None,
                local: FakeBackend | None = None, **limits: Any) -> InProcessGateway:
    return await app_factory(
        local=local or FakeBackend("local", reply=REPLY), upstream=upstream or FakeBackend(reply=REPLY),
        config=config(prefix, **limits),
    )


async def new_key(gw: InProcessGateway, team: str = "eng", **fields: Any) -> tuple[str, str]:
    r = await gw.client.post("/admin/keys", json={"team": team, **fields}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


async def ask(gw: InProcessGateway, key: str, tier: str = "upstream", **extra: Any) -> Any:
    return await gw.client.post(
        CHAT, json=body(**extra), headers={"authorization": f"Bearer {key}", "x-gateway-route": tier}
    )


def freeze(gw: InProcessGateway, at: float) -> list[float]:
    """Make the limiter's clock read `now[0]` (the windows and resets follow it)."""
    now = [at]
    assert gw.pipeline.limits is not None
    gw.pipeline.limits.clock = gw.pipeline.limits.directory.clock = lambda: now[0]
    return now


def ratelimit_headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit-") or k == "retry-after"}


# -- limits off: nothing runs ----------------------------------------------------------------------------------
async def test_limits_off_no_layer_and_the_gateway_stays_open(app_factory: Any) -> None:
    gw = await app_factory(upstream=FakeBackend(reply=REPLY))
    assert gw.pipeline.limits is None
    assert type(gw.pipeline.cache.inner) is Dispatcher
    r = await gw.client.post(CHAT, json=body(), headers={"x-gateway-route": "upstream"})
    assert r.status_code == 200
    assert ratelimit_headers(r) == {}
    assert gw.pipeline.keys.admin_open  # no key store behind the key check either


# -- keys --------------------------------------------------------------------------------------------------------
async def test_keys_are_stored_hashed_and_unknown_keys_are_refused(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix)
    key, kid = await new_key(gw, name="ci bot")
    client = redis.Redis.from_url(REDIS_URL)
    stored = client.hgetall(f"{prefix}:keys")
    assert list(stored) == [kid.encode()]
    assert key.encode() not in stored[kid.encode()]
    assert msgspec.json.decode(stored[kid.encode()])["sha256"] == hash_key(key)
    assert kid == "key-" + hash_key(key)[:12]
    listed = (await gw.client.get("/admin/keys", headers=ADMIN)).json()["data"]
    assert [(k["id"], k["team"], k["name"], "sha256" in k, "key" in k) for k in listed] == [(kid, "eng", "ci bot", False, False)]
    ok = await ask(gw, key)
    assert (ok.status_code, ratelimit_headers(ok)) == (200, {})  # a key without caps: no headers
    bad = await ask(gw, key + "x")
    assert bad.status_code == 401
    assert bad.json() == {"error": {"message": "Incorrect API key provided.", "type": "authentication_error",
                                    "param": None, "code": "invalid_api_key"}}
    none = await gw.client.post(CHAT, json=body())
    assert none.status_code == 401 and none.json()["error"]["code"] == "missing_api_key"


async def test_admin_endpoints_need_the_admin_key(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix)
    key, _ = await new_key(gw)
    as_key = await gw.client.get("/admin/keys", headers={"authorization": f"Bearer {key}"})
    assert (as_key.status_code, as_key.json()["error"]["code"]) == (403, "admin_key_required")
    anon = await gw.client.post("/admin/keys", json={"team": "eng"})
    assert (anon.status_code, anon.json()["error"]["code"]) == (401, "missing_api_key")
    bad = await gw.client.post("/admin/keys", json={"team": "no spaces"}, headers=ADMIN)
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "team")
    unknown = await gw.client.post("/admin/keys/key-000000000000/revoke", headers=ADMIN)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "key_not_found")


async def test_a_revoked_or_expired_key_is_refused(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix)
    key, kid = await new_key(gw)
    short, _ = await new_key(gw, expires_in_seconds=60)
    assert (await ask(gw, key)).status_code == 200
    r = await gw.client.post(f"/admin/keys/{kid}/revoke", headers=ADMIN)
    assert (r.status_code, r.json()["revoked"]) == (200, True)
    assert (await ask(gw, key)).status_code == 401
    assert (await ask(gw, short)).status_code == 200
    freeze(gw, time.time() + 61)
    assert (await ask(gw, short)).status_code == 401


async def test_a_key_is_held_to_its_tiers_and_models(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix)
    key, _ = await new_key(gw, allowed_tiers=["local"], allowed_models=["gpt-4o-mini"])
    assert (await ask(gw, key, "local")).status_code == 200
    up = await ask(gw, key, "upstream")
    assert up.status_code == 403
    assert up.json()["error"] == {"message": "This key may not use the upstream tier.", "type": "permission_error",
                                  "param": "model", "code": "tier_not_allowed"}
    other = await gw.client.post(CHAT, json={**body(), "model": "gpt-4o"},
                                 headers={"authorization": f"Bearer {key}", "x-gateway-route": "local"})
    assert (other.status_code, other.json()["error"]["code"]) == (403, "model_not_allowed")


# -- rate limits ---------------------------------------------------------------------------------------------
async def test_requests_per_minute_429_in_openais_shape(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix)
    key, kid = await new_key(gw, limits={"rpm": 2})
    minute = math.floor(time.time() / 60) * 60 + 60
    freeze(gw, minute + 30.0)  # 30 s before the window resets
    first, second, third = [await ask(gw, key) for _ in range(3)]
    assert ratelimit_headers(first) == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
                                        "x-ratelimit-reset-requests": "30s"}
    assert ratelimit_headers(second)["x-ratelimit-remaining-requests"] == "0"
    assert third.status_code == 429
    assert third.json() == {"error": {
        "message": f"Rate limit reached for requests per minute (rpm) on key {kid}: Limit 2, Used 2. "
                   "Please try again in 30s.",
        "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}}
    assert ratelimit_headers(third) == {"retry-after": "30", "x-ratelimit-limit-requests": "2",
                                        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    assert gw.metric("slm_gateway_limited_requests_total", scope="key", reason="requests") == 1
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="429", reason="pinned") == 1
    freeze(gw, minute + 60.5)  # the next minute
    again = await ask(gw, key)
    assert (again.status_code, again.headers["x-ratelimit-remaining-requests"]) == (200, "1")


async def test_tokens_per_minute_reserve_the_estimate_and_settle_the_use(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix)
    request = body(max_tokens=10)
    held = estimate_tokens(request, 10)
    key, kid = await new_key(gw, limits={"tpm": held + 18})
    minute = math.floor(time.time() / 60) * 60 + 60
    freeze(gw, minute + 1.0)
    first = await ask(gw, key, max_tokens=10)
    assert ratelimit_headers(first) == {"x-ratelimit-limit-tokens": str(held + 18),
                                        "x-ratelimit-remaining-tokens": "18", "x-ratelimit-reset-tokens": "59s"}
    assert gw.pipeline.limits is not None
    await gw.pipeline.limits.drain()
    usage = (await gw.client.get(f"/admin/keys/{kid}/usage", headers=ADMIN)).json()
    assert (usage["requests_this_minute"], usage["tokens_this_minute"]) == (1, 18)  # 12 prompt + 6 completion
    second = await ask(gw, key, max_tokens=10)  # 18 settled + `held` reserved fits exactly
    await gw.pipeline.limits.drain()
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"
    third = await ask(gw, key, max_tokens=10)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert ratelimit_headers(third) == {"retry-after": "59", "x-ratelimit-limit-tokens": str(held + 18),
                                        "x-ratelimit-remaining-tokens": str(held + 18 - 36),
                                        "x-ratelimit-reset-tokens": "59s"}


# -- budgets -------------------------------------------------------------------------------------------------
async def test_a_daily_team_budget_refuses_then_resets_at_midnight_utc(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix)
    request = body(max_tokens=6)
    prompt_held = estimate_tokens(request, 0)
    reserve = mini_cost(prompt_held, 6)
    actual = mini_cost(12, 6)  # what each answer costs: 5.4e-6 $
    cap = 2 * actual + reserve + 2e-9  # room for exactly three answers (the third reserves all that is left)
    r = await gw.client.put("/admin/teams/eng/limits", json={"usd_per_day": cap}, headers=ADMIN)
    assert r.json() == {"object": "gateway.team", "team": "eng", "limits": {"usd_per_day": cap}}
    key, _ = await new_key(gw, "eng")
    midnight = math.floor(time.time() / 86400) * 86400 + 86400
    now = freeze(gw, midnight - 10.0)
    limiter = gw.pipeline.limits
    assert limiter is not None
    statuses = []
    for _ in range(4):
        statuses.append((await ask(gw, key, max_tokens=6)).status_code)
        await limiter.drain()
    assert statuses == [200, 200, 200, 429]
    refused = await ask(gw, key, max_tokens=6)
    spent = 3 * round(actual * 1e9) / 1e9
    assert refused.json()["error"] == {
        "message": f"Budget exceeded for team eng: ${cap:.6f} per day, ${spent:.6f} spent or reserved. "
                   "It resets in 10s.",
        "type": "rate_limit_error", "param": None, "code": "budget_exceeded"}
    assert refused.headers["retry-after"] == "10"
    usage = (await gw.client.get("/admin/teams/eng/usage", headers=ADMIN)).json()
    assert usage["usd_today"] == pytest.approx(spent, abs=1e-12)
    assert gw.metric("slm_gateway_team_spend_dollars_total", team="eng") == pytest.approx(3 * actual, rel=1e-9)
    assert gw.metric("slm_gateway_team_budget_remaining_dollars", team="eng", period="day") == pytest.approx(
        cap - spent, abs=1e-12)
    assert gw.metric("slm_gateway_limited_requests_total", scope="team", reason="usd_day") == 2
    now[0] = midnight + 1.0  # a new UTC day
    assert (await ask(gw, key, max_tokens=6)).status_code == 200


LOCAL_PER_MILLION = 0.05  # the local tier's price in the over-budget tests ($ per million tokens)


async def test_over_budget_upstream_requests_are_served_locally_while_the_local_cost_fits(
        prefix: str, app_factory: Any) -> None:
    cfg = config(prefix, over_budget_local=True)
    cfg["costs"] = {"local_per_million_tokens": LOCAL_PER_MILLION}
    local, upstream = FakeBackend("local", reply=REPLY), FakeBackend(reply=REPLY)
    gw = await app_factory(local=local, upstream=upstream, config=cfg)
    request = body(max_tokens=6)
    prompt_held = estimate_tokens(request, 0)
    up_reserve, up_actual = mini_cost(prompt_held, 6), mini_cost(12, 6)
    local_reserve, local_actual = (prompt_held + 6) * LOCAL_PER_MILLION / 1e6, 18 * LOCAL_PER_MILLION / 1e6
    cap = up_reserve + 2e-9  # one upstream answer; what it leaves is room for two local ones, not three
    assert up_actual + local_actual + local_reserve <= cap < up_actual + 2 * local_actual + local_reserve
    await gw.client.put("/admin/teams/eng/limits", json={"usd_per_day": cap}, headers=ADMIN)
    key, _ = await new_key(gw, "eng")
    limiter = gw.pipeline.limits
    assert limiter is not None
    answers = []
    for _ in range(4):
        answers.append(await ask(gw, key, max_tokens=6))
        await limiter.drain()
    assert [(a.status_code, a.headers.get("x-gateway-route"), a.headers.get("x-gateway-route-reason"))
            for a in answers] == [
        (200, "upstream", "pinned by header x-gateway-route: upstream"),
        (200, "local", "budget exhausted: served locally"),
        (200, "local", "budget exhausted: served locally"),
        (429, None, None),
    ]
    assert answers[1].json()["choices"][0]["message"]["content"] == REPLY
    assert answers[3].json()["error"]["code"] == "budget_exceeded"
    assert (len(upstream.calls), len(local.calls)) == (1, 2)
    usage = (await gw.client.get("/admin/teams/eng/usage", headers=ADMIN)).json()
    assert usage["usd_today"] == pytest.approx((round(up_actual * 1e9) + 2 * round(local_actual * 1e9)) / 1e9,
                                               abs=1e-12)
    assert gw.metric("slm_gateway_requests_total", tier="local", status="200", reason="budget_exhausted") == 2
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="429", reason="pinned") == 1
    assert gw.metric("slm_gateway_fallbacks_total", from_tier="upstream", to_tier="local") == 0
    assert gw.metric("slm_gateway_limited_requests_total", scope="team", reason="usd_day") == 1  # only the 429
    assert gw.metric("slm_gateway_cost_dollars_total", tier="local") == pytest.approx(2 * local_actual, rel=1e-9)


async def test_over_budget_a_request_the_local_tier_cannot_honour_gets_the_429(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix, over_budget_local=True)
    await gw.client.put("/admin/teams/eng/limits", json={"usd_per_day": 1e-9}, headers=ADMIN)
    key, _ = await new_key(gw, "eng")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    refused = await ask(gw, key, max_tokens=6, tools=tools)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "budget_exceeded")
    local_only, _ = await new_key(gw, "eng", allowed_tiers=["upstream"])  # may not be served locally
    refused = await ask(gw, local_only, max_tokens=6)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "budget_exceeded")
    served = await ask(gw, key, max_tokens=6)  # the local tier costs nothing by default: it always fits
    assert (served.status_code, served.headers["x-gateway-route-reason"]) == (200, BUDGET_DETAIL)
    assert gw.metric("slm_gateway_requests_total", tier="upstream", status="429", reason="pinned") == 2
    assert gw.metric("slm_gateway_requests_total", tier="local", status="200", reason="budget_exhausted") == 1


async def test_an_answer_served_locally_over_budget_is_not_cached_as_the_upstream_answer(
        prefix: str, app_factory: Any) -> None:
    local = FakeBackend("local", reply=REPLY)
    gw = await start(app_factory, prefix, local=local, over_budget_local=True)
    await gw.client.put("/admin/teams/eng/limits", json={"usd_per_day": 1e-9}, headers=ADMIN)
    key, _ = await new_key(gw, "eng")
    answers = [await ask(gw, key, max_tokens=6, temperature=0) for _ in range(2)]  # cacheable
    assert [(a.status_code, a.headers["x-gateway-route"], a.headers["x-gateway-cache"]) for a in answers] == [
        (200, "local", "miss"), (200, "local", "miss")]
    assert len(local.calls) == 2


async def test_an_abandoned_stream_is_settled_with_what_it_generated(prefix: str) -> None:
    settings = load_settings(environ={}, overrides=config(prefix))
    tiers = Tiers(local=FakeBackend("local", reply=REPLY), upstream=FakeBackend(reply=REPLY))
    pipeline = build_gateway(settings, tiers=tiers, router=StaticRouter())
    await pipeline.start()  # on this loop: the test drives the pipeline without HTTP, as the server would
    try:
        limiter = pipeline.limits
        assert limiter is not None
        admin = KeyAdmin(limiter.store)
        key, record = await admin.create(KeyRequest(team="eng", limits=Limits(tpm=100_000, usd_per_month=1.0)))
        await limiter.directory.refresh()
        request = body(stream=True)
        exchange = pipeline.exchange("rid", {"authorization": f"Bearer {key}", "x-gateway-route": "upstream"}, 0.0)
        exchange.accept("team-eng", parse_chat_request(msgspec.json.encode(request)))
        answer = await pipeline.chat(exchange)
        assert isinstance(answer, StreamAnswer)
        got = [await anext(answer.chunks) for _ in range(3)]  # the role chunk, then "Paris", " is"
        assert b'"content":" is"' in got[-1]
        await answer.chunks.aclose()  # what the server does when the client disconnects
        await limiter.drain()
        prompt = estimate_tokens(request, 0)
        usage = await admin.usage(kid=record.id)
        assert usage["tokens_this_minute"] == prompt + 2  # the estimated prompt and the two tokens it was sent
        assert usage["usd_this_month"] == round(mini_cost(prompt, 2) * 1e9) / 1e9
        registry = pipeline.metrics.registry
        assert registry.get_sample_value("slm_gateway_requests_total",
                                         {"tier": "upstream", "status": "499", "reason": "pinned"}) == 1
    finally:
        await pipeline.stop()


async def test_a_finished_stream_settles_its_usage_chunk(prefix: str, app_factory: Any) -> None:
    gw = await start(app_factory, prefix)
    key, kid = await new_key(gw, limits={"usd_per_month": 1.0})
    r = await ask(gw, key, stream=True)
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    usage = await settled_usage(gw.client, "", kid, 0.0)  # the stream settles once its generator is closed
    assert usage["usd_this_month"] == round(mini_cost(12, 6) * 1e9) / 1e9


async def test_a_failed_request_is_refunded(prefix: str, app_factory: Any) -> None:
    from gateway.errors import TierUnavailable

    gw = await start(app_factory, prefix, upstream=FakeBackend(error=TierUnavailable("down")))
    key, kid = await new_key(gw, limits={"usd_per_month": 1.0, "concurrency": 1})
    assert (await ask(gw, key)).status_code == 502
    assert gw.pipeline.limits is not None
    await gw.pipeline.limits.drain()
    usage = (await gw.client.get(f"/admin/keys/{kid}/usage", headers=ADMIN)).json()
    assert (usage["requests_this_minute"], usage["tokens_this_minute"], usage["usd_this_month"]) == (1, 0, 0.0)
    client = redis.Redis.from_url(REDIS_URL)
    assert client.hkeys(f"{prefix}:c:k:{kid}") == [b"s"]  # no hold left


# -- the store down ------------------------------------------------------------------------------------------
class Proxy:
    """A TCP proxy to Redis on loopback, in its own thread, that can be cut (a real network failure)."""

    def __init__(self) -> None:
        host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[socket.socket] = []
        self.cut_off = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut_off:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cut_off = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()
        for link in self.links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)
            link.close()


async def test_redis_down_fails_open_locally_and_closed_upstream(prefix: str, app_factory: Any) -> None:
    proxy = Proxy()
    port = proxy.port
    db = REDIS_URL.rsplit("/", 1)[1]
    gw = await app_factory(
        local=FakeBackend("local", reply=REPLY), upstream=FakeBackend(reply=REPLY),
        config={**config(prefix), "limits": {"enabled": True, "key_prefix": prefix,
                                             "redis_url": f"redis://127.0.0.1:{port}/{db}"}},
    )
    key, _ = await new_key(gw, limits={"rpm": 100})
    assert (await ask(gw, key, "upstream")).status_code == 200
    proxy.cut()
    local = await ask(gw, key, "local")
    assert (local.status_code, ratelimit_headers(local)) == (200, {})
    upstream = await ask(gw, key, "upstream")
    assert upstream.status_code == 429
    assert upstream.json()["error"] == {"message": "Rate limits cannot be checked right now; please retry shortly.",
                                        "type": "rate_limit_error", "param": None, "code": "limits_unavailable"}
    assert upstream.headers["retry-after"] == "1"
    assert gw.metric("slm_gateway_limits_store_errors_total", operation="reserve", action="open") == 1
    assert gw.metric("slm_gateway_limits_store_errors_total", operation="reserve", action="closed") == 1
    assert gw.metric("slm_gateway_limited_requests_total", scope="key", reason="unavailable") == 1
    assert (await ask(gw, key, "local")).status_code == 200  # the key directory keeps the keys it has


# -- without Redis, and the CLI ------------------------------------------------------------------------------
async def test_the_in_process_store_applies_the_same_caps(app_factory: Any) -> None:
    gw = await start(app_factory, None)
    assert gw.pipeline.limits is not None and isinstance(gw.pipeline.limits.store, MemoryLimitStore)
    key, _ = await new_key(gw, limits={"rpm": 1})
    assert [(await ask(gw, key)).status_code for _ in range(2)] == [200, 429]


def test_cli_creates_lists_limits_and_revokes_keys(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--redis-url", REDIS_URL, "--key-prefix", prefix]
    assert cli_main(["keys", "create", "--team", "ops", "--name", "nightly", "--rpm", "5", "--usd-per-day", "2.5",
                     *common]) == 0
    created = msgspec.json.decode(capsys.readouterr().out)
    key, kid = created["key"], created["id"]
    assert kid == "key-" + hash_key(key)[:12]
    assert created["limits"] == {"rpm": 5, "usd_per_day": 2.5}
    assert cli_main(["keys", "set-limits", "--key", kid, "--tpm", "1000", *common]) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["limits"] == {"rpm": 5, "tpm": 1000, "usd_per_day": 2.5}
    assert cli_main(["keys", "set-limits", "--team", "ops", "--usd-per-month", "40", *common]) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["limits"] == {"usd_per_month": 40.0}
    assert cli_main(["keys", "revoke", kid, *common]) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["revoked"] is True
    assert cli_main(["keys", "list", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["id                team  name     revoked  limits",
                     f"{kid}  ops   nightly  yes      rpm=5 tpm=1000 usd_per_day=2.5"]
    assert cli_main(["keys", "revoke", "key-000000000000", *common]) == 2
    assert "No key with id 'key-000000000000'." in capsys.readouterr().err


def test_the_estimate_covers_the_dearer_of_the_tier_and_its_fallback() -> None:
    from gateway.costs import CostModel
    from gateway.exchange import Exchange
    from gateway.limits.build import build_limits
    from gateway.metrics import GatewayMetrics
    from gateway.routing.decision import RouteDecision

    settings = load_settings(environ={}, overrides={"limits": {"enabled": True}})
    limiter = build_limits(settings, CostModel(settings.costs, "gpt-4o-mini"), GatewayMetrics().limits)
    assert limiter is not None
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Prove it."}], "max_tokens": 100, "n": 2}
    prompt = len(msgspec.json.encode(request)) // 3

    def estimate(tier: str, fallback: str | None) -> tuple[int, int, int]:
        ex = Exchange("rid", {}, 0.0)
        ex.accept("t", parse_chat_request(msgspec.json.encode(request)))
        ex.routed(RouteDecision(tier=tier, reason="r", detail="", fallback=fallback), "local" if tier == "local" else "gpt-4o")  # type: ignore[arg-type]
        return limiter.estimate(ex)

    upstream_nano = math.ceil((prompt * 2.5 + 200 * 10.0) / 1e6 * 1e9)  # gpt-4o, 2 choices of 100 tokens
    assert estimate("upstream", None) == (prompt, prompt + 200, upstream_nano)
    assert estimate("local", None) == (prompt, prompt + 200, 0)  # the local tier costs nothing by default
    assert estimate("local", "upstream") == (prompt, prompt + 200, upstream_nano)  # it may spill upstream


# -- the rate headers on every answer: cache hits and errors after admission -----------------------------------
async def test_a_cache_hit_carries_the_keys_rate_headers_and_uses_nothing(prefix: str, app_factory: Any) -> None:
    gw = await app_factory(local=FakeBackend("local", reply=REPLY), upstream=FakeBackend(reply=REPLY),
                           config={**config(prefix), "cache": {"enabled": True}})
    key, kid = await new_key(gw, limits={"rpm": 3, "tpm": 1000})
    minute = math.floor(time.time() / 60) * 60 + 60
    freeze(gw, minute + 30.0)
    request = body(max_tokens=10, temperature=0)
    held = estimate_tokens(request, 10)
    first = await ask(gw, key, max_tokens=10, temperature=0)
    assert (first.status_code, first.headers["x-gateway-cache"]) == (200, "miss")
    assert ratelimit_headers(first) == {
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": str(1000 - held),
        "x-ratelimit-reset-tokens": "30s",
    }
    assert gw.pipeline.limits is not None
    await gw.pipeline.limits.drain()
    hits = [await ask(gw, key, max_tokens=10, temperature=0) for _ in range(2)]
    for hit in hits:  # the counters as they are: one request, its 18 tokens (12 prompt + 6 completion) settled
        assert (hit.status_code, hit.headers["x-gateway-cache"]) == (200, "hit")
        assert ratelimit_headers(hit) == {
            "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
            "x-ratelimit-reset-requests": "30s", "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "982", "x-ratelimit-reset-tokens": "30s",
        }
    usage = (await gw.client.get(f"/admin/keys/{kid}/usage", headers=ADMIN)).json()
    assert (usage["requests_this_minute"], usage["tokens_this_minute"]) == (1, 18)  # the hits used nothing
    uncapped, _ = await new_key(gw)  # the same team (the same cache tenant), no caps: no headers
    plain = await ask(gw, uncapped, max_tokens=10, temperature=0)
    assert (plain.headers["x-gateway-cache"], ratelimit_headers(plain)) == ("hit", {})


async def test_an_error_after_admission_carries_the_keys_rate_headers(prefix: str, app_factory: Any) -> None:
    down = TierUnavailable("The upstream could not be reached.", code="upstream_unreachable")
    gw = await start(app_factory, prefix, upstream=FakeBackend(error=down), local=FakeBackend("local", error=down))
    key, _ = await new_key(gw, limits={"rpm": 2})
    minute = math.floor(time.time() / 60) * 60 + 60
    freeze(gw, minute + 45.0)
    failed = await ask(gw, key)
    assert (failed.status_code, failed.json()["error"]["code"]) == (502, "upstream_unreachable")
    assert ratelimit_headers(failed) == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
                                         "x-ratelimit-reset-requests": "15s"}
    assert gw.pipeline.limits is not None
    await gw.pipeline.limits.drain()
    again = await ask(gw, key)  # the failed request counted in the minute, as the headers said
    assert (again.status_code, ratelimit_headers(again)["x-ratelimit-remaining-requests"]) == (502, "0")

"""Team caps and calendar periods (issue 16), in-process on a REAL Redis (`SLM_TEST_REDIS_URL`) with `FakeBackend`
tiers and the limiter's clock frozen: a team's cap counts every key of the team (and no other team's, and never
a key from the config); a monthly budget refuses, then resets on the first of the month (UTC); the team's budget
gauges (the 80% alert's input) show a new day or month as unspent once it begins, without waiting for a request."""

from __future__ import annotations

import calendar
import time
from typing import Any

import pytest

from tests.test_limits import ADMIN, CHAT, body, estimate_tokens, mini_cost, new_key, prefix, ratelimit_headers  # noqa: F401
from gateway.devtools.fake_backend import FakeBackend
from tests.test_limits import REPLY, config, freeze, start


async def test_a_team_cap_counts_every_key_of_the_team_and_no_config_key(prefix: str, app_factory: Any) -> None:  # noqa: F811
    settings = config(prefix)
    settings["api_keys"] = ["sk-config"]  # a key from the config: served, never limited nor counted
    gw = await app_factory(local=FakeBackend("local", reply=REPLY), upstream=FakeBackend(reply=REPLY), config=settings)
    minute = int(time.time() // 60) * 60 + 60.0
    freeze(gw, minute - 20.0)
    assert (await gw.client.put("/admin/teams/eng/limits", json={"rpm": 3}, headers=ADMIN)).status_code == 200
    first, _ = await new_key(gw, "eng")
    second, _ = await new_key(gw, "eng")
    other, _ = await new_key(gw, "ops")

    async def ask(key: str) -> Any:
        return await gw.client.post(CHAT, json=body(), headers={"authorization": f"Bearer {key}",
                                                                 "x-gateway-route": "upstream"})

    answers = [await ask(k) for k in (first, second, first, "sk-config")]
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert [a.headers.get("x-ratelimit-remaining-requests") for a in answers] == ["2", "1", "0", None]
    refused = await ask(second)
    assert refused.status_code == 429
    assert refused.json()["error"] == {
        "message": "Rate limit reached for requests per minute (rpm) on team eng: Limit 3, Used 3. "
                   "Please try again in 20s.",
        "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}
    assert ratelimit_headers(refused) == {"retry-after": "20", "x-ratelimit-limit-requests": "3",
                                          "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"}
    assert (await ask(other)).status_code == 200  # another team
    assert (await ask("sk-config")).status_code == 200
    usage = (await gw.client.get("/admin/teams/eng/usage", headers=ADMIN)).json()
    assert usage["requests_this_minute"] == 3
    assert gw.metric("slm_gateway_limited_requests_total", scope="team", reason="requests") == 1


def month_start(now: float) -> float:
    """The first instant (UTC) of the month after the one of `now`."""
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


async def test_a_monthly_team_budget_refuses_then_resets_on_the_first_utc(prefix: str, app_factory: Any) -> None:  # noqa: F811
    gw = await start(app_factory, prefix)
    request = body(max_tokens=6)
    reserve = mini_cost(estimate_tokens(request, 0), 6)
    actual = mini_cost(12, 6)  # what each answer costs
    cap = actual + reserve + 2e-9  # room for exactly two answers (the second reserves all that is left)
    await gw.client.put("/admin/teams/eng/limits", json={"usd_per_month": cap}, headers=ADMIN)
    key, _ = await new_key(gw, "eng")
    first_of_next = month_start(time.time())
    now = freeze(gw, first_of_next - 5.0)
    limiter = gw.pipeline.limits
    assert limiter is not None
    headers = {"authorization": f"Bearer {key}", "x-gateway-route": "upstream"}
    statuses = []
    for _ in range(3):
        statuses.append((await gw.client.post(CHAT, json=request, headers=headers)).status_code)
        await limiter.drain()
    assert statuses == [200, 200, 429]
    refused = await gw.client.post(CHAT, json=request, headers=headers)
    spent = 2 * round(actual * 1e9) / 1e9
    assert refused.json()["error"]["message"] == (
        f"Budget exceeded for team eng: ${cap:.6f} per month, ${spent:.6f} spent or reserved. It resets in 5s.")
    assert refused.headers["retry-after"] == "5"
    assert gw.metric("slm_gateway_team_budget_used_ratio", team="eng", period="month") == spent / cap
    assert gw.metric("slm_gateway_team_budget_remaining_dollars", team="eng", period="month") == cap - spent

    now[0] = first_of_next + 1.0  # a new UTC month: no request yet, the gauges show it unspent
    limiter.roll_budgets(now[0])
    assert gw.metric("slm_gateway_team_budget_used_ratio", team="eng", period="month") == 0.0
    assert gw.metric("slm_gateway_team_budget_remaining_dollars", team="eng", period="month") == cap
    assert (await gw.client.post(CHAT, json=request, headers=headers)).status_code == 200
    await limiter.drain()
    usage = (await gw.client.get("/admin/teams/eng/usage", headers=ADMIN)).json()
    assert usage["usd_this_month"] == round(actual * 1e9) / 1e9
    assert gw.metric("slm_gateway_team_budget_used_ratio", team="eng", period="month") == (
        round(actual * 1e9) / 1e9 / cap)


async def test_a_key_with_a_dollar_cap_of_its_own_has_budget_gauges_that_roll_with_the_month(
        prefix: str, app_factory: Any) -> None:  # noqa: F811
    """Only keys with a $ cap of their own get series (bounded label cardinality): key id, team, period."""
    gw = await start(app_factory, prefix)
    day_cap, month_cap = 0.0005, 0.001
    capped, capped_id = await new_key(gw, "eng", limits={"usd_per_day": day_cap, "usd_per_month": month_cap})
    plain, plain_id = await new_key(gw, "eng", limits={"rpm": 100})  # caps, but no $ cap: no key series
    first_of_next = month_start(time.time())
    now = freeze(gw, first_of_next - 5.0)
    limiter = gw.pipeline.limits
    assert limiter is not None
    headers = {"x-gateway-route": "upstream"}
    for key in (capped, capped, plain):
        r = await gw.client.post(CHAT, json=body(max_tokens=6), headers={**headers, "authorization": f"Bearer {key}"})
        assert r.status_code == 200
        await limiter.drain()
    spent = 2 * round(mini_cost(12, 6) * 1e9) / 1e9  # settled in nano-dollars
    usage = (await gw.client.get(f"/admin/keys/{capped_id}/usage", headers=ADMIN)).json()
    assert usage["usd_this_month"] == spent
    key = {"key": capped_id, "team": "eng"}
    assert gw.metric("slm_gateway_key_budget_remaining_dollars", **key, period="month") == month_cap - spent
    assert gw.metric("slm_gateway_key_budget_used_ratio", **key, period="month") == spent / month_cap
    assert gw.metric("slm_gateway_key_budget_remaining_dollars", **key, period="day") == day_cap - spent
    assert gw.metric("slm_gateway_key_budget_used_ratio", **key, period="day") == spent / day_cap
    assert gw.metric("slm_gateway_key_spend_dollars_total", **key) == pytest.approx(2 * mini_cost(12, 6), rel=1e-9)
    registry = gw.pipeline.metrics.registry
    assert [s for m in registry.collect() for s in m.samples if s.labels.get("key") == plain_id] == []
    assert {(s.name, s.labels["period"]) for m in registry.collect() for s in m.samples
            if s.labels.get("key") == capped_id and "period" in s.labels} == {
        (f"slm_gateway_key_budget_{g}", p) for g in ("remaining_dollars", "used_ratio") for p in ("day", "month")}

    now[0] = first_of_next + 1.0  # a new UTC day and month: no request yet, the gauges show them unspent
    limiter.roll_budgets(now[0])
    for period, cap in (("day", day_cap), ("month", month_cap)):
        assert gw.metric("slm_gateway_key_budget_used_ratio", **key, period=period) == 0.0
        assert gw.metric("slm_gateway_key_budget_remaining_dollars", **key, period=period) == cap

"""Shadow judging's spend is the gateway's own (issue 16): a request of a stored key that is shadowed and judged
charges its key and team exactly what the request itself cost; the shadow answer and the judge call are counted in
`slm_gateway_learning_spend_dollars_total{kind}` only (capped by `learning.max_judge_dollars_per_day`), never in a
key's or team's counters. In-process on a REAL Redis (`SLM_TEST_REDIS_URL`), `FakeBackend` tiers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.devtools.fake_backend import FakeBackend
from tests.test_limits import ADMIN, CHAT, REPLY, body, config, new_key, prefix  # noqa: F401

VERDICT = '{"local_ok": true, "upstream_ok": false}'  # 4 completion tokens (FakeBackend: one per word)


async def wait_for(check: Any, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_shadow_and_judge_spend_is_the_gateways_not_the_keys_or_teams(
        prefix: str, app_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    settings = config(prefix)
    settings["costs"] = {"local_per_million_tokens": 1.0}  # the key's own request costs something too
    settings["learning"] = {"shadow_rate": 1.0, "judge_model": "gpt-4o", "labels_path": str(tmp_path / "labels.jsonl")}
    gw = await app_factory(local=FakeBackend("local", reply=REPLY), upstream=FakeBackend(reply=VERDICT),
                           config=settings)
    await gw.client.put("/admin/teams/eng/limits", json={"usd_per_month": 1.0}, headers=ADMIN)
    key, kid = await new_key(gw, "eng", limits={"usd_per_day": 1.0})
    # served locally (12 prompt + 6 completion tokens at $1 per million); shadowed upstream (gpt-4o-mini, 12 + 4
    # tokens) and judged by gpt-4o (12 + 4 tokens)
    r = await gw.client.post(CHAT, json=body(), headers={"authorization": f"Bearer {key}", "x-gateway-route": "local"})
    assert r.status_code == 200
    await wait_for(lambda: gw.metric("slm_gateway_learning_labels_total", source="judge") == 1, "the judge's label")
    assert gw.pipeline.limits is not None
    await gw.pipeline.limits.drain()

    request_nano = 18 * 1_000  # 18 tokens at $1 per million
    key_usage = (await gw.client.get(f"/admin/keys/{kid}/usage", headers=ADMIN)).json()
    team_usage = (await gw.client.get("/admin/teams/eng/usage", headers=ADMIN)).json()
    assert (key_usage["usd_today"], key_usage["usd_this_month"]) == (request_nano / 1e9, request_nano / 1e9)
    assert team_usage["usd_this_month"] == request_nano / 1e9
    assert gw.metric("slm_gateway_team_spend_dollars_total", team="eng") == pytest.approx(18 / 1e6, rel=1e-12)
    assert gw.metric("slm_gateway_key_spend_dollars_total", key=kid, team="eng") == pytest.approx(18 / 1e6, rel=1e-12)
    assert gw.metric("slm_gateway_learning_spend_dollars_total", kind="shadow") == pytest.approx(
        (12 * 0.15 + 4 * 0.6) / 1e6, rel=1e-12)
    assert gw.metric("slm_gateway_learning_spend_dollars_total", kind="judge") == pytest.approx(
        (12 * 2.5 + 4 * 10) / 1e6, rel=1e-12)

"""Reloading policy and classifier: in-process holder, SIGHUP to a running `slm-gateway serve`, POST /admin/reload."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.metrics import GatewayMetrics
from gateway.routing.reloadable import ReloadableRouter, RouterSource
from tests.conftest import RunningGateway, run_gateway
from tests.test_policy_rules import ctx

KEY = "sk-gw-tenant"
ADMIN = "sk-gw-admin"
V1 = "defaults: {action: upstream}\nrules:\n  - name: alpha-local\n    action: local\n    when: {model: alpha}\n"
V2 = "defaults: {action: upstream}\nrules:\n  - name: alpha-upstream\n    action: upstream\n    when: {model: alpha}\n"
BROKEN = "rules:\n  - name: alpha\n    action: teleport\n"


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    text = httpx.get(f"{gw.root}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") or line.startswith(f"{name} "):
            series, _, value = line.rpartition(" ")
            got = series[len(name):].strip("{}")
            if ",".join(sorted(got.split(","))) == want or (not want and not got):
                return float(value)
    return 0.0


# -- in-process -------------------------------------------------------------------------------------------------
async def test_reload_swaps_valid_policies_and_keeps_the_old_on_errors(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(V1)
    metrics = GatewayMetrics()
    holder = ReloadableRouter(RouterSource(policy_path=str(policy)), metrics)
    before = holder.current
    assert holder.decide(ctx(model="alpha")).reason == "alpha-local"

    policy.write_text(V2)
    results = await holder.reload()
    assert [(r.component, r.result) for r in results] == [("policy", "success")]
    assert holder.current is not before and holder.decide(ctx(model="alpha")).reason == "alpha-upstream"
    assert before.decide(ctx(model="alpha")).reason == "alpha-local"  # a request holding the old router is unaffected

    policy.write_text(BROKEN)
    results = await holder.reload()
    assert [(r.component, r.result) for r in results] == [("policy", "failure")]
    assert "rules[0] 'alpha'" in results[0].detail
    assert holder.decide(ctx(model="alpha")).reason == "alpha-upstream"
    get = metrics.registry.get_sample_value
    assert get("slm_gateway_reloads_total", {"component": "policy", "result": "success"}) == 1
    assert get("slm_gateway_reloads_total", {"component": "policy", "result": "failure"}) == 1


async def test_reload_of_a_broken_classifier_keeps_the_old_one(tmp_path: Path, tiny_router_model: Path) -> None:
    model = tmp_path / "router.skops"
    model.write_bytes(tiny_router_model.read_bytes())
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: auto\n    action: auto\n    threshold: 0.5\n")
    metrics = GatewayMetrics()
    holder = ReloadableRouter(RouterSource(policy_path=str(policy), classifier_path=str(model)), metrics)
    scorer = holder.current.scorer
    model.write_bytes(b"not a model")
    results = {r.component: r for r in await holder.reload()}
    assert results["policy"].result == "success" and results["classifier"].result == "failure"
    # the answer names the file without its directory (the log keeps the full path)
    assert results["classifier"].detail == "cannot read router model router.skops: BadZipFile: File is not a zip file"
    assert results["policy"].detail == "policy.yaml"
    assert holder.current.scorer is scorer
    assert holder.decide(ctx("Prove that 7 is irrational.")).tier == "upstream"


async def test_the_model_in_use_is_shown_by_version_and_apgr_across_reloads(
    tmp_path: Path, tiny_router_model: Path
) -> None:
    """`classifier promote` writes `version` and `apgr` into the installed metrics.json; every reload (SIGHUP or
    /admin/reload, learning on or off) shows the model in use as slm_gateway_router_model_apgr{version}."""
    import json

    model = tmp_path / "router.skops"
    model.write_bytes(tiny_router_model.read_bytes())
    meta = json.loads(tiny_router_model.with_name("metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps(meta))
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: auto\n    action: auto\n    threshold: 0.5\n")
    metrics = GatewayMetrics()
    holder = ReloadableRouter(RouterSource(policy_path=str(policy), classifier_path=str(model)), metrics)
    get = metrics.registry.get_sample_value
    assert get("slm_gateway_router_model_apgr", {"version": "router.skops"}) != get(  # NaN: no APGR known yet
        "slm_gateway_router_model_apgr", {"version": "router.skops"})
    (tmp_path / "metrics.json").write_text(json.dumps(dict(meta, version="router-0123456789ab", apgr=0.8125)))
    assert [r.result for r in await holder.reload()] == ["success", "success"]
    assert get("slm_gateway_router_model_apgr", {"version": "router-0123456789ab"}) == 0.8125
    assert get("slm_gateway_router_model_apgr", {"version": "router.skops"}) is None  # one series: the model in use


async def test_concurrent_decisions_during_reloads_never_fail(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(V1)
    holder = ReloadableRouter(RouterSource(policy_path=str(policy)))
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[BaseException] = []

    def hammer() -> None:
        while not stop.is_set():
            try:
                seen.add(holder.decide(ctx(model="alpha")).reason)
            except BaseException as exc:  # noqa: BLE001 - any failure is the bug
                errors.append(exc)

    worker = threading.Thread(target=hammer)
    worker.start()
    for i in range(20):
        policy.write_text(V2 if i % 2 == 0 else V1)
        await holder.reload()
    stop.set()
    worker.join()
    assert not errors and seen == {"alpha-local", "alpha-upstream"}


# -- a running gateway --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reload_gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    policy = tmp_path_factory.mktemp("reload") / "policy.yaml"
    policy.write_text(V1)
    args = ("--upstream-url", fake_upstream, "--policy", str(policy), "--api-key", KEY, "--admin-api-key", ADMIN)
    with run_gateway(*args) as gw:
        yield gw, policy


def route_of(gw: RunningGateway, model: str = "alpha") -> tuple[str, str]:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    r = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-route"], r.headers["x-gateway-route-reason"]


def wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_sighup_applies_a_valid_policy_without_dropping_in_flight_requests(
    reload_gateway: tuple[RunningGateway, Path],
) -> None:
    gw, policy = reload_gateway
    assert route_of(gw) == ("local", "rule 'alpha-local'")

    async def in_flight() -> httpx.Response:
        body = {"model": "alpha", "messages": [{"role": "user", "content": "Count from 1 to 30."}],
                "max_tokens": 40, "temperature": 0}
        async with httpx.AsyncClient(timeout=120) as http:
            task = asyncio.create_task(http.post(
                f"{gw.base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}))
            await asyncio.sleep(0.3)
            policy.write_text(V2)
            os.kill(gw.server.pid, signal.SIGHUP)
            return await task

    response = asyncio.run(in_flight())
    assert response.status_code == 200 and response.headers["x-gateway-route"] == "local"
    assert response.json()["choices"][0]["message"]["content"]
    wait_for(lambda: metric(gw, "slm_gateway_reloads_total", component="policy", result="success") >= 1)
    assert route_of(gw) == ("upstream", "rule 'alpha-upstream'")
    assert gw.server.proc.poll() is None


def test_sighup_with_an_invalid_policy_keeps_the_old_one_and_counts_a_failure(
    reload_gateway: tuple[RunningGateway, Path],
) -> None:
    gw, policy = reload_gateway
    policy.write_text(V2)
    failures = metric(gw, "slm_gateway_reloads_total", component="policy", result="failure")
    policy.write_text(BROKEN)
    os.kill(gw.server.pid, signal.SIGHUP)
    wait_for(lambda: metric(gw, "slm_gateway_reloads_total", component="policy", result="failure") == failures + 1)
    assert route_of(gw) == ("upstream", "rule 'alpha-upstream'")
    assert gw.server.proc.poll() is None
    assert "reload of policy failed" in gw.server.output(tail=200_000)  # access log lines follow it


def test_admin_reload_needs_the_admin_key_and_reports_each_component_without_paths(
    reload_gateway: tuple[RunningGateway, Path],
) -> None:
    gw, policy = reload_gateway
    url = f"{gw.root}/admin/reload"
    denied = httpx.post(url, timeout=30)
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    tenant = httpx.post(url, headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert (tenant.status_code, tenant.json()["error"]["type"], tenant.json()["error"]["code"]) == (
        403, "permission_error", "admin_key_required")
    wrong = httpx.post(url, headers={"authorization": "Bearer sk-nobody"}, timeout=30)
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
    auth = {"authorization": f"Bearer {ADMIN}"}
    policy.write_text(BROKEN)
    failed = httpx.post(url, headers=auth, timeout=30)
    assert failed.status_code == 422
    assert failed.json()["status"] == "failed"
    assert failed.json()["components"] == [{
        "component": "policy", "result": "failure",
        "detail": "policy policy.yaml: rules[0] 'alpha': tier 'teleport' is not configured (slm_tiers; this gateway "
                  "has: local, upstream)",
    }]
    policy.write_bytes(b"rules:\n  - name: caf\xe9\n    action: local\n")  # Latin-1, not UTF-8
    latin1 = httpx.post(url, headers=auth, timeout=30)
    assert latin1.status_code == 422
    assert latin1.json()["components"] == [{
        "component": "policy", "result": "failure",
        "detail": "policy policy.yaml: not UTF-8 text (invalid byte at offset 20)",
    }]
    policy.write_text(V1)
    ok = httpx.post(url, headers=auth, timeout=30)
    assert ok.status_code == 200 and ok.json()["status"] == "reloaded"
    assert ok.json()["components"] == [{"component": "policy", "result": "success", "detail": "policy.yaml"}]
    assert str(policy.parent) not in failed.text + latin1.text + ok.text
    assert route_of(gw) == ("local", "rule 'alpha-local'")


def test_sighup_with_a_non_utf8_policy_keeps_the_old_one_without_a_traceback(
    reload_gateway: tuple[RunningGateway, Path],
) -> None:
    gw, policy = reload_gateway
    policy.write_text(V1)
    failures = metric(gw, "slm_gateway_reloads_total", component="policy", result="failure")
    policy.write_bytes(b"\xff\xfe" + V2.encode("utf-16-le"))
    os.kill(gw.server.pid, signal.SIGHUP)
    wait_for(lambda: metric(gw, "slm_gateway_reloads_total", component="policy", result="failure") == failures + 1)
    assert route_of(gw) in {("local", "rule 'alpha-local'"), ("upstream", "rule 'alpha-upstream'")}
    output = gw.server.output(tail=200_000)
    assert "not UTF-8 text (invalid byte at offset 0)" in output
    assert "Traceback" not in output and "never retrieved" not in output
    assert gw.server.proc.poll() is None
    policy.write_text(V1)


def test_serve_with_a_non_utf8_policy_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    policy = tmp_path / "latin1.yaml"
    policy.write_bytes(b"name: caf\xe9\n")
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--policy", str(policy), "--port", "1"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"slm-gateway: error: policy {policy}: not UTF-8 text (invalid byte at offset 9)"
    assert "Traceback" not in done.stderr


def test_admin_endpoints_are_open_only_when_the_gateway_has_no_keys_at_all(
    gateway: RunningGateway, gateway_factory,  # type: ignore[no-untyped-def]
) -> None:
    open_reload = httpx.post(f"{gateway.root}/admin/reload", timeout=60)
    assert open_reload.status_code == 200
    assert open_reload.json()["components"][0] == {"component": "policy", "result": "success", "detail": "default.yaml"}
    assert "/" not in open_reload.text
    keyed = gateway_factory("--api-key", KEY)
    refused = httpx.post(f"{keyed.root}/admin/reload", headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert (refused.status_code, refused.json()["error"]["type"], refused.json()["error"]["code"]) == (
        403, "permission_error", "admin_disabled")
    assert refused.json()["error"]["message"] == (
        "Admin endpoints are disabled: this gateway has no admin key (admin_api_keys).")

"""The Grafana dashboards' queries work against a real Prometheus scraping a gateway's /metrics.

A real Prometheus (`/usr/bin/prometheus`, Debian's `prometheus` package) is started on a free loopback port with
a 1 s scrape interval and a temporary TSDB. It scrapes the target given by the `metrics_target` fixture. Then every
target `expr` of every panel of `charts/slm-gateway/dashboards/*.json` (Grafana variables substituted:
`$__rate_interval` -> 1m, `$__range` -> 5m, `$datasource`, `$instance` -> its "All" value) is run through
`/api/v1/query`; the test fails on any query error or empty result, and on any `slm_gateway_*` metric name that the
scraped target does not expose (a typo hidden behind `or vector(0)` would otherwise pass).

The target is chosen by `METRICS_TARGET` below: `standin` is prometheus_client exposing every metric of
`gateway.metrics.GatewayMetrics` with changing sample values; `gateway` is a real `slm-gateway serve` with the fake
upstream, having served local, upstream, cached, streamed, failed, spilled and reloaded requests.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = REPO_ROOT / "charts" / "slm-gateway" / "dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))

# Which /metrics endpoint Prometheus scrapes: "standin" (GatewayMetrics with sample values, no model needed) or
# "gateway" (a real `slm-gateway serve` that has served traffic on every tier).
# >>> Switch to the real gateway here (one line): METRICS_TARGET = "gateway"
METRICS_TARGET = os.environ.get("SLM_GATEWAY_DASHBOARD_TARGET", "gateway")

GRAFANA_VALUES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "__range_s": "300",
    "datasource": "prometheus",
}
QUERY_DEADLINE_S = 45.0
PROMETHEUS_START_TIMEOUT_S = 30.0


@dataclass
class ScrapeTarget:
    """A /metrics endpoint (host:port) and `drive`, which makes it serve traffic once Prometheus scrapes it."""

    address: str
    drive: Callable[[], None]


# ----------------------------------------------------------------------------------------------------------------
# Dashboards: panels, queries, variable substitution
# ----------------------------------------------------------------------------------------------------------------


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query target of every panel."""
    out = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets") or []:
            if target.get("hide"):
                continue
            out.append((panel.get("title", "?"), target.get("refId", "?"), target["expr"]))
    return out


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Grafana's built-in interval variables plus each dashboard variable at its "All" value (regex .*)."""
    values = dict(GRAFANA_VALUES)
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] == "datasource":
            values[var["name"]] = "prometheus"
        elif var.get("includeAll"):
            values[var["name"]] = var.get("allValue") or ".*"
        else:
            current = var.get("current", {}).get("value")
            values[var["name"]] = current if isinstance(current, str) else ".*"
    return values


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace $name, ${name}, ${name:format} and [[name]] by their values; unknown variables fail loudly."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(repl, expr)


def metric_names(expr: str) -> set[str]:
    """The slm_gateway_* metric families an expression reads (histogram suffixes removed)."""
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\bslm_gateway_[a-z0-9_]+", expr)}


def all_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, substituted expr) for every query of every dashboard."""
    out = []
    for path in DASHBOARDS:
        dash = load_dashboard(path)
        values = variable_values(dash)
        for title, ref, expr in panel_queries(dash):
            out.append((path.name, title, ref, substitute(expr, values)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Static checks (no Prometheus needed)
# ----------------------------------------------------------------------------------------------------------------


def test_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} >= {"overview.json", "routing.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dash = load_dashboard(path)
    assert dash["uid"] and len(dash["uid"]) <= 40
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in iter_panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queries = panel_queries(dash)
    assert len(queries) >= 8
    for panel in iter_panels(dash["panels"]):
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"panel {panel['title']!r} has no description"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    for title, _, expr in queries:
        # Windows come from Grafana ($__rate_interval / $__range), never hard-coded.
        assert not re.search(r"\[\d+[smhdw]\]", expr), f"{title}: fixed range window in {expr}"
        if "rate(" in expr:
            assert "$__rate_interval" in expr, f"{title}: rate() without $__rate_interval: {expr}"


def test_substitution() -> None:
    values = {**GRAFANA_VALUES, "instance": ".*"}
    assert substitute('rate(x{instance=~"$instance"}[$__rate_interval])', values) == 'rate(x{instance=~".*"}[1m])'
    assert substitute("increase(x[${__range}]) [[instance]] ${instance:regex}", values) == "increase(x[5m]) .* .*"
    with pytest.raises(KeyError):
        substitute("x{a=\"$nope\"}", values)


def test_every_metric_in_dashboards_is_defined() -> None:
    """Every slm_gateway_* name a panel reads is a metric of GatewayMetrics (or of SemanticMetrics, registered on
    the same registry when the semantic cache is on)."""
    from gateway.cache.semantic.metrics import SemanticMetrics
    from gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    SemanticMetrics(metrics.registry)
    defined = {m.name for m in metrics.registry.collect()}
    defined |= {n + "_total" for n in defined}  # prometheus_client strips _total from counter family names
    used = set().union(*(metric_names(expr) for *_, expr in all_queries()))
    assert used, "no metric found in the dashboards"
    assert used <= defined, f"unknown metrics in dashboards: {sorted(used - defined)}"


# ----------------------------------------------------------------------------------------------------------------
# Prometheus
# ----------------------------------------------------------------------------------------------------------------


def prometheus_binary() -> str | None:
    candidate = os.environ.get("PROMETHEUS")
    if candidate and Path(candidate).is_file():
        return candidate
    return shutil.which("prometheus") or (str(p) if (p := Path("/usr/bin/prometheus")).is_file() else None)


def free_port() -> int:
    from gateway.devtools.process import free_port as _free_port

    return _free_port()


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log
        self.client = httpx.Client(base_url=url, timeout=10.0, trust_env=False)

    def query(self, expr: str) -> dict[str, Any]:
        resp = self.client.get("/api/v1/query", params={"query": expr})
        try:
            body = resp.json()
        except ValueError:
            return {"status": "error", "error": f"HTTP {resp.status_code}: {resp.text[:200]}"}
        if resp.status_code != 200 and body.get("status") != "error":
            body = {"status": "error", "error": f"HTTP {resp.status_code}"}
        return body

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def prometheus(metrics_target: ScrapeTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus scraping `metrics_target` every second, after the target has served its traffic.

    Traffic is sent while Prometheus scrapes, so that rate() and increase() see it change.
    """
    binary = prometheus_binary()
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package 'prometheus' provides /usr/bin/prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: slm-gateway\n"
        "    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{metrics_target.address}']\n"
    )
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + PROMETHEUS_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{prom.output()}")
            try:
                if prom.client.get("/-/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready after {PROMETHEUS_START_TIMEOUT_S}s:\n{prom.output()}")
            time.sleep(0.2)
        # Wait for a few successful scrapes so that rate() has at least two samples.
        while True:
            result = prom.query('count_over_time(up{job="slm-gateway"}[1m]) >= 3 and up{job="slm-gateway"} == 1')
            if result.get("status") == "success" and result["data"]["result"]:
                break
            if time.monotonic() > deadline:
                targets = prom.client.get("/api/v1/targets").json()["data"]["activeTargets"]
                scrape_errors = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
                pytest.fail(f"prometheus never scraped {metrics_target.address} successfully: {scrape_errors}\n{prom.output()}")
            time.sleep(0.3)
        metrics_target.drive()
        time.sleep(3.0)  # scrapes after the last request
        yield prom
    finally:
        prom.client.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------


def _exercise_semantic(semantic: Any, rng: random.Random) -> None:
    """One round on the semantic cache's series (`SemanticMetrics`, registered when `cache.semantic` is on)."""
    semantic.hit(rng.uniform(0.62, 1.0))
    semantic.miss(rng.choice(("empty", "threshold", "guard")))
    semantic.guard_refused(rng.choice(("numbers", "polarity", "qualifier")))
    semantic.embedded(rng.uniform(0.00002, 0.0005))


def _exercise_standin(metrics: Any, rng: random.Random) -> None:
    """One round of plausible observations on every metric and label value the dashboards read."""
    for tier in ("local", "upstream", "cache"):
        for status, reason in (("200", "classifier"), ("200", "pinned"), ("429", "default"), ("502", "default")):
            metrics.requests.labels(tier, status, reason).inc(rng.randint(1, 5))
        for stream in ("true", "false"):
            metrics.request_duration.labels(tier, stream).observe(rng.uniform(0.001, 3.0))
        metrics.time_to_first_token.labels(tier).observe(rng.uniform(0.001, 0.5))
        metrics.overhead.labels(tier).observe(rng.uniform(0.0001, 0.004))
        model = {"local": "local", "upstream": "gpt-4o-mini", "cache": "gpt-4o-mini"}[tier]
        metrics.prompt_tokens.labels(tier, model).inc(rng.randint(10, 200))
        metrics.completion_tokens.labels(tier, model).inc(rng.randint(10, 200))
        metrics.cost.labels(tier).inc(rng.uniform(0, 1e-4) if tier == "upstream" else 0.0)
        if tier != "upstream":
            metrics.savings.labels(tier).inc(rng.uniform(0, 1e-4))
        metrics.routing_decisions.labels(tier, rng.choice(("classifier", "pinned", "long_prompt"))).inc()
    metrics.semantic_savings.inc(rng.uniform(0, 1e-5))
    metrics.local_queue_depth.set(rng.randint(0, 4))
    metrics.local_inflight.set(rng.randint(0, 1))
    for tier in ("local", "coder"):
        metrics.tier_queue_depth.labels(tier).set(rng.randint(0, 4))
        metrics.tier_inflight.labels(tier).set(rng.randint(0, 1))
    for tier, kind in (("local", "queue_full"), ("upstream", "status_5xx"), ("edge", "connect")):
        metrics.tier_errors.labels(tier, kind).inc(rng.randint(0, 1))
    for reason in ("queue_full", "context_too_long"):
        metrics.local_rejected.labels(reason).inc()
    for kind in ("connect", "timeout", "status_4xx", "status_5xx", "protocol"):
        metrics.upstream_errors.labels(kind).inc(rng.randint(0, 1))
    metrics.fallbacks.labels("local", "upstream").inc()
    metrics.fallbacks.labels("upstream", "local").inc()
    for result in ("hit", "miss", "bypass"):
        metrics.cache_lookups.labels(result).inc(rng.randint(1, 5))
    for operation in ("get", "set", "connect", "decode"):
        metrics.cache_errors.labels(operation).inc(rng.randint(0, 1))
    metrics.classifier_score.observe(rng.random())
    metrics.classifier_duration.observe(rng.uniform(0.0001, 0.002))
    for component in ("policy", "classifier"):
        metrics.reloads.labels(component, rng.choice(("success", "failure"))).inc()
    learning = metrics.learning
    learning.labels.labels(rng.choice(("judge", "feedback"))).inc()
    learning.verdicts.labels(rng.choice(("ok", "bad")), rng.choice(("ok", "bad"))).inc()
    learning.spend.labels(rng.choice(("judge", "shadow"))).inc(rng.uniform(0, 1e-4))
    learning.dropped.labels("queue_full").inc(rng.randint(0, 1))
    learning.skipped.labels("private").inc(rng.randint(0, 1))
    learning.judge_errors.labels("malformed").inc(rng.randint(0, 1))
    learning.retrains.labels(rng.choice(("installed", "skipped"))).inc()
    learning.set_model("router-v1.skops", 0.61)
    limits = metrics.limits
    limits.limited.labels(rng.choice(("key", "team")), rng.choice(("requests", "tokens", "usd_day"))).inc()
    limits.team_spend.labels("eng").inc(rng.uniform(0, 1e-4))
    limits.budget_remaining.labels("eng", "month").set(rng.uniform(0, 100))
    limits.budget_used.labels("eng", "month").set(rng.random())
    limits.key_spend.labels("key-0123456789ab", "eng").inc(rng.uniform(0, 1e-4))
    limits.key_budget_remaining.labels("key-0123456789ab", "eng", "month").set(rng.uniform(0, 10))
    limits.key_budget_used.labels("key-0123456789ab", "eng", "month").set(rng.random())
    limits.check_seconds.observe(rng.uniform(0.0001, 0.002))


@pytest.fixture(scope="module")
def standin_metrics_target() -> Iterator[ScrapeTarget]:
    """prometheus_client serving gateway.metrics.GatewayMetrics on loopback, values changing every 0.2 s."""
    from prometheus_client import start_http_server

    from gateway.metrics import GatewayMetrics

    from gateway.cache.semantic.metrics import SemanticMetrics

    metrics = GatewayMetrics()
    semantic = SemanticMetrics(metrics.registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    stop = threading.Event()
    rng = random.Random(1234)

    def feed() -> None:
        while not stop.wait(0.2):
            _exercise_standin(metrics, rng)
            _exercise_semantic(semantic, rng)

    _exercise_standin(metrics, rng)
    _exercise_semantic(semantic, rng)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield ScrapeTarget(f"127.0.0.1:{port}", drive=lambda: time.sleep(2.0))
    finally:
        stop.set()
        feeder.join(timeout=5)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _chat(client: httpx.Client, base_url: str, model: str, content: str, *, stream: bool = False,
          headers: dict[str, str] | None = None) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8,
            "temperature": 0, "stream": stream}
    if stream:
        with client.stream("POST", f"{base_url}/chat/completions", json=body, headers=headers) as resp:
            for _ in resp.iter_bytes():
                pass
            return resp.status_code
    return client.post(f"{base_url}/chat/completions", json=body, headers=headers).status_code


DASHBOARD_ADMIN_KEY = "sk-dashboard-admin"
SPILL_RULE = """rules:
  - name: spill-local
    description: tagged requests go local and may spill upstream (a pinned request never spills)
    when: {tag: spill}
    action: local
    fallback: to_upstream
  - name: edge-tier
    description: tagged requests go to the edge tier (nobody listens there) and fall back upstream
    when: {tag: edge}
    action: edge
    fallback_tiers: [upstream]
"""
EXPECTED_TIER_ERRORS = {("upstream", "status_4xx"), ("local", "context_too_long"), ("edge", "connect")}
"""The (tier, kind) of every tier failure the real-gateway traffic makes."""


@pytest.fixture(scope="module")
def gateway_metrics_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapeTarget]:
    """A real `slm-gateway serve` (bundled local model, fake upstream, response cache on, limits on: the traffic
    carries a stored key with a monthly budget of its own, of a team with day and month budgets); `drive` sends
    traffic.

    Traffic, each request sent twice so that the repeat is a cache hit: local (plain and streamed) and upstream
    (plain and streamed) requests, where the fake upstream answers 400 to 40% of requests (seeded: upstream
    status_4xx errors, responses with status >= 400); a prompt and its paraphrase asking for the semantic cache
    (semantic lookups, embeddings); then Redis is stopped and one more request is sent (cache
    errors); a prompt longer than the local context (a context_too_long rejection, spilled upstream: a fallback);
    a request to the `edge` tier, a remote SLM server nobody listens for (a connect error, answered upstream);
    then a SIGHUP (reloads). `learning.auto_retrain` runs every second and skips (too few new labels): the
    retrain counter moves. Local generations are kept few and short.
    """
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed (Debian package 'redis-server'); the real-gateway target needs it")
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import run_gateway  # the suite's own `slm-gateway serve` launcher

    from gateway.devtools.process import run_fake_upstream

    tmp = tmp_path_factory.mktemp("gateway")
    redis_port = free_port()
    redis = subprocess.Popen(
        [redis_server, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", redis_port), timeout=0.5).close()
            break
        except OSError:
            if redis.poll() is not None or time.monotonic() > deadline:
                redis.kill()
                pytest.fail(f"redis-server did not start on 127.0.0.1:{redis_port}")
            time.sleep(0.1)
    policy = tmp / "policy.yaml"  # the shipped default policy, plus a rule whose local requests may spill
    policy.write_text((REPO_ROOT / "policies" / "default.yaml").read_text().replace("rules:\n", SPILL_RULE, 1))
    config = {"local": {"context_size": 512}, "policy": str(policy),
              # the semantic cache built (its series exist); requests opt in with `x-gateway-cache: semantic`
              "cache": {"enabled": True, "semantic": {"enabled": True, "deadline_seconds": 2.0}},
              # learning on (feedback; its metrics start at zero). Not shadow judging: its upstream calls would
              # take draws from the fake upstream's seeded error injection, in an order that depends on timing.
              "learning": {"feedback": True, "labels_path": str(tmp / "labels.jsonl"),
                           # a run every second, each skipped (far fewer new labels than asked): never a fit
                           "auto_retrain": {"interval_seconds": 1, "min_new_labels": 1_000_000,
                                            "work_dir": str(tmp / "retrain")}},
              "slm_tiers": {"edge": {"url": f"http://127.0.0.1:{free_port()}/v1", "connect_timeout": 2}},
              # limits on (keys in Redis): the traffic carries a stored key whose team has budgets; fail-open, so
              # that the requests sent once Redis is stopped are still answered (spilled, failed upstream)
              "admin_api_keys": [DASHBOARD_ADMIN_KEY], "limits": {"enabled": True, "fail_open_upstream": True}}
    with run_fake_upstream(error_rate=0.4, error_status=400, seed=7) as upstream_url, run_gateway(
        "--upstream-url", upstream_url, "--upstream-api-key", "sk-test",
        "--redis-url", f"redis://127.0.0.1:{redis_port}/0", config=config, tmp_dir=tmp,
    ) as gw, httpx.Client(timeout=180.0, trust_env=False) as client:
        admin = {"authorization": f"Bearer {DASHBOARD_ADMIN_KEY}"}
        client.put(f"{gw.root}/admin/teams/dash/limits", json={"usd_per_day": 100.0, "usd_per_month": 1000.0},
                   headers=admin).raise_for_status()
        created = client.post(f"{gw.root}/admin/keys", json={"team": "dash", "limits": {"rpm": 10_000, "usd_per_month": 50.0}},
                              headers=admin)  # a $ cap of its own: the key's budget gauges
        client.headers["authorization"] = f"Bearer {created.raise_for_status().json()['key']}"

        def drive() -> None:
            statuses = []
            for _ in range(2):  # the second round repeats the first: cache hits
                statuses.append(_chat(client, gw.base_url, "local", "Write hello world in Python"))
                statuses.append(_chat(client, gw.base_url, "local", "Say hello", stream=True))
                for i in range(4):
                    statuses.append(_chat(client, gw.base_url, "gpt-4o-mini", f"Write a Python function number {i}"))
                statuses.append(_chat(client, gw.base_url, "gpt-4o-mini", "Say hello", stream=True))
            semantic = {"x-gateway-cache": "semantic"}  # a lookup each ("empty", then a hit when the first was a 200)
            statuses.append(_chat(client, gw.base_url, "gpt-4o-mini", "What is the capital city of France?",
                                  headers=semantic))
            statuses.append(_chat(client, gw.base_url, "gpt-4o-mini", "what's the capital of France?", headers=semantic))
            redis.terminate()  # the cache backend goes away: cache errors, the request is still answered
            redis.wait(timeout=10)
            statuses.append(_chat(client, gw.base_url, "gpt-4o-mini", "Write a Python function number 0"))
            # longer than the local context: spilled upstream (tagged, not pinned: a pin never spills)
            statuses.append(_chat(client, gw.base_url, "gpt-4o-mini", "word " * 1200, headers={"x-gateway-tag": "spill"}))
            statuses.append(_chat(client, gw.base_url, "gpt-4o-mini", "Say hi", headers={"x-gateway-tag": "edge"}))
            os.kill(gw.server.pid, signal.SIGHUP)
            assert 200 in statuses and any(s >= 400 for s in statuses), statuses

        try:
            yield ScrapeTarget(f"127.0.0.1:{gw.port}", drive)
        finally:
            if redis.poll() is None:
                redis.kill()
                redis.wait(timeout=10)


@pytest.fixture(scope="module")
def metrics_target(request: pytest.FixtureRequest) -> ScrapeTarget:
    """The /metrics endpoint under test (see METRICS_TARGET)."""
    name = {"standin": "standin_metrics_target", "gateway": "gateway_metrics_target"}[METRICS_TARGET]
    return request.getfixturevalue(name)


# ----------------------------------------------------------------------------------------------------------------
# The proof: every panel query returns data
# ----------------------------------------------------------------------------------------------------------------


def test_prometheus_scrapes_target(prometheus: Prometheus) -> None:
    result = prometheus.query('up{job="slm-gateway"}')
    assert result["status"] == "success"
    assert [s["value"][1] for s in result["data"]["result"]] == ["1"]


def test_dashboard_variables_resolve(prometheus: Prometheus) -> None:
    """The label_values() queries of the dashboard variables find values."""
    for path in DASHBOARDS:
        for var in load_dashboard(path)["templating"]["list"]:
            if var["type"] != "query":
                continue
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
            assert match, f"{path.name}: variable {var['name']} query {query!r} is not label_values(metric, label)"
            resp = prometheus.client.get("/api/v1/series", params={"match[]": match.group(1)}).json()
            values = {s.get(match.group(2)) for s in resp["data"]} - {None}
            assert values, f"{path.name}: variable {var['name']} ({query}) has no values"


def test_every_panel_metric_is_exposed(prometheus: Prometheus) -> None:
    """Each slm_gateway_* family a panel reads is exposed by the scraped target (its HELP/TYPE at least)."""
    resp = prometheus.client.get("/api/v1/metadata").json()
    assert resp["status"] == "success"
    exposed = set(resp["data"])
    used = set().union(*(metric_names(expr) for *_, expr in all_queries()))
    # prometheus_client exposes counters as NAME_total with metadata under NAME_total or NAME.
    missing = {n for n in used if n not in exposed and n.removesuffix("_total") not in exposed}
    assert not missing, f"metrics read by panels but not exposed by the target: {sorted(missing)}"


def test_every_panel_query_returns_data(prometheus: Prometheus) -> None:
    queries = all_queries()
    pending = {(f, t, r): e for f, t, r, e in queries}
    errors: dict[tuple[str, str, str], str] = {}
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while pending:
        for key, expr in list(pending.items()):
            result = prometheus.query(expr)
            if result.get("status") != "success":
                errors[key] = f"error: {result.get('error')} ({result.get('errorType')}) in {expr}"
                del pending[key]
            elif result["data"]["result"]:
                del pending[key]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1.0)  # a new scrape may bring the first non-zero increase
    for key, expr in pending.items():
        errors[key] = f"empty result for {expr}"
    report = "\n".join(f"{f} / {t} / {r}: {msg}" for (f, t, r), msg in sorted(errors.items()))
    assert not errors, f"{len(errors)} of {len(queries)} panel queries failed:\n{report}"


def _series(prometheus: Prometheus, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    result = prometheus.query(expr)
    assert result["status"] == "success", result
    return {tuple(s["metric"].get(n, "") for n in labels): float(s["value"][1]) for s in result["data"]["result"]}


def _panel_expr(title: str, ref: str = "A") -> str:
    (expr,) = [e for _, t, r, e in all_queries() if (t, r) == (title, ref)]
    return expr


@pytest.mark.skipif(METRICS_TARGET != "gateway", reason="the traffic's own series: real-gateway target only")
def test_tier_and_retrain_panels_show_the_traffic(prometheus: Prometheus) -> None:
    """The per-tier and retrain panels read the series the traffic made: every tier failure (tier, kind) of the
    traffic and no other, the local tier's queue gauges idle after it, the skipped retrain runs and no other result."""
    errors = _series(prometheus, "sum by (tier, kind) (slm_gateway_tier_errors_total)", "tier", "kind")
    assert set(errors) == EXPECTED_TIER_ERRORS, errors
    assert errors[("edge", "connect")] == 1.0
    assert errors[("local", "context_too_long")] == 1.0
    assert set(_series(prometheus, _panel_expr("Tier errors by tier and kind"), "tier", "kind")) == EXPECTED_TIER_ERRORS
    for ref in ("A", "B"):  # queued, in flight: the local tier (the only in-process one), idle once traffic is done
        assert _series(prometheus, _panel_expr("Queue depth and in-flight by tier", ref), "tier") == {("local",): 0.0}
    retrains = _series(prometheus, _panel_expr("Router retrains in range"), "result")
    assert set(retrains) == {("installed",), ("refused",), ("undecided",), ("skipped",), ("failed",)}
    assert retrains[("skipped",)] > 0
    assert [retrains[(r,)] for r in ("installed", "refused", "undecided", "failed")] == [0.0] * 4

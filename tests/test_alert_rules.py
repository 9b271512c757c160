"""The Prometheus alert rules (charts/slm-gateway/rules/alerts.yaml) are valid and behave as their unit tests say.

`promtool check rules` validates the rule file; `promtool test rules` runs alerts_test.yaml, which feeds synthetic
series and checks which alerts fire, with which labels and annotations, and which stay silent.
Needs promtool (Debian package `prometheus`: /usr/bin/promtool).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES_DIR = Path(__file__).resolve().parents[1] / "charts" / "slm-gateway" / "rules"
ALERTS = RULES_DIR / "alerts.yaml"
ALERTS_TEST = RULES_DIR / "alerts_test.yaml"


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").is_file() else None
    )
    if found is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus' provides /usr/bin/promtool)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=RULES_DIR)


def test_promtool_check_rules() -> None:
    result = run("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = run("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_and_metadata() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules}
    assert {"SlmGatewayDown", "SlmGatewayHigh5xxRate", "SlmGatewayUpstreamErrorRate", "SlmGatewayLocalQueueSaturated",
            "SlmGatewayHighP99Latency", "SlmGatewayCacheErrors", "SlmGatewayJudgedLocalAcceptanceLow",
            "SlmGatewayTierErrorRate"} <= alerts
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case.get("exp_alerts")}
    assert alerts == tested, f"alerts without a firing unit test: {sorted(alerts - tested)}"


def test_rule_metrics_exist() -> None:
    """Every slm_gateway_* metric an alert reads is defined by gateway.metrics.GatewayMetrics."""
    from gateway.metrics import GatewayMetrics

    defined = {m.name for m in GatewayMetrics().registry.collect()}
    defined |= {n + "_total" for n in defined}
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\bslm_gateway_[a-z0-9_]+", ALERTS.read_text())}
    assert used and used <= defined, f"unknown metrics in alerts: {sorted(used - defined)}"


def test_broken_rule_file_is_rejected(tmp_path: Path) -> None:
    """The check is real: promtool refuses a rule with a bad expression."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Bad\n        expr: sum(rate(x[5m])\n")
    result = subprocess.run([promtool(), "check", "rules", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0

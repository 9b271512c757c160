"""Policy files: every shipped policy validates; bad files fail with one line naming the file and the rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.routing.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy
from gateway.routing.policy_router import PolicyRouter

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO_ROOT / "policies").glob("*.yaml"))


class QuantileScorer:
    """Stand-in classifier: fixed score, uniform training quantiles."""

    metadata = {"score_quantiles": [i / 10 for i in range(11)]}

    def score_messages(self, messages: list[dict]) -> float:
        return 0.5


def test_the_shipped_policies_are_there() -> None:
    names = {p.name for p in SHIPPED}
    assert {"default.yaml", "privacy-first.yaml", "cost-saver.yaml", "quality-first.yaml"} <= names
    assert DEFAULT_POLICY_PATH in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_policy_validates_and_builds(path: Path) -> None:
    spec = load_policy(path)
    assert spec.rules, "a shipped policy has rules"
    router = PolicyRouter(spec, QuantileScorer())
    assert router.thresholds(), "auto rules get a threshold"
    for threshold, _source in router.thresholds().values():
        assert 0.0 <= threshold <= 1.0


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_auto_threshold_splits_the_shipped_models_traffic(path: Path) -> None:
    """With the shipped classifier, each auto threshold keeps 5%..95% of training-like traffic local:
    a threshold outside the model's score range would silently send everything one way."""
    from classifier.model import load_model

    model = load_model()
    quantiles = model.metadata["score_quantiles"]
    router = PolicyRouter(load_policy(path), model)
    for name, (threshold, _source) in router.thresholds().items():
        assert quantiles["p5"] < threshold < quantiles["p95"], (name, threshold)


def bad(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "bad.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("policy bad.yaml")
    return message


def test_unknown_condition_names_file_rule_index_and_name() -> None:
    message = bad("rules:\n  - name: ok\n    action: local\n    when: {model: x}\n"
                  "  - name: typo\n    action: local\n    when: {modle: x}\n")
    assert "rules[1] 'typo'" in message and "modle" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  - name: a\n    action: No-Where\n", "rules[0] 'a': action must be local, upstream, auto, reject or the name of an SLM tier, got 'No-Where'"),
        ("rules:\n  - name: a\n    action: coder\n    fallback: both\n    fallback_tiers: [local]\n", "rules[0] 'a': give fallback or fallback_tiers, not both"),
        ("rules:\n  - name: a\n    action: coder\n    fallback_tiers: [local, coder]\n", "fallback_tiers: each tier once, and not the rule's own action"),
        ("rules:\n  - name: a\n    action: coder\n    when: {pii: email}\n    fallback_tiers: [upstream]\n", "a rule that keeps personal data local cannot fall back upstream"),
        ("rules:\n  - name: a\n    action: local\n    slm_tier: coder\n", "slm_tier only applies to action 'auto'"),
        ("rules:\n  - name: a\n    action: local\n    colour: red\n", "colour"),
        ("rules:\n  - action: local\n", "name"),
        ("rulez: []\n", "rulez"),
        ("version: 2\nrules: []\n", "version"),
        ("rules:\n  - name: a\n    action: auto\n    threshold: 1.5\n", "threshold must be within [0, 1]"),
        ("rules:\n  - name: a\n    action: auto\n    threshold: 0.4\n    target_local_share: 0.5\n", "not both"),
        ("rules:\n  - name: a\n    action: local\n    threshold: 0.4\n", "only apply to action 'auto'"),
        ("rules:\n  - name: a\n    action: local\n    message: hi\n", "only apply to action 'reject'"),
        ("rules:\n  - name: a\n    action: local\n    when: {pii: [email, passport]}\n", "unknown pii kind 'passport'"),
        ("rules:\n  - name: a\n    action: local\n    when: {pii: email}\n    fallback: both\n", "cannot fall back upstream"),
        ("rules:\n  - name: a\n    action: local\n  - name: b\n    action: upstream\n", "rules[1] 'b': unreachable"),
        ("rules:\n  - name: a\n    action: local\n    when: {model: x}\n  - name: a\n    action: local\n", "duplicate"),
        ("rules:\n  - name: classifier\n    action: local\n", "reserved"),
        ("rules:\n  - name: has space\n    action: local\n", "name must be"),
        ("rules:\n  - name: a\n    action: local\n    when: {prompt_tokens: {gt: 10, lt: 5}}\n", "empty range"),
        ("rules:\n  - name: a\n    action: local\n    when: {prompt_tokens: {}}\n", "at least one of"),
        ("rules:\n  - name: a\n    action: local\n    when: {headers: {X-Upper: a}}\n", "lower-case"),
        ("rules:\n  - name: a\n    action: local\n    when: {score: {gt: 2}}\n", "within [0, 1]"),
        ("rules:\n  - name: a\n    action: reject\n    status: 500\n", "rules[0] 'a'"),
        ("defaults: {target_local_share: 1.0}\nrules: []\n", "target_local_share"),
        ("rules: [\n", "not valid YAML"),
        ("- just a list\n", "mapping"),
    ],
)
def test_invalid_policies_fail_with_one_clear_line(text: str, expected: str) -> None:
    assert expected in bad(text)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found: .*nope.yaml"):
        load_policy(tmp_path / "nope.yaml")


def test_serve_with_a_bad_policy_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text("rules:\n  - name: tools\n    action: upstream\n    when: {has_tool: true}\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--policy", str(policy), "--port", "1"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(policy) in lines[0] and "rules[0] 'tools'" in lines[0] and "has_tool" in lines[0]


def test_serve_with_a_missing_classifier_model_exits_2_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "router.skops"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--classifier-model", str(missing), "--port", "1"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("slm-gateway: error: classifier_model:") and str(missing) in last

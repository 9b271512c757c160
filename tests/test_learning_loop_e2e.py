"""The whole learning loop through running processes: a gateway (bundled local model, a small real router model,
a policy that sends unfamiliar prompts upstream) learns from shadow judging, `slm-gateway classifier train` and
`promote` install a model taught by those labels, the gateway reloads it, and the next requests route by it.

The fake upstream answers as the upstream LLM and as the judge (scripted: the local model fails on "Python
function" prompts, both tiers answer synonym prompts well); real Redis holds the label stream.

Before: the router was trained on two prompt templates only ("Prove that N is irrational.", "Say hello N
times."), so both kinds of traffic are unfamiliar (familiarity 0) and go upstream by the `unfamiliar-upstream`
rule. After learning from 50 judged requests the new prompts of both kinds are familiar, and the classifier sends
coding prompts upstream and synonym prompts local. Every header is checked against the same model files loaded
here: familiarity, p_strong and the calibrated threshold, to the printed digit.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from classifier import load_model
from classifier.fit import RouterConfig
from classifier.model import metrics_path_for
from classifier.train import train
from gateway.devtools.process import run_fake_upstream
from gateway.routing.calibration import calibrate
from gateway.routing.policy_router import _fmt
from tests.conftest import REPO_ROOT, RunningGateway, run_gateway
from tests.test_learning_e2e import metric, wait_for

pytest.importorskip("llama_cpp")

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
KEY, ADMIN_KEY = "sk-loop-tenant", "sk-loop-admin"
CODE_WORDS = ["sum", "mean", "median", "maximum", "minimum", "product", "length", "range", "mode", "variance",
              "average", "total", "count", "first", "last", "second", "third", "smallest", "largest", "middle",
              "reverse", "square", "cube", "double", "half", "norm", "spread", "tail"]
SYNONYM_WORDS = ["happy", "sad", "fast", "slow", "big", "small", "bright", "dark", "cold", "hot", "old", "new",
                 "rich", "poor", "brave", "calm", "angry", "quiet", "loud", "strong", "weak", "clean", "dirty",
                 "soft", "hard", "early", "late", "easy"]
N_LEARN = 25  # of each kind: 50 judged requests; the 3 words left of each kind are the next requests
SCRIPT = {"verdicts": [{"contains": "Python function", "local_ok": False, "upstream_ok": True}],
          "default": {"local_ok": True, "upstream_ok": True}}
POLICY = """\
version: 1
name: learning-loop
defaults: {action: auto, fallback: none, target_local_share: 0.5}
rules:
  - {name: unfamiliar-upstream, when: {familiarity: {lt: 0.05}}, action: upstream}
  - {name: auto, action: auto}
"""
SHARE = 0.5


def coding(word: str) -> str:
    return f"Write a Python function that returns the {word} of a list of numbers."


def synonym(word: str) -> str:
    return f"Give me a synonym for the word {word}."


def base_rows() -> list[dict[str, Any]]:
    """What the first router is trained on: two templates, the first hard for the local model."""
    rows = []
    for n in range(120):
        rows.append({"prompt": f"Prove that {n} is irrational.", "weak_correct": n % 5 == 0, "strong_correct": True,
                     "benchmark": "synthetic"})
        rows.append({"prompt": f"Say hello {n} times.", "weak_correct": n % 7 != 0, "strong_correct": True,
                     "benchmark": "synthetic"})
    return rows


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SLM_GATEWAY_CLASSIFIER_MODEL", None)
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=env, timeout=timeout)


def expected_reason(model: Any, prompt: str) -> tuple[str, str]:
    """(tier, x-gateway-route-reason) the policy gives `prompt` under `model`, computed here."""
    familiarity = model.familiarity(prompt)
    tail = f"; familiarity {_fmt(familiarity)} (training-prompt percentile)"
    if familiarity < 0.05:
        return "upstream", "rule 'unfamiliar-upstream'" + tail
    score = model.score_messages([{"role": "user", "content": prompt}])
    threshold, _ = calibrate(model, SHARE)
    if score >= threshold:
        return "upstream", f"classifier p_strong={_fmt(score)} >= threshold {_fmt(threshold)} (rule 'auto')" + tail
    return "local", f"classifier p_strong={_fmt(score)} < threshold {_fmt(threshold)} (rule 'auto')" + tail


def test_shadow_labels_train_promote_and_reload_change_the_routes(redis_db: redis.Redis, tmp_path: Path) -> None:
    base = tmp_path / "base.jsonl"
    base.write_text("".join(json.dumps(r) + "\n" for r in base_rows()), encoding="utf-8")
    target = tmp_path / "installed" / "router.skops"
    train(base, target, RouterConfig(word_features=2**12, word_problem_weight=0.0))
    first = load_model(target)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    learn = [p for pair in zip(map(coding, CODE_WORDS[:N_LEARN]), map(synonym, SYNONYM_WORDS[:N_LEARN]))
             for p in pair]
    later = [p for pair in zip(map(coding, CODE_WORDS[N_LEARN:]), map(synonym, SYNONYM_WORDS[N_LEARN:])) for p in pair]

    with run_fake_upstream(judge_script=str(script), record_max=5000) as upstream:
        config = {
            "policy": str(policy), "classifier_model": str(target),
            "upstream": {"url": upstream, "default_model": "gpt-4o-mini"},
            "cache": {"redis_url": REDIS_URL},
            "learning": {"shadow_rate": 1.0, "judge_model": "gpt-4o", "shadow_max_tokens": 4, "workers": 1,
                         "max_judge_dollars_per_day": 100.0},
        }
        with run_gateway("--api-key", KEY, "--admin-api-key", ADMIN_KEY, config=config, tmp_dir=tmp_path) as gw:

            def ask(prompt: str, i: int) -> httpx.Response:
                body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4,
                        "temperature": 0}
                resp = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=120,
                                  headers={"authorization": f"Bearer {KEY}", "x-request-id": f"loop-{i}"})
                assert resp.status_code == 200, resp.text
                return resp

            def labels() -> float:
                return metric(gw, "slm_gateway_learning_labels_total", source="judge")

            # 1. Unfamiliar traffic goes upstream; each request is shadowed locally and judged (one at a time, so
            #    the local tier is idle for every shadow answer).
            for i, prompt in enumerate(learn):
                assert expected_reason(first, prompt) == (
                    "upstream", "rule 'unfamiliar-upstream'; familiarity 0 (training-prompt percentile)")
                resp = ask(prompt, i)
                assert (resp.headers["x-gateway-route"], resp.headers["x-gateway-route-reason"]) == \
                    expected_reason(first, prompt)
                wait_for(lambda: labels() == i + 1, f"label {i + 1}")
            assert metric(gw, "slm_gateway_learning_shadow_dropped_total", reason="local_busy") == 0
            assert metric(gw, "slm_gateway_learning_verdicts_total", local="bad", upstream="ok") == N_LEARN
            assert metric(gw, "slm_gateway_learning_verdicts_total", local="ok", upstream="ok") == N_LEARN

            # 2. The label stream, exported: one row per request, in order, as the judge scripted it.
            exported = tmp_path / "labels.jsonl"
            done = cli("labels", "export", "--redis-url", REDIS_URL, "--out", str(exported))
            assert done.returncode == 0, done.stderr
            rows = [json.loads(line) for line in exported.read_text().splitlines()]
            assert [(r["prompt"], r["weak_correct"], r["strong_correct"], r["served_tier"], r["request_id"])
                    for r in rows] == [(p, "Python" not in p, True, "upstream", f"loop-{i}") for i, p in enumerate(learn)]

            # 3. Train on the first data + the labels (the 10 most recent held out), then promote and reload.
            cand = tmp_path / "cand" / "router.skops"
            done = cli("classifier", "train", "--data", str(base), "--data", str(exported), "--out", str(cand),
                       "--word-problem-weight", "0")
            assert done.returncode == 0, done.stderr
            cut = sorted(r["ts"] for r in rows)[40]
            assert done.stdout.splitlines() == [
                f"wrote {cand} (+ metrics.json beside it): 280 training rows",
                "traffic label rows weigh 3 each (0 one-sided rows train one side only)",  # 0.5 * 240 / 40
                f"held out for `classifier promote`: 10 most recent rows (ts >= {cut:.0f})",
            ]
            done = cli("classifier", "promote", "--labels", str(exported), "--candidate", str(cand), "--target",
                       str(target), "--min-rows", "10", "--gateway-url", gw.root, "--admin-key", ADMIN_KEY)
            assert done.returncode == 0, done.stdout + done.stderr
            out = done.stdout.splitlines()
            assert out[2] == f"held-out labels: 10 rows labelled on both sides (candidate's hold-out cut, ts >= {cut:.0f})"
            assert out[-1] == f"POST {gw.root}/admin/reload: HTTP 200 reloaded (this process)"
            assert target.read_bytes() == cand.read_bytes()
            installed = json.loads(metrics_path_for(target).read_text())
            version = "router-" + hashlib.sha256(cand.read_bytes()).hexdigest()[:12]
            assert installed["version"] == version
            assert installed["promotion"]["data"] == [
                {"path_name": "base.jsonl", "rows": 240, "traffic_rows": 0},
                {"path_name": "labels.jsonl", "rows": 50, "traffic_rows": 50},
            ]
            # the dashboard's "Router model in use" panel: the promoted version and its held-out APGR
            assert metric(gw, "slm_gateway_router_model_apgr", version=version) == installed["apgr"]

            # 4. The next requests route by the new model: both kinds are familiar now, coding goes upstream and
            #    synonyms stay local; the headers carry the new model's figures.
            taught = load_model(target)
            for i, prompt in enumerate(later, start=len(learn)):
                tier, reason = expected_reason(taught, prompt)
                assert tier == ("upstream" if "Python" in prompt else "local")
                assert taught.familiarity(prompt) >= 0.05
                resp = ask(prompt, i)
                assert (resp.headers["x-gateway-route"], resp.headers["x-gateway-route-reason"]) == (tier, reason)

"""`learning.auto_retrain` through a running gateway: on its schedule it snapshots the labels (the Redis stream and
the labels file), trains a candidate on the base data + the labels, promotes it (not worse on the held-out labels),
keeps the replaced model for rollback and reloads itself; the next requests route by the new model. Without new
labels the next runs are skipped.

The labels are scripted as in `test_learning_loop_e2e` (the local model fails on "Python function" prompts, both
tiers answer synonym prompts well); no judge is involved here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import redis

from classifier import load_model
from classifier.fit import RouterConfig
from classifier.install import rollback_path
from classifier.model import metrics_path_for
from classifier.train import train
from gateway.devtools.process import run_fake_upstream
from tests.conftest import run_gateway
from tests.test_learning_e2e import metric, wait_for
from tests.test_learning_loop_e2e import CODE_WORDS, POLICY, SYNONYM_WORDS, base_rows, coding, expected_reason, synonym

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
STREAM = "slmgw:labels:v1"
T0 = 1_760_000_000.0
N_WORDS = 25
VARIANTS = ("", " Be brief.", " Explain it.", " Thanks.")


def label_rows() -> list[dict]:
    """200 rows, coding and synonym prompts in turn, a minute apart."""
    prompts = [p for v in VARIANTS for pair in zip(CODE_WORDS[:N_WORDS], SYNONYM_WORDS[:N_WORDS])
               for p in (coding(pair[0]) + v, synonym(pair[1]) + v)]
    return [{"prompt": p, "weak_correct": "Python" not in p, "strong_correct": True, "source": "judge",
             "ts": T0 + 60.0 * i, "request_id": f"r-{i}"} for i, p in enumerate(prompts)]


def test_auto_retrain_promotes_a_better_model_and_reloads(redis_db: redis.Redis, tmp_path: Path) -> None:
    base = tmp_path / "base.jsonl"
    base.write_text("".join(json.dumps(r) + "\n" for r in base_rows()), encoding="utf-8")
    target = tmp_path / "installed" / "router.skops"
    train(base, target, RouterConfig(word_features=2**12, word_problem_weight=0.0))
    original = target.read_bytes()
    rows = label_rows()
    assert len(rows) == 200
    for row in rows[:100]:  # half in the shared stream, half in the file (written while Redis was down)
        redis_db.xadd(STREAM, {"row": json.dumps(row)})
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows[100:]), encoding="utf-8")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    work = tmp_path / "retrain"
    config = {
        "policy": str(policy), "classifier_model": str(target), "cache": {"redis_url": REDIS_URL},
        "learning": {"labels_path": str(labels),
                     "auto_retrain": {"interval_seconds": 1, "data": [str(base)], "min_new_labels": 50,
                                      "work_dir": str(work)}},
    }
    with run_fake_upstream() as upstream, run_gateway(config=dict(config, upstream={"url": upstream}),
                                                        tmp_dir=tmp_path) as gw:
        later = [coding(w) for w in CODE_WORDS[N_WORDS:]] + [synonym(w) for w in SYNONYM_WORDS[N_WORDS:]]
        first = load_model(target)
        assert [expected_reason(first, p)[0] for p in later] == ["upstream"] * 6  # unfamiliar to the first model
        wait_for(lambda: metric(gw, "slm_gateway_learning_retrains_total", result="installed") == 1,
                 "the auto-retrain run that installs")
        candidate = work / "candidate" / "router.skops"
        assert target.read_bytes() == candidate.read_bytes() != original
        assert rollback_path(target).read_bytes() == original  # kept for `classifier rollback`
        snapshot = [json.loads(line) for line in (work / "labels.jsonl").read_text().splitlines()]
        assert snapshot == rows  # the stream's rows, then the file's
        installed = json.loads(metrics_path_for(target).read_text())
        assert installed["trained_on"]["files"] == [
            {"path_name": "base.jsonl", "rows": 240, "traffic_rows": 0},
            {"path_name": "labels.jsonl", "rows": 200, "traffic_rows": 200},
        ]
        assert installed["promotion"]["labels"] == {"path_name": "labels.jsonl", "rows": 200, "held_out_rows": 40}
        # the gateway reloaded itself (SIGHUP from promote): the dashboard shows the promoted version
        wait_for(lambda: metric(gw, "slm_gateway_router_model_apgr", version=installed["version"]) == installed["apgr"],
                 "the reload")

        taught = load_model(target)
        for prompt in later:
            tier, reason = expected_reason(taught, prompt)
            assert tier == ("upstream" if "Python" in prompt else "local")
            resp = httpx.post(f"{gw.base_url}/chat/completions", timeout=120, json={
                "model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 2})
            assert resp.status_code == 200
            assert (resp.headers["x-gateway-route"], resp.headers["x-gateway-route-reason"]) == (tier, reason)

        # no new labels: the next runs train nothing
        wait_for(lambda: metric(gw, "slm_gateway_learning_retrains_total", result="skipped") >= 1, "a skipped run")
        assert metric(gw, "slm_gateway_learning_retrains_total", result="installed") == 1
        assert metric(gw, "slm_gateway_learning_retrains_total", result="failed") == 0
        assert json.loads((work / "state.json").read_text())["rows"] == 200
        assert target.read_bytes() == candidate.read_bytes()

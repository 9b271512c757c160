"""`slm-gateway cache calibrate` and `slm-gateway cache purge` (Redis DB from SLM_TEST_REDIS_URL)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gateway.auth import tenant_of
from gateway.cache.keys import tenant_namespace
from gateway.cli import main
from tests.conftest import flushed_redis

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
PREFIX = "slmgw:cache:v1"


def pairs_file(tmp_path: Path) -> Path:
    rows = [
        {"a": "How do I sort a list in Python?", "b": "What is the best way to sort a Python list?", "label": "same"},
        {"a": "Explain how batteries work.", "b": "Explain how credit cards work.", "label": "different"},
        {"a": "What is inflation?", "b": "What is a mortgage?", "label": "different"},
        {"a": "Write a haiku about autumn.", "b": "Write a limerick about autumn.", "label": "different"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_calibrate_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thresholds = tmp_path / "thresholds.json"
    code = main(["cache", "calibrate", "--pairs", str(pairs_file(tmp_path)), "--margin", "0.01", "--write",
                 "--thresholds", str(thresholds)])
    out = capsys.readouterr().out
    assert code == 0
    table = json.loads(thresholds.read_text())
    entry = table["wordllama-l2_supercat-256"]
    # 3 negatives, budget floor(0.004 * 3) = 0: above the highest guard-passing negative (batteries / credit cards,
    # 0.6149 + 0.01), then raised to the one paraphrase it passes (0.9373): the same recall, more cautious
    assert entry["threshold"] == 0.9373
    assert entry["calib"] == {"paraphrases": 1, "hits": 1, "recall": 1.0, "near_misses": 3, "false_hits": 0,
                              "false_hit_rate": 0.0}
    assert out.splitlines()[0] == "embedder wordllama-l2_supercat-256: threshold 0.9373 (fitted on split 'calib')"


def test_calibrate_of_the_shipped_pairs_reproduces_the_shipped_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cache.semantic.calibrate import DEFAULT_PAIRS, THRESHOLDS_FILE

    thresholds = tmp_path / "thresholds.json"
    assert main(["cache", "calibrate", "--pairs", str(DEFAULT_PAIRS), "--write", "--thresholds", str(thresholds)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "embedder wordllama-l2_supercat-256: threshold 0.6214 (fitted on split 'calib')"
    assert [line.split("   false hits ") for line in lines if line.startswith("  ") and "recall" in line] == [
        ["  calib    recall 200/218 = 91.7%", "0/492 = 0.00%"],
        ["  heldout  recall 180/212 = 84.9%", "0/493 = 0.00%"],
        ["  all      recall 380/430 = 88.4%", "0/985 = 0.00%"],
    ]
    assert json.loads(thresholds.read_text()) == json.loads(THRESHOLDS_FILE.read_text())  # what is shipped


def test_calibrate_refuses_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["cache", "calibrate", "--pairs", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"slm-gateway: error: {bad}:1: ")


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    with flushed_redis(REDIS_URL) as client:
        yield client


def test_purge_removes_one_tenant_only(r: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    acme, globex = tenant_of("sk-acme"), tenant_of("sk-globex")
    for tenant in (acme, globex, f"{acme}/team-a"):
        ns = tenant_namespace(tenant)
        r.set(f"{PREFIX}:{ns}:aaaa", b"entry", px=60_000)
        r.set(f"{PREFIX}:{ns}:aaaa:lock", b"token", px=60_000)
        r.xadd(f"{PREFIX}:{ns}:sem:bbbb", {"k": "x"})
    assert main(["cache", "purge", "--api-key", "sk-acme", "--redis-url", REDIS_URL]) == 0
    assert capsys.readouterr().out == f"purged 3 keys of tenant {acme}\n"
    left = sorted(k.decode() for k in r.keys("*"))
    assert len(left) == 6 and not any(tenant_namespace(acme) in k for k in left)
    assert main(["cache", "purge", "--tenant", acme, "--sub", "team-a", "--redis-url", REDIS_URL]) == 0
    assert capsys.readouterr().out == f"purged 3 keys of tenant {acme}/team-a\n"
    assert sorted(k.decode() for k in r.keys("*")) == sorted(
        f"{PREFIX}:{tenant_namespace(globex)}:{suffix}" for suffix in ("aaaa", "aaaa:lock", "sem:bbbb")
    )


def test_purge_needs_redis(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLM_GATEWAY_REDIS_URL", raising=False)
    assert main(["cache", "purge", "--tenant", "t-x"]) == 2
    assert "no Redis configured" in capsys.readouterr().err


def test_purge_of_an_unreachable_redis_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "purge", "--tenant", "t-x", "--redis-url", "redis://127.0.0.1:1/0"]) == 1
    assert capsys.readouterr().err.startswith("slm-gateway: error: cache store purge failed: ConnectionError")

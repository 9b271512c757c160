"""Shadow judging and feedback end to end, through running processes: `slm-gateway serve` (bundled local model,
a tiny real router model, a privacy policy), the fake upstream answering as the upstream LLM *and* as the judge
(scripted verdicts per prompt; it records what it receives, in arrival order), and a real Redis (label stream,
recent requests, response cache).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth import tenant_of
from gateway.devtools.process import run_fake_upstream
from gateway.learning.judge import JUDGE_SCHEMA_NAME, judge_user_message, quoted_prompt
from gateway.learning.labels import hash_tenant
from tests.conftest import BUNDLED_MODEL_ID, REPO_ROOT, RunningGateway, run_gateway

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/6")
STREAM = "slmgw:labels:v1"
KEY_A, KEY_B = "sk-tenant-a", "sk-tenant-b"
EMAIL = "jane.doe@example.com"
WAIT_S = 240.0
JUDGE_PRICE = (2.5, 10.0)  # gpt-4o, $ per million input / output tokens (the default cost table)
SHADOW_PRICE = (0.15, 0.6)  # gpt-4o-mini
SCRIPT = {
    "verdicts": [
        {"contains": "capital", "local_ok": False, "upstream_ok": True},
        {"contains": "irrational", "local_ok": False, "upstream_ok": True},
        {"contains": "hello 5", "local_ok": True, "upstream_ok": False},
        {"contains": "garbled", "reply": "not a verdict"},
        {"contains": "judge-down", "status": 503},
    ],
    "default": {"local_ok": True, "upstream_ok": True},
    "holds": [{"contains": "HOLD-A", "name": "A"}],
}
POLICY = """\
version: 1
name: learning-test
defaults: {action: auto, fallback: both, threshold: 0.5}
rules:
  - {name: pii-keep-local, when: {pii: contact}, action: local, fallback: none, cache: false}
  - {name: pin-local, when: {model: local}, action: local, fallback: to_upstream}
  - {name: pin-upstream, when: {model: upstream}, action: upstream, fallback: to_upstream}
"""


# -- helpers ------------------------------------------------------------------------------------------------------
def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    """The value of one sample of the gateway's /metrics (0 when absent)."""
    text = httpx.get(f"{gw.root}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def wait_for(check: Callable[[], bool], what: str) -> None:
    """Poll `check` until it holds (bounded: the test fails after WAIT_S, it never passes on time)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def recorded(upstream: str) -> list[dict[str, Any]]:
    return httpx.get(upstream.removesuffix("/v1") + "/_fake/requests", timeout=10).json()["data"]


def chat_body(model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8, "temperature": 0,
            **extra}


def stream_rows(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields[b"row"]) for _, fields in client.xrange(STREAM)]


def judge_calls(upstream: str) -> list[dict[str, Any]]:
    return [r for r in recorded(upstream)
            if isinstance(r["body"], dict) and (r["body"].get("response_format") or {}).get("json_schema", {}).get(
                "name") == JUDGE_SCHEMA_NAME]


def words(text: str) -> int:
    return len(text.split())


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def judge_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    script = tmp_path_factory.mktemp("judge") / "script.json"
    script.write_text(json.dumps(SCRIPT))
    with run_fake_upstream(judge_script=str(script), record_max=5000) as url:
        yield url


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def learning_gateway(redis_db: redis.Redis, judge_upstream: str, policy_file: Path, tiny_router_model: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    config = {
        "api_keys": [KEY_A, KEY_B],
        "policy": str(policy_file),
        "classifier_model": str(tiny_router_model),
        "upstream": {"url": judge_upstream, "default_model": "gpt-4o-mini"},
        "cache": {"redis_url": REDIS_URL},
        "learning": {"shadow_rate": 1.0, "feedback": True, "judge_model": "gpt-4o", "shadow_max_tokens": 8,
                     "workers": 1, "max_judge_dollars_per_day": 100.0, "max_prompt_chars": 200},
    }
    with run_gateway(config=config, tmp_dir=tmp_path_factory.mktemp("gw")) as gw:
        yield gw


def post(gw: RunningGateway, body: dict[str, Any], *, key: str = KEY_A, rid: str, **headers: str) -> httpx.Response:
    resp = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=120,
                      headers={"authorization": f"Bearer {key}", "x-request-id": rid, **headers})
    assert resp.status_code == 200, resp.text
    return resp


# -- the tests ----------------------------------------------------------------------------------------------------
def test_shadow_judging_writes_the_expected_label_rows(
    learning_gateway: RunningGateway, judge_upstream: str, redis_db: redis.Redis, tiny_router_model: Path,
    tmp_path: Path,
) -> None:
    from gateway.routing.scorer import load_scorer

    gw = learning_gateway
    scorer = load_scorer(tiny_router_model)
    hard, easy = "Prove that 7 is irrational.", "Say hello 5 times."
    s_hard = float(scorer.score_messages([{"role": "user", "content": hard}]))
    s_easy = float(scorer.score_messages([{"role": "user", "content": easy}]))
    assert s_hard > 0.5 > s_easy

    judged = lambda: metric(gw, "slm_gateway_learning_labels_total", source="judge")  # noqa: E731
    # A client request for the local tier preempts a running local shadow generation (client requests go first):
    # the next local request waits until the upstream-served request before it has its label.
    r1 = post(gw, chat_body("upstream", "What is the capital of country 3?"), rid="learn-r1")
    wait_for(lambda: judged() == 1, "r1's label")
    r2 = post(gw, chat_body("local", "Say hello 2 times."), rid="learn-r2")
    r3 = post(gw, chat_body("auto", hard), rid="learn-r3")
    wait_for(lambda: judged() == 3, "r2's and r3's labels")
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=chat_body("auto", easy, stream=True),
                      headers={"authorization": f"Bearer {KEY_A}", "x-request-id": "learn-r4"}, timeout=120) as r4:
        assert r4.status_code == 200 and r4.headers["x-gateway-route"] == "local"
        r4_text = "".join(
            (json.loads(line[6:])["choices"] or [{"delta": {}}])[0]["delta"].get("content") or ""
            for line in r4.iter_lines() if line.startswith("data: {")
        )
    r5 = post(gw, chat_body("auto", f"Write to {EMAIL} about the meeting."), rid="learn-r5")
    r6 = post(gw, chat_body("local", "An opted-out prompt."), rid="learn-r6", **{"x-gateway-learning": "off"})
    r7 = post(gw, chat_body("local", "Say hello 2 times."), rid="learn-r7")  # a cache hit
    post(gw, chat_body("upstream", "garbled reply please"), rid="learn-r8")
    post(gw, chat_body("upstream", "judge-down now"), rid="learn-r9")
    post(gw, chat_body("upstream", "long " * 50), rid="learn-r10")  # over max_prompt_chars: not used
    assert [r.headers["x-gateway-route"] for r in (r1, r2, r3, r5, r6, r7)] == [
        "upstream", "local", "upstream", "local", "local", "cache"]

    def settled() -> bool:
        return (metric(gw, "slm_gateway_learning_labels_total", source="judge") == 4
                and metric(gw, "slm_gateway_learning_judge_errors_total", kind="malformed") == 1
                and metric(gw, "slm_gateway_learning_judge_errors_total", kind="upstream") == 1
                and metric(gw, "slm_gateway_learning_shadow_skipped_total", reason="private") == 1)

    wait_for(settled, "4 labels, 1 malformed verdict, 1 judge failure, 1 private skip")
    assert metric(gw, "slm_gateway_learning_shadow_skipped_total", reason="opt_out") == 1
    assert metric(gw, "slm_gateway_learning_shadow_skipped_total", reason="too_long") == 1
    assert not [r for r in recorded(judge_upstream) if r["headers"].get("x-request-id", "").startswith("learn-r10-")]
    assert metric(gw, "slm_gateway_learning_shadow_dropped_total", reason="queue_full") == 0
    assert metric(gw, "slm_gateway_learning_shadow_dropped_total", reason="preempted") == 0
    for local, upstream, n in (("bad", "ok", 2), ("ok", "ok", 1), ("ok", "bad", 1)):
        assert metric(gw, "slm_gateway_learning_verdicts_total", local=local, upstream=upstream) == n

    tenant = hash_tenant(tenant_of(KEY_A))
    rows = stream_rows(redis_db)
    for row in rows:
        assert isinstance(row.pop("ts"), float)
    common = {"source": "judge", "tenant": tenant, "local_model": BUNDLED_MODEL_ID, "upstream_model": "gpt-4o-mini",
              "judge_model": "gpt-4o"}
    assert rows == [
        {"prompt": "What is the capital of country 3?", "weak_correct": False, "strong_correct": True,
         "request_id": "learn-r1", "served_tier": "upstream", "router_score": None, **common},
        {"prompt": "Say hello 2 times.", "weak_correct": True, "strong_correct": True,
         "request_id": "learn-r2", "served_tier": "local", "router_score": None, **common},
        {"prompt": hard, "weak_correct": False, "strong_correct": True,
         "request_id": "learn-r3", "served_tier": "upstream", "router_score": s_hard, **common},
        {"prompt": easy, "weak_correct": True, "strong_correct": False,
         "request_id": "learn-r4", "served_tier": "local", "router_score": s_easy, **common},
    ]

    # The judge saw the prompt verbatim and the answers the clients got.
    calls = judge_calls(judge_upstream)
    by_prompt = {quoted_prompt(c["body"]): c for c in calls}
    assert sorted(by_prompt) == sorted(["What is the capital of country 3?", "Say hello 2 times.", hard, easy,
                                        "garbled reply please", "judge-down now"])
    answer = lambda resp: resp.json()["choices"][0]["message"]["content"]  # noqa: E731
    shadow_r2 = next(r for r in recorded(judge_upstream) if r["headers"].get("x-request-id") == "learn-r2-shadow")
    assert shadow_r2["body"]["max_tokens"] == 8 and "stream" not in shadow_r2["body"]
    r2_upstream_text = "fake answer to: Say hello 2 times."
    assert by_prompt["Say hello 2 times."]["body"]["messages"][1]["content"] == judge_user_message(
        "Say hello 2 times.", answer(r2), r2_upstream_text)
    assert by_prompt[easy]["body"]["messages"][1]["content"] == judge_user_message(
        easy, r4_text, f"fake answer to: {easy}")
    r1_user = by_prompt["What is the capital of country 3?"]["body"]["messages"][1]["content"]
    local_r1 = re.search(r"<<<A\n(.*)\nA>>>", r1_user, re.S).group(1)  # type: ignore[union-attr]
    assert r1_user == judge_user_message("What is the capital of country 3?", local_r1, answer(r1))

    # Judge spend = the judge's usage x the cost table; shadow spend = the upstream shadow answers' usage.
    expected_judge = 0.0
    for prompt in ("What is the capital of country 3?", "Say hello 2 times.", hard, easy, "garbled reply please"):
        body = by_prompt[prompt]["body"]
        prompt_tokens = sum(words(m["content"]) for m in body["messages"])
        rule = next((v for v in SCRIPT["verdicts"] if v["contains"] in prompt), SCRIPT["default"])
        reply = rule.get("reply") or json.dumps({"local_ok": rule["local_ok"], "upstream_ok": rule["upstream_ok"]})
        expected_judge += (prompt_tokens * JUDGE_PRICE[0] + words(reply) * JUDGE_PRICE[1]) / 1e6
    assert metric(gw, "slm_gateway_learning_spend_dollars_total", kind="judge") == pytest.approx(expected_judge,
                                                                                                 rel=1e-9)
    expected_shadow = sum((words(p) * SHADOW_PRICE[0] + words("fake answer to: " + p) * SHADOW_PRICE[1]) / 1e6
                          for p in ("Say hello 2 times.", easy))
    assert metric(gw, "slm_gateway_learning_spend_dollars_total", kind="shadow") == pytest.approx(expected_shadow,
                                                                                                  rel=1e-9)

    # Privacy: the kept-local prompt never reached the upstream (neither as a shadow nor quoted to the judge).
    assert not [r for r in recorded(judge_upstream) if EMAIL in json.dumps(r["body"])]
    assert r5.headers["x-gateway-route-reason"].startswith("rule 'pii-keep-local'")

    # `slm-gateway labels export` writes the stream as JSONL.
    out = tmp_path / "labels.jsonl"
    done = subprocess.run([sys.executable, "-m", "gateway", "labels", "export", "--redis-url", REDIS_URL,
                           "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith(f"exported 4 label rows from {STREAM}")
    assert [json.loads(line) for line in out.read_text().splitlines()] == stream_rows(redis_db)


def test_feedback_records_one_sided_labels_for_the_requesting_tenant(
    learning_gateway: RunningGateway, redis_db: redis.Redis
) -> None:
    gw = learning_gateway
    url = f"{gw.root}/v1/feedback"
    auth_a = {"authorization": f"Bearer {KEY_A}"}
    before = len(stream_rows(redis_db))
    resp = httpx.post(url, json={"request_id": "learn-r2", "ok": False}, headers=auth_a)
    assert resp.status_code == 200
    assert resp.json() == {"object": "feedback", "request_id": "learn-r2", "served_tier": "local", "recorded": True}
    again = httpx.post(url, json={"request_id": "learn-r2", "ok": True}, headers=auth_a)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_rated"
    upstream = httpx.post(url, json={"request_id": "learn-r3", "ok": True}, headers=auth_a)
    assert upstream.status_code == 200 and upstream.json()["served_tier"] == "upstream"
    other = httpx.post(url, json={"request_id": "learn-r1", "ok": True}, headers={"authorization": f"Bearer {KEY_B}"})
    assert other.status_code == 404
    assert other.json() == {"error": {"message": "No recent request 'learn-r1' of yours to rate.",
                                      "type": "not_found_error", "param": "request_id", "code": "request_not_found"}}
    private = httpx.post(url, json={"request_id": "learn-r5", "ok": True}, headers=auth_a)
    assert private.status_code == 404
    cached = httpx.post(url, json={"request_id": "learn-r7", "ok": True}, headers=auth_a)
    assert cached.status_code == 404
    too_long = httpx.post(url, json={"request_id": "learn-r10", "ok": True}, headers=auth_a)
    assert too_long.status_code == 404
    assert httpx.post(url, json={"request_id": "learn-r1", "ok": True}).status_code == 401
    bad = httpx.post(url, json={"request_id": "learn-r1"}, headers=auth_a)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "ok"

    rows = stream_rows(redis_db)[before:]
    for row in rows:
        assert isinstance(row.pop("ts"), float)
    common = {"source": "feedback", "tenant": hash_tenant(tenant_of(KEY_A)), "judge_model": None}
    assert rows == [
        {"prompt": "Say hello 2 times.", "weak_correct": False, "strong_correct": None, "request_id": "learn-r2",
         "served_tier": "local", "local_model": BUNDLED_MODEL_ID, "upstream_model": None, "router_score": None, **common},
        {"prompt": "Prove that 7 is irrational.", "weak_correct": None, "strong_correct": True,
         "request_id": "learn-r3", "served_tier": "upstream", "local_model": None, "upstream_model": "gpt-4o-mini",
         "router_score": rows[1]["router_score"], **common},
    ]
    assert isinstance(rows[1]["router_score"], float)
    assert metric(gw, "slm_gateway_learning_labels_total", source="feedback") == 2
    assert metric(gw, "slm_gateway_learning_feedback_total", result="unknown_request") == 4
    assert metric(gw, "slm_gateway_learning_feedback_total", result="duplicate") == 1


def test_responses_requests_are_judged_and_rated_like_chat_requests(
    learning_gateway: RunningGateway, judge_upstream: str, redis_db: redis.Redis
) -> None:
    """A `/v1/responses` request the gateway answers itself (through the chat path: here on the local tier) is
    shadowed, judged and open to feedback like a chat request (one routed upstream is relayed as it is)."""
    gw = learning_gateway
    prompt = "Say hello 4 times."
    judged = lambda: metric(gw, "slm_gateway_learning_labels_total", source="judge")  # noqa: E731
    start, before = judged(), len(stream_rows(redis_db))
    resp = httpx.post(f"{gw.base_url}/responses", timeout=120,
                      json={"model": "local", "input": prompt, "max_output_tokens": 8, "temperature": 0},
                      headers={"authorization": f"Bearer {KEY_A}", "x-request-id": "learn-resp1"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["object"] == "response" and resp.headers["x-gateway-route"] == "local"
    wait_for(lambda: judged() == start + 1, "the Responses request's label")
    rated = httpx.post(f"{gw.root}/v1/feedback", json={"request_id": "learn-resp1", "ok": True},
                       headers={"authorization": f"Bearer {KEY_A}"})
    assert rated.status_code == 200
    assert rated.json() == {"object": "feedback", "request_id": "learn-resp1", "served_tier": "local",
                            "recorded": True}
    rows = [(r["source"], r["request_id"], r["prompt"], r["served_tier"], r["local_model"], r["upstream_model"],
             r["weak_correct"], r["strong_correct"]) for r in stream_rows(redis_db)[before:]]
    assert rows == [("judge", "learn-resp1", prompt, "local", BUNDLED_MODEL_ID, "gpt-4o-mini", True, True),
                    ("feedback", "learn-resp1", prompt, "local", BUNDLED_MODEL_ID, None, True, None)]


def test_shadow_work_starts_only_after_the_client_has_its_answer(
    learning_gateway: RunningGateway, judge_upstream: str, redis_db: redis.Redis
) -> None:
    """Structural, not timed: one shadow worker takes jobs in order. While the client is still reading a held
    answer, a later request gets judged; had the held request been queued before its answer was complete, its
    job would have come first. Only after the client has the whole held answer is it shadowed and judged."""
    gw = learning_gateway
    held_prompt, next_prompt = "HOLD-A what is two plus two?", "What is three plus three?"
    judged = lambda: metric(gw, "slm_gateway_learning_labels_total", source="judge")  # noqa: E731
    start = judged()
    headers = {"authorization": f"Bearer {KEY_A}", "x-request-id": "learn-held"}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", headers=headers, timeout=120,
                      json=chat_body("upstream", held_prompt, stream=True)) as held:
        lines = held.iter_lines()
        first = next(line for line in lines if line.startswith("data: {"))
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        post(gw, chat_body("upstream", next_prompt), rid="learn-next")
        wait_for(lambda: judged() == start + 1, "the later request's label")
        assert [quoted_prompt(c["body"]) for c in judge_calls(judge_upstream)].count(held_prompt) == 0
        held_ids = [r["headers"].get("x-request-id", "") for r in recorded(judge_upstream)]
        assert not [rid for rid in held_ids if rid.startswith("learn-held-")]  # neither shadow nor judge yet
        assert stream_rows(redis_db)[-1]["request_id"] == "learn-next"
        httpx.post(judge_upstream.removesuffix("/v1") + "/_fake/release?name=A")
        rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
    wait_for(lambda: judged() == start + 2, "the held request's label")
    order = [quoted_prompt(c["body"]) for c in judge_calls(judge_upstream)]
    assert order.index(next_prompt) < order.index(held_prompt)
    assert stream_rows(redis_db)[-1]["request_id"] == "learn-held"


def test_daily_cap_stops_judging(judge_upstream: str, policy_file: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    config = {
        "policy": str(policy_file),
        "upstream": {"url": judge_upstream},
        "cache": {"enabled": False},
        "learning": {"shadow_rate": 1.0, "labels_path": str(labels), "max_judge_dollars_per_day": 0.0},
    }
    with run_gateway(config=config, tmp_dir=tmp_path) as gw:
        for i in range(2):
            resp = httpx.post(f"{gw.base_url}/chat/completions", json=chat_body("upstream", f"Budget prompt {i}"),
                              headers={"x-request-id": f"budget-{i}"}, timeout=60)
            assert resp.status_code == 200
        wait_for(lambda: metric(gw, "slm_gateway_learning_shadow_dropped_total", reason="budget") == 2,
                 "two budget drops")
        assert metric(gw, "slm_gateway_learning_spend_dollars_total", kind="judge") == 0
    assert not [r for r in recorded(judge_upstream) if r["headers"].get("x-request-id", "").startswith("budget-")
                and r["headers"]["x-request-id"].endswith(("-judge", "-shadow"))]
    assert not labels.exists()

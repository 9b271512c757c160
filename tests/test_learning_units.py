"""Learning's parts on their own: the judge protocol, label rows and sinks (real Redis), the spend cap, the
recent-request memory, feedback bodies, the stream text collector and the fake upstream's judge script."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from gateway.devtools.fake_judge import VerdictRule, judge_completion, load_script, verdict_content, verdict_rule
from gateway.learning.budget import DailyBudget
from gateway.learning.feedback import parse_feedback
from gateway.learning.finished import StreamText, completion_text
from gateway.learning.judge import (
    JUDGE_SCHEMA_NAME,
    MalformedVerdict,
    Verdict,
    is_judge_request,
    judge_request,
    parse_verdict,
    quoted_prompt,
)
from gateway.learning.labels import LabelSink, export_stream, hash_tenant, label_row
from gateway.learning.recent import RecentRequests, Remembered
from gateway.learning.redis_client import LEARNING_CLIENT_NAME
from gateway.errors import InvalidRequest
from gateway.settings import SettingsError, load_settings

REDIS_URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/6")


@pytest.fixture
async def redis_client():
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception:  # noqa: BLE001
        pytest.skip(f"no Redis at {REDIS_URL}")
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


# -- judge protocol -----------------------------------------------------------------------------------------------
def test_judge_request_quotes_prompt_verbatim_and_asks_json_schema() -> None:
    prompt = "Line one\nwith 'quotes' and \"doubles\" and <<<markers"
    body = judge_request("gpt-4o", prompt, "local says 4", "upstream says four", 64)
    assert body["model"] == "gpt-4o"
    assert body["temperature"] == 0 and body["max_tokens"] == 64
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": JUDGE_SCHEMA_NAME,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"local_ok": {"type": "boolean"}, "upstream_ok": {"type": "boolean"}},
                "required": ["local_ok", "upstream_ok"],
                "additionalProperties": False,
            },
        },
    }
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    assert prompt in user and "local says 4" in user and "upstream says four" in user
    assert quoted_prompt(body) == prompt
    assert is_judge_request(body) is True
    assert is_judge_request({"response_format": {"type": "json_schema", "json_schema": {"name": "other"}}}) is False
    assert is_judge_request({"messages": []}) is False


def test_verdict_parsing_is_strict() -> None:
    assert parse_verdict('{"local_ok": true, "upstream_ok": false}') == Verdict(local_ok=True, upstream_ok=False)
    assert parse_verdict(' {"upstream_ok": true, "local_ok": true}\n') == Verdict(local_ok=True, upstream_ok=True)
    for bad in (None, "", "yes", '{"local_ok": true}', '{"local_ok": "true", "upstream_ok": true}',
                '{"local_ok": 1, "upstream_ok": 0}', '{"local_ok": true, "upstream_ok": true, "why": "x"}',
                '[true, true]', '```json\n{"local_ok": true, "upstream_ok": true}\n```'):
        with pytest.raises(MalformedVerdict):
            parse_verdict(bad)


# -- label rows ---------------------------------------------------------------------------------------------------
def _row(**over: object) -> dict:
    base = dict(prompt="p", weak_correct=True, strong_correct=False, source="judge", request_id="r1",
                tenant_hash=hash_tenant("t-1"), served_tier="local", local_model="local", upstream_model="gpt-4o-mini",
                judge_model="gpt-4o", router_score=0.25, ts=1700000000.12345)
    base.update(over)
    return label_row(**base)  # type: ignore[arg-type]


def test_label_row_has_the_training_format_and_provenance() -> None:
    assert _row() == {
        "prompt": "p", "weak_correct": True, "strong_correct": False, "source": "judge", "ts": 1700000000.123,
        "request_id": "r1", "tenant": hash_tenant("t-1"), "served_tier": "local", "local_model": "local",
        "upstream_model": "gpt-4o-mini", "judge_model": "gpt-4o", "router_score": 0.25,
    }
    assert hash_tenant("t-1") == "h-" + hashlib.sha256(b"\x00t-1").hexdigest()[:16]
    assert hash_tenant("t-1", "salt") == "h-" + hashlib.sha256(b"salt\x00t-1").hexdigest()[:16]


def test_label_rows_train_the_router(tmp_path: Path) -> None:
    """The classifier's own loader reads label rows (judge rows as they are)."""
    from classifier.train import load_dataset

    path = tmp_path / "labels.jsonl"
    rows = [_row(prompt=f"prompt {i}", weak_correct=i % 2 == 0, strong_correct=True) for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_dataset(path)
    assert list(data.prompts) == [f"prompt {i}" for i in range(4)]
    assert data.weak_correct.tolist() == [True, False, True, False]


async def test_file_sink_appends_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "labels.jsonl"
    sink = LabelSink(path=str(path), redis=None, stream="s", stream_max_len=10)
    assert await sink.append(_row(request_id="a")) is True
    assert await sink.append(_row(request_id="b")) is True
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [_row(request_id="a"), _row(request_id="b")]


async def test_redis_sink_appends_to_the_stream_and_exports(redis_client: aioredis.Redis) -> None:
    sink = LabelSink(path=None, redis=redis_client, stream="test:labels", stream_max_len=100)
    for i in range(3):
        assert await sink.append(_row(request_id=f"r{i}")) is True
    assert await redis_client.xlen("test:labels") == 3
    out = io.StringIO()
    assert await export_stream(redis_client, "test:labels", out) == 3
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [_row(request_id=f"r{i}") for i in range(3)]


async def test_redis_outage_falls_back_to_the_file_then_buffers(tmp_path: Path) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    errors: list[str] = []
    path = tmp_path / "labels.jsonl"
    sink = LabelSink(path=str(path), redis=dead, stream="s", stream_max_len=10, on_error=errors.append)
    assert await sink.append(_row(request_id="a")) is True
    assert errors == ["redis"]
    assert [json.loads(x)["request_id"] for x in path.read_text().splitlines()] == ["a"]
    lost: list[int] = []
    nowhere = LabelSink(path=None, redis=dead, stream="s", stream_max_len=10, on_error=errors.append,
                        on_drop=lost.append)
    assert await nowhere.append(_row(request_id="b")) is False
    assert lost == []
    await dead.aclose()


# -- spend cap ----------------------------------------------------------------------------------------------------
async def test_daily_budget_is_shared_through_redis_and_rolls_over(redis_client: aioredis.Redis) -> None:
    day = ["2026-12-01"]
    a = DailyBudget(0.01, redis=redis_client, key_prefix="test", today=lambda: day[0])
    b = DailyBudget(0.01, redis=redis_client, key_prefix="test", today=lambda: day[0])
    await a.add(0.004)
    await b.add(0.004)
    assert b.spent == pytest.approx(0.008) and not b.exhausted()
    await a.add(0.003)
    assert a.spent == pytest.approx(0.011) and a.exhausted()
    assert float(await redis_client.get("test:spend:2026-12-01")) == pytest.approx(0.011)
    day[0] = "2026-12-02"
    assert a.spent == 0.0 and not a.exhausted()
    assert DailyBudget(0.0).exhausted() is True


# -- recent requests ----------------------------------------------------------------------------------------------
def _remembered(rid: str, tenant: str = "t-a") -> Remembered:
    return Remembered(request_id=rid, tenant=tenant, served_tier="local", prompt="hi", local_model="local",
                      upstream_model=None, router_score=None)


async def test_recent_requests_memory_is_bounded_and_rates_once() -> None:
    recent = RecentRequests(2)
    for rid in ("a", "b", "c"):
        recent.remember(_remembered(rid))
    assert await recent.lookup("a") is None
    assert (await recent.lookup("c")) == _remembered("c")
    assert await recent.mark_rated("c") is True
    assert await recent.mark_rated("c") is False


async def test_recent_requests_in_redis_are_seen_by_another_replica(redis_client: aioredis.Redis) -> None:
    one = RecentRequests(10, redis=redis_client, key_prefix="test", ttl_seconds=60)
    two = RecentRequests(10, redis=redis_client, key_prefix="test", ttl_seconds=60)
    await one.start()
    try:
        one.remember(_remembered("x"))
        assert one._writes is not None
        while not one._writes.empty():
            await __import__("asyncio").sleep(0.01)
        for _ in range(100):  # the writer task finishes its SET
            if await redis_client.exists("test:req:x"):
                break
            await __import__("asyncio").sleep(0.01)
        assert await two.lookup("x") == _remembered("x")
        assert 0 < await redis_client.ttl("test:req:x") <= 60
        assert await two.mark_rated("x") is True
        assert await one.mark_rated("x") is False
    finally:
        await one.stop()


# -- feedback bodies ----------------------------------------------------------------------------------------------
def test_feedback_body_errors_name_the_field() -> None:
    assert parse_feedback(b'{"request_id": "r1", "ok": false}').ok is False
    cases = {b'{"request_id": "r1"}': "ok", b'{"ok": true}': "request_id", b'{"request_id": "r1", "ok": "yes"}': "ok",
             b'{"request_id": 5, "ok": true}': "request_id", b'{"request_id": "", "ok": true}': "request_id",
             b'not json': None, b'{"request_id": "r", "ok": true, "x": 1}': None}
    for body, param in cases.items():
        with pytest.raises(InvalidRequest) as info:
            parse_feedback(body)
        assert info.value.status_code == 400 and info.value.param == param, body


# -- answer text --------------------------------------------------------------------------------------------------
def test_stream_text_collects_the_first_choice_across_split_writes() -> None:
    events = [
        {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"model": "m", "choices": [{"index": 1, "delta": {"content": "other choice"}}]},
        {"model": "m", "choices": [{"index": 0, "delta": {"content": "lo é"}}]},
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    data = b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    text = StreamText()
    for i in range(0, len(data), 7):
        text.feed(data[i : i + 7])
    assert text.text == "Hello é"
    assert (text.usage.prompt_tokens, text.usage.completion_tokens, text.model) == (3, 2, "m")
    assert completion_text(b'{"choices": [{"message": {"content": "x y"}}]}') == "x y"
    assert completion_text(b'{"choices": []}') == ""


# -- settings -----------------------------------------------------------------------------------------------------
def test_learning_settings_validate() -> None:
    s = load_settings(environ={"SLM_GATEWAY_SHADOW_RATE": "0.25", "SLM_GATEWAY_LABELS_PATH": "/tmp/l.jsonl"})
    assert (s.learning.shadow_rate, s.learning.labels_path, s.learning.judge_model) == (0.25, "/tmp/l.jsonl", None)
    with pytest.raises(SettingsError, match="learning.shadow_rate must be between 0 and 1, got 1.5"):
        load_settings(environ={}, overrides={"learning": {"shadow_rate": 1.5}})
    with pytest.raises(SettingsError, match="learning.queue_size must be at least 1, got 0"):
        load_settings(environ={}, overrides={"learning": {"queue_size": 0}})


# -- the fake upstream's judge script -----------------------------------------------------------------------------
def test_fake_judge_script(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({
        "verdicts": [{"contains": "capital", "local_ok": False, "upstream_ok": True},
                     {"contains": "garbled", "reply": "not a verdict"},
                     {"contains": "down", "status": 503}],
        "default": {"local_ok": True, "upstream_ok": False},
        "holds": [{"contains": "HOLD-A", "name": "A"}],
    }))
    script = load_script(path)
    ask = lambda prompt: judge_request("j", prompt, "a", "b", 8)  # noqa: E731
    assert verdict_content(verdict_rule(script, ask("the capital of X"))) == '{"local_ok": false, "upstream_ok": true}'
    assert verdict_content(verdict_rule(script, ask("garbled!"))) == "not a verdict"
    assert verdict_rule(script, ask("is it down")).status == 503
    assert verdict_content(verdict_rule(script, ask("anything"))) == '{"local_ok": true, "upstream_ok": false}'
    assert script.holds == [("HOLD-A", "A")]
    body = {"messages": [{"role": "user", "content": "one two three"}]}
    assert judge_completion("a b", body, "j", "id")["usage"] == {"prompt_tokens": 3, "completion_tokens": 2,
                                                                  "total_tokens": 5}
    assert VerdictRule("x").reply is None


# -- the Redis client's life ----------------------------------------------------------------------------------------
async def _learning_connections(admin: aioredis.Redis) -> int:
    db = int(REDIS_URL.rsplit("/", 1)[-1] or 0)
    return sum(1 for c in await admin.client_list() if c.get("name") == LEARNING_CLIENT_NAME and int(c["db"]) == db)


async def test_learning_closes_its_redis_pool_through_redis_link(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    """`Learning.stop` closes the pool (the server sees learning's connections go); with Redis down, stop still
    returns (closing a client whose connections never opened is not an error)."""
    from prometheus_client import CollectorRegistry

    from gateway.costs import CostModel
    from gateway.dispatch import Tiers
    from gateway.learning.metrics import LearningMetrics
    from gateway.learning.service import Learning
    from gateway.settings import CostSettings

    def learning(url: str) -> Learning:
        settings = load_settings(environ={}, overrides={"cache": {"redis_url": url}, "learning": {"feedback": True}})
        return Learning(settings, tiers=Tiers(), costs=CostModel(CostSettings(), "gpt-4o-mini"),
                        metrics=LearningMetrics(CollectorRegistry()), router=None)

    up = learning(REDIS_URL)
    assert up.redis is not None
    await up.start()
    assert await up.recent.mark_rated("r-1") is True  # a round trip: one connection in learning's pool
    assert await _learning_connections(redis_client) == 1
    await up.stop()
    assert await _learning_connections(redis_client) == 0
    down = learning("redis://127.0.0.1:1/0")
    await down.start()
    assert await down.recent.mark_rated("r-1") is True  # Redis down: this process's memory answers
    await down.stop()


# -- opting out ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "raw", "out"), [
    ({"x-gateway-learning": "off"}, {}, True),
    ({"x-gateway-learning": " False "}, {}, True),
    ({"x-gateway-learning": "on"}, {}, False),
    ({"x-gateway-tag": "no-learning"}, {}, True),
    ({"x-gateway-tag": "billing"}, {"user": "no-learning"}, False),  # the header tag wins over the user field
    ({}, {"user": "no-learning"}, True),
    ({}, {"user": "someone"}, False),
    ({}, {"user": 7}, False),
    ({}, {}, False),
])
def test_opt_out_by_header_or_tag(headers: dict, raw: dict, out: bool) -> None:
    from gateway.learning.privacy import opted_out

    assert opted_out(headers, raw, "x-gateway-learning", frozenset({"no-learning"})) is out


# -- auto-retraining's guards ---------------------------------------------------------------------------------------
def test_the_host_lock_lets_one_retrain_run_in(tmp_path: Path) -> None:
    from gateway.learning.retrain import host_lock

    with host_lock(tmp_path / "work" / "lock") as first, host_lock(tmp_path / "work" / "lock") as second:
        assert (first, second) == (True, False)
    with host_lock(tmp_path / "work" / "lock") as again:
        assert again is True


@pytest.mark.parametrize("bad", [{"interval_seconds": -1}, {"min_new_labels": 0}, {"timeout_seconds": 0}])
def test_auto_retrain_settings_validate(bad: dict) -> None:
    with pytest.raises(SettingsError, match=r"^learning.auto_retrain: interval_seconds must be >= 0, "
                                            r"timeout_seconds > 0 and min_new_labels >= 1$"):
        load_settings(environ={}, overrides={"learning": {"auto_retrain": bad}})


async def test_a_retrain_run_skips_without_new_labels_and_counts_a_failed_train(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from gateway.learning.metrics import LearningMetrics
    from gateway.learning.retrain import AutoRetrain
    from gateway.settings import AutoRetrainSettings

    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(_row(request_id=f"r{i}")) + "\n" for i in range(3)))
    settings = AutoRetrainSettings(interval_seconds=60, min_new_labels=3, work_dir=str(tmp_path / "work"))

    def retrain(python: str) -> AutoRetrain:
        return AutoRetrain(settings, labels_path=str(labels), redis=None, stream="s", target=None, reload_pid=0,
                           metrics=LearningMetrics(CollectorRegistry()), python=python)

    assert await retrain("/bin/false").run_once() == "failed"  # `python -m gateway classifier train` exits 1
    assert not (tmp_path / "work" / "state.json").exists()  # a failed train does not use up the labels
    assert (tmp_path / "work" / "labels.jsonl").read_text() == labels.read_text()
    (tmp_path / "work" / "state.json").write_text('{"rows": 1}')
    assert await retrain("/bin/false").run_once() == "skipped"  # 2 new rows < min_new_labels 3

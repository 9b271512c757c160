"""The shadow judge's decisions, in-process over `FakeBackend` tiers: what it asks each tier, the row it writes,
and each way a sampled request ends without a label (counted)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from gateway.costs import CostModel
from gateway.devtools.fake_backend import FakeBackend, FakeCall
from gateway.dispatch import Tiers
from gateway.errors import TierUnavailable
from gateway.learning.budget import DailyBudget
from gateway.learning.finished import Finished
from gateway.learning.labels import LabelSink, hash_tenant
from gateway.learning.metrics import LearningMetrics
from gateway.learning.privacy import PrivacyGuard
from gateway.learning.shadow import ShadowJudge
from gateway.openai.request import parse_chat_request
from gateway.openai.wire import Usage
from gateway.settings import CostSettings, LearningSettings

VERDICT = '{"local_ok": true, "upstream_ok": false}'


class Harness:
    def __init__(self, tmp: Path, *, local: FakeBackend | None, upstream: FakeBackend | None, cap: float = 10.0,
                 queue_size: int = 4) -> None:
        self.registry = CollectorRegistry()
        self.metrics = LearningMetrics(self.registry)
        self.path = tmp / "labels.jsonl"
        settings = LearningSettings(shadow_rate=1.0, queue_size=queue_size, shadow_max_tokens=16)
        self.tiers = Tiers(local=local, upstream=upstream)
        self.judge = ShadowJudge(
            settings, tiers=self.tiers, costs=CostModel(CostSettings(), "gpt-4o-mini"),
            sink=LabelSink(path=str(self.path), redis=None, stream="s", stream_max_len=10),
            budget=DailyBudget(cap), metrics=self.metrics, privacy=PrivacyGuard(None), judge_model="gpt-4o",
        )

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def rows(self) -> list[dict]:
        return [json.loads(x) for x in self.path.read_text().splitlines()] if self.path.exists() else []


def finished(served: str, prompt: str = "What is 2+2?", **raw: object) -> Finished:
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 64, **raw}
    return Finished(request_id="r1", tenant="t-a", request=parse_chat_request(msgspec.json.encode(body)),
                    served_tier=served, served_model="gpt-4o-mini" if served == "upstream" else "local",
                    answer_text="the served answer", usage=Usage(3, 3), reason="classifier", score=0.7)


async def test_upstream_served_request_is_answered_locally_then_judged(tmp_path: Path) -> None:
    local, upstream = FakeBackend("local", reply="four", model="local"), FakeBackend(reply=VERDICT)
    h = Harness(tmp_path, local=local, upstream=upstream)
    row = await h.judge.judge(finished("upstream"))
    assert local.calls == [FakeCall("local", "r1-shadow", False)]
    assert upstream.calls == [FakeCall("gpt-4o", "r1-judge", False)]
    assert row is not None and row == {**h.rows()[0]}
    del row["ts"]
    assert row == {"prompt": "What is 2+2?", "weak_correct": True, "strong_correct": False, "source": "judge",
                   "request_id": "r1", "tenant": hash_tenant("t-a"), "served_tier": "upstream", "local_model": "local",
                   "upstream_model": "gpt-4o-mini", "judge_model": "gpt-4o", "router_score": 0.7}
    # judge usage: 12 prompt tokens, 4 completion tokens (one per word of the verdict) at gpt-4o's price
    assert h.value("slm_gateway_learning_spend_dollars_total", kind="judge") == pytest.approx((12 * 2.5 + 4 * 10) / 1e6)
    assert h.value("slm_gateway_learning_spend_dollars_total", kind="shadow") == 0.0
    assert h.value("slm_gateway_learning_verdicts_total", local="ok", upstream="bad") == 1
    assert h.value("slm_gateway_learning_labels_total", source="judge") == 1


async def test_local_served_request_gets_an_upstream_shadow_answer(tmp_path: Path) -> None:
    upstream = FakeBackend(reply=VERDICT)
    h = Harness(tmp_path, local=FakeBackend("local"), upstream=upstream)
    row = await h.judge.judge(finished("local"))
    assert upstream.calls == [FakeCall("gpt-4o-mini", "r1-shadow", False), FakeCall("gpt-4o", "r1-judge", False)]
    assert row is not None and (row["local_model"], row["upstream_model"]) == ("local", "gpt-4o-mini")
    assert h.value("slm_gateway_learning_spend_dollars_total", kind="shadow") == pytest.approx(
        (12 * 0.15 + 4 * 0.6) / 1e6)


async def test_busy_local_tier_drops_the_shadow_job(tmp_path: Path) -> None:
    local = FakeBackend("local")
    local.waiting = 1  # type: ignore[attr-defined]  # a client request is waiting for the local tier
    h = Harness(tmp_path, local=local, upstream=FakeBackend(reply=VERDICT))
    assert await h.judge.judge(finished("upstream")) is None
    assert local.calls == []
    assert h.value("slm_gateway_learning_shadow_dropped_total", reason="local_busy") == 1


async def test_requests_the_local_tier_cannot_honour_are_skipped(tmp_path: Path) -> None:
    local = FakeBackend("local")
    h = Harness(tmp_path, local=local, upstream=FakeBackend(reply=VERDICT))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert await h.judge.judge(finished("upstream", tools=tools)) is None
    assert local.calls == []
    assert h.value("slm_gateway_learning_shadow_skipped_total", reason="unsupported") == 1


async def test_spent_budget_stops_judging(tmp_path: Path) -> None:
    upstream = FakeBackend(reply=VERDICT)
    h = Harness(tmp_path, local=FakeBackend("local"), upstream=upstream, cap=0.0)
    assert await h.judge.judge(finished("local")) is None
    assert upstream.calls == []
    assert h.value("slm_gateway_learning_shadow_dropped_total", reason="budget") == 1


async def test_malformed_verdict_and_failures_cost_the_label_only(tmp_path: Path) -> None:
    h = Harness(tmp_path, local=FakeBackend("local"), upstream=FakeBackend(reply="I think both are fine"))
    assert await h.judge.judge(finished("upstream")) is None
    assert h.value("slm_gateway_learning_judge_errors_total", kind="malformed") == 1
    down = FakeBackend(error=TierUnavailable("The upstream tier cannot be reached.", kind="connect"))
    h2 = Harness(tmp_path / "b", local=FakeBackend("local"), upstream=down)
    assert await h2.judge.judge(finished("local")) is None
    assert h2.value("slm_gateway_learning_shadow_errors_total", tier="upstream") == 1
    assert await h2.judge.judge(finished("upstream")) is None  # local shadow fine, the judge is down
    assert h2.value("slm_gateway_learning_judge_errors_total", kind="upstream") == 1
    assert h.rows() == [] and h2.rows() == []
    no_upstream = Harness(tmp_path / "c", local=FakeBackend("local"), upstream=None)
    assert await no_upstream.judge.judge(finished("local")) is None
    assert no_upstream.value("slm_gateway_learning_shadow_skipped_total", reason="no_tier") == 1


async def test_full_queue_drops_without_blocking(tmp_path: Path) -> None:
    h = Harness(tmp_path, local=FakeBackend("local"), upstream=FakeBackend(reply=VERDICT), queue_size=2)
    for _ in range(5):
        h.judge.offer(finished("local"))
    assert h.judge.queue.qsize() == 2
    assert h.value("slm_gateway_learning_shadow_dropped_total", reason="queue_full") == 3
    assert h.value("slm_gateway_learning_shadow_queue_depth") == 2

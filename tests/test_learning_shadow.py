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
                 queue_size: int = 4, slm: dict[str, FakeBackend] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.metrics = LearningMetrics(self.registry)
        self.path = tmp / "labels.jsonl"
        settings = LearningSettings(shadow_rate=1.0, queue_size=queue_size, shadow_max_tokens=16)
        self.tiers = Tiers(local=local, upstream=upstream, slm=dict(slm or {}),
                           slm_models={name: f"{name}-model" for name in slm or {}})
        self.judge = ShadowJudge(
            settings, tiers=self.tiers, costs=CostModel(CostSettings(), "gpt-4o-mini"),
            sink=LabelSink(path=str(self.path), redis=None, stream="s", stream_max_len=10),
            budget=DailyBudget(cap), metrics=self.metrics, privacy=PrivacyGuard(None), judge_model="gpt-4o",
        )

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def rows(self) -> list[dict]:
        return [json.loads(x) for x in self.path.read_text().splitlines()] if self.path.exists() else []


def finished(served: str, prompt: str = "What is 2+2?", small_tier: str = "local", **raw: object) -> Finished:
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 64, **raw}
    served_model = {"upstream": "gpt-4o-mini", "local": "local"}.get(served, f"{served}-model")
    return Finished(request_id="r1", tenant="t-a", request=parse_chat_request(msgspec.json.encode(body)),
                    served_tier=served, served_model=served_model, answer_text="the served answer", usage=Usage(3, 3),
                    reason="classifier", score=0.7, small_tier=small_tier)


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


async def test_a_named_slm_tier_is_the_weak_side_of_its_requests(tmp_path: Path) -> None:
    """Served by the SLM tier `coder`: the upstream is shadowed and `coder` is graded as the local side. Served by
    the upstream under a rule whose small tier is `coder`: `coder` (not `local`) gives the shadow answer."""
    local, coder = FakeBackend("local", model="local"), FakeBackend("coder", reply="four", model="coder-model")
    upstream = FakeBackend(reply=VERDICT)
    h = Harness(tmp_path, local=local, upstream=upstream, slm={"coder": coder})
    served_by_coder = await h.judge.judge(finished("coder"))
    assert upstream.calls == [FakeCall("gpt-4o-mini", "r1-shadow", False), FakeCall("gpt-4o", "r1-judge", False)]
    assert served_by_coder is not None
    assert (served_by_coder["served_tier"], served_by_coder["local_model"], served_by_coder["upstream_model"]) == (
        "coder", "coder-model", "gpt-4o-mini")
    upstream.calls.clear()
    served_upstream = await h.judge.judge(finished("upstream", small_tier="coder"))
    assert coder.calls == [FakeCall("coder-model", "r1-shadow", False)]
    assert local.calls == []
    assert upstream.calls == [FakeCall("gpt-4o", "r1-judge", False)]
    assert served_upstream is not None
    assert (served_upstream["weak_correct"], served_upstream["strong_correct"]) == (True, False)
    assert (served_upstream["local_model"], served_upstream["upstream_model"]) == ("coder-model", "gpt-4o-mini")
    assert [r["served_tier"] for r in h.rows()] == ["coder", "upstream"]


async def test_a_busy_slm_tier_drops_its_shadow_job(tmp_path: Path) -> None:
    coder = FakeBackend("coder")
    coder.waiting = 1  # type: ignore[attr-defined]
    h = Harness(tmp_path, local=FakeBackend("local"), upstream=FakeBackend(reply=VERDICT), slm={"coder": coder})
    assert await h.judge.judge(finished("upstream", small_tier="coder")) is None
    assert coder.calls == []
    assert h.value("slm_gateway_learning_shadow_dropped_total", reason="local_busy") == 1


SLM_POLICY = """\
defaults: {action: auto, threshold: 0.5}
rules:
  - {name: code, when: {tag: code}, action: auto, slm_tier: coder}
"""


class KeywordScorer:
    """p_strong 0.9 for prompts that say 'prove', else 0.1."""

    metadata: dict = {"score_quantiles": {"0.0": 0.0, "1.0": 1.0}}

    def score_messages(self, messages: list[dict]) -> float:
        return 0.9 if "prove" in " ".join(str(m.get("content")) for m in messages).lower() else 0.1


@pytest.mark.parametrize(("tag", "prompt", "served", "small", "shadowed_on"), [
    ("code", "Prove it in Python.", "upstream", "coder", "coder"),  # the `code` rule: coder against upstream
    ("code", "Say hello in Python.", "coder", "coder", "upstream"),
    (None, "Prove that 2 is prime.", "upstream", "local", "local"),  # the default rule: local against upstream
    (None, "Say hello.", "local", "local", "upstream"),
])
async def test_the_hook_hands_the_rules_small_tier_to_the_shadow_judge(
    tmp_path: Path, tag: str | None, prompt: str, served: str, small: str, shadowed_on: str
) -> None:
    from gateway.exchange import Exchange
    from gateway.learning.service import Learning
    from gateway.dispatch import Answer
    from gateway.routing.decision import RouteContext
    from gateway.routing.policy import parse_policy
    from gateway.routing.policy_router import PolicyRouter
    from gateway.settings import load_settings

    settings = load_settings(environ={}, overrides={
        "learning": {"shadow_rate": 1.0, "feedback": True, "labels_path": str(tmp_path / "labels.jsonl")}})
    backends = {"local": FakeBackend("local", model="local"), "coder": FakeBackend("coder", model="coder-model"),
                "upstream": FakeBackend(reply=VERDICT)}
    tiers = Tiers(local=backends["local"], upstream=backends["upstream"], slm={"coder": backends["coder"]},
                  slm_models={"coder": "coder-model"})
    router = PolicyRouter(parse_policy(SLM_POLICY, "test.yaml"), KeywordScorer(), slm_tiers=frozenset({"coder"}))
    learning = Learning(settings, tiers=tiers, costs=CostModel(CostSettings(), "gpt-4o-mini"),
                        metrics=LearningMetrics(CollectorRegistry()), router=router)
    parsed = parse_chat_request(msgspec.json.encode({"model": "auto", "messages": [{"role": "user", "content": prompt}]}))
    headers = {"x-gateway-tag": tag} if tag else {}
    decision = router.decide(RouteContext(request=parsed, headers=headers, has_upstream=True, has_local=True,
                                          slm_tiers={"coder": frozenset()}))
    assert (decision.tier, decision.small_tier) == (served, small)
    ex = Exchange("r1", headers, 0.0)
    ex.accept("t-a", parsed)
    ex.routed(decision, tiers.model_for(decision.tier, "auto"))
    after = learning.attach(Answer(200, b'{"choices":[{"message":{"content":"ok"}}]}', {}), ex)
    assert after is not None
    await after()
    job = learning.shadow.queue.get_nowait()
    assert (job.served_tier, job.small_tier) == (served, small)
    row = await learning.shadow.judge(job)
    assert row is not None and row["served_tier"] == served
    asked = {name: b.calls for name, b in backends.items()}
    assert [c.request_id for c in asked[shadowed_on]][0] == "r1-shadow"
    assert [name for name, calls in asked.items() if any(c.request_id == "r1-shadow" for c in calls)] == [shadowed_on]
    assert row["local_model"] == {"coder": "coder-model", "local": "local"}[small]
    rated = await learning.feedback(b'{"request_id": "r1", "ok": false}', "t-a")  # one-sided: the serving tier's side
    weak_side = served != "upstream"
    assert (rated["served_tier"], rated["weak_correct"], rated["strong_correct"]) == (
        served, False if weak_side else None, None if weak_side else False)
    assert (rated["local_model"], rated["upstream_model"]) == (
        ({"coder": "coder-model", "local": "local"}[served], None) if weak_side else (None, "gpt-4o-mini"))


async def test_a_client_request_preempts_a_running_shadow_generation(tmp_path: Path) -> None:
    """The shadow generation has started (the tier was idle); a client request then waits for the tier: the
    generation is cancelled, its job dropped (counted `preempted`), and nothing is judged. Not timed: the fake
    generation would take an hour."""
    import asyncio

    local = FakeBackend("local", delay=3600.0)
    upstream = FakeBackend(reply=VERDICT)
    h = Harness(tmp_path, local=local, upstream=upstream)
    job = asyncio.ensure_future(h.judge.judge(finished("upstream")))
    while not local.calls:  # the shadow generation is running
        await asyncio.sleep(0)
    local.waiting = 1  # type: ignore[attr-defined]  # a client request now waits for the local tier
    assert await asyncio.wait_for(job, timeout=60) is None
    assert local.calls == [FakeCall("local", "r1-shadow", False)]
    assert upstream.calls == []
    assert h.value("slm_gateway_learning_shadow_dropped_total", reason="preempted") == 1
    assert h.value("slm_gateway_learning_labels_total", source="judge") == 0
    assert h.rows() == []


async def test_auto_retraining_alone_does_no_work_per_request(tmp_path: Path) -> None:
    from gateway.dispatch import Answer
    from gateway.exchange import Exchange
    from gateway.learning.service import Learning
    from gateway.routing.decision import RouteDecision
    from gateway.settings import load_settings

    settings = load_settings(environ={}, overrides={"learning": {
        "labels_path": str(tmp_path / "labels.jsonl"), "auto_retrain": {"interval_seconds": 3600}}})
    learning = Learning(settings, tiers=Tiers(local=FakeBackend("local"), upstream=FakeBackend()),
                        costs=CostModel(CostSettings(), "gpt-4o-mini"), metrics=LearningMetrics(CollectorRegistry()),
                        router=None)
    assert (learning.active, learning.shadow_on, learning.feedback_on, learning.retrain.on) == (True, False, False, True)
    ex = Exchange("r1", {}, 0.0)
    ex.accept("t-a", parse_chat_request(b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}'))
    ex.routed(RouteDecision(tier="local", reason="classifier", detail="d"), "local")
    assert learning.attach(Answer(200, b"{}", {}), ex) is None
    assert learning.recent._items == {} and learning.shadow.queue.qsize() == 0

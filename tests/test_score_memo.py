"""The router's score memo: an exact repeat of a message list is scored once, with the very same score; the memo
is bounded and belongs to one router (a reload starts afresh)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from gateway.metrics import GatewayMetrics
from gateway.routing.score_memo import ScoreMemo
from tests.test_policy_rules import HARD, KeywordScorer, ctx, router

AUTO = "rules:\n  - name: auto\n    action: auto\n    threshold: 0.5\n"


def messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


class FlakyScorer:
    """Fails its first call, then scores 0.25."""

    def __init__(self) -> None:
        self.calls = 0

    def score_messages(self, msgs: list[Mapping[str, Any]]) -> float:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom")
        return 0.25


def test_a_repeat_is_scored_once_with_the_same_score() -> None:
    scorer = KeywordScorer()
    memo = ScoreMemo(scorer)
    assert memo.score_messages(messages(HARD)) == 0.9
    assert memo.score_messages(messages(HARD)) == 0.9
    assert scorer.calls == 1
    assert memo.score_messages(messages("Say hello.")) == 0.1  # another prompt
    assert memo.score_messages([{"role": "user", "content": HARD}]) == 0.9  # another list (no system turn)
    assert scorer.calls == 3 and len(memo) == 3


def test_the_memo_keeps_the_last_max_entries_lists() -> None:
    scorer = KeywordScorer()
    memo = ScoreMemo(scorer, max_entries=2)
    for text in ("a", "b", "a", "c"):  # "a" was used again after "b": "b" is the oldest when "c" comes
        memo.score_messages(messages(text))
    assert len(memo) == 2 and scorer.calls == 3
    memo.score_messages(messages("a"))
    assert scorer.calls == 3
    memo.score_messages(messages("b"))
    assert scorer.calls == 4 and len(memo) == 2


def test_a_failure_is_not_remembered() -> None:
    scorer = FlakyScorer()
    memo = ScoreMemo(scorer)
    with pytest.raises(RuntimeError):
        memo.score_messages(messages(HARD))
    assert memo.score_messages(messages(HARD)) == 0.25
    assert memo.score_messages(messages(HARD)) == 0.25
    assert scorer.calls == 2 and len(memo) == 1


def test_familiarity_is_the_scorers_own() -> None:
    assert ScoreMemo(KeywordScorer()).familiarity_messages(messages(HARD)) is None  # the scorer has none


def test_router_decisions_of_a_repeat_are_identical_and_score_once() -> None:
    r = router(AUTO)
    first, second = r.decide(ctx(HARD)), r.decide(ctx(HARD))
    assert first == second
    assert (second.tier, second.score, second.detail) == (
        "upstream", 0.9, "classifier p_strong=0.9 >= threshold 0.5 (rule 'auto')")
    assert r.scorer.calls == 1
    assert router(AUTO, r.scorer).decide(ctx(HARD)).score == 0.9  # another router (a reload): its own memo
    assert r.scorer.calls == 2


def test_every_decision_is_timed_even_a_remembered_one() -> None:
    metrics = GatewayMetrics()
    r = router(AUTO, observe_score_seconds=metrics.classifier_duration.observe)
    for _ in range(3):
        assert r.decide(ctx(HARD)).score == 0.9
    assert r.scorer.calls == 1
    assert metrics.registry.get_sample_value("slm_gateway_classifier_duration_seconds_count") == 3

"""Familiarity: how familiar a prompt is to the classifier's training prompts (classifier.familiarity), stored in
the router file, and the `familiarity` policy condition that sends unfamiliar prompts elsewhere and says so."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from classifier import DEFAULT_MODEL_PATH, load_model
from classifier.familiarity import LEVELS, Familiarity
from gateway.openai.request import parse_chat_request
from gateway.routing.decision import RouteContext
from gateway.routing.policy import PolicyError, parse_policy
from gateway.routing.policy_router import PolicyRouter


def test_familiarity_is_a_leave_one_out_percentile_of_the_training_prompts() -> None:
    # three training prompts over four n-gram columns: {0, 1}, {1, 2}, {1}; df = [1, 3, 1, 0]
    words = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 2, 1, 0], [0, 1, 0, 0]], dtype=np.float32))
    fam = Familiarity.fit(words)
    assert fam.doc_freq.tolist() == [1, 3, 1, 0] and fam.rows == 3 and fam.n_features == 4
    a, b = math.log(3) / 2, math.log(3)  # leave-one-out: rows 0 and 1 see df - 1 = (0, 2), row 2 sees 2
    assert fam.quantiles[0] == pytest.approx(a) and fam.quantiles[50] == pytest.approx(a)
    assert fam.quantiles[100] == pytest.approx(b)
    v = (math.log(2) + math.log(4)) / 2  # a new prompt holding columns 0 and 1
    assert fam.raw(np.array([0, 1])) == pytest.approx(v, abs=1e-7)
    # log(1 + df) is kept as float32: equal to 1e-7
    assert fam.of_columns(np.array([0, 1])) == pytest.approx((1 + (v - a) / (b - a)) / 2, abs=1e-7)
    assert fam.of_columns(np.array([1])) == 1.0  # log 4 is above every training prompt's value
    assert fam.of_columns(np.array([3])) == 0.0  # never seen
    assert fam.of_columns(np.array([], dtype=np.int64)) == 0.0  # no words at all
    assert Familiarity(fam.to_params()).quantiles.tolist() == fam.quantiles.tolist()
    with pytest.raises(ValueError, match="non-decreasing"):
        Familiarity({"doc_freq": fam.doc_freq, "quantiles": fam.quantiles[::-1], "rows": 3})
    assert LEVELS.shape == (101,)


def test_trained_router_files_carry_familiarity_in_the_featurizers_columns(tiny_router_model: Path) -> None:
    model = load_model(tiny_router_model)
    head = model.familiarity_head
    assert head is not None and head.rows == 720 and head.n_features == 2**12
    featurizer = model.featurizer
    words = featurizer.compile_words()
    for text in ("Prove that 7 is irrational.", "Write a sonnet about the sea, in French."):
        block = featurizer.transform([text])[:, : featurizer.word_features]
        assert words(text).tolist() == sorted(block.indices.tolist())
        assert model.familiarity(text) == head.of_columns(block.indices)
    # a training prompt: its template's n-grams are in 120 training prompts, '7' and its pairs in one or two
    assert round(model.familiarity("Prove that 7 is irrational."), 4) == 0.3819
    assert round(model.familiarity("Prove that is irrational."), 4) == 0.9752  # template words, one new pair
    assert model.familiarity("Write a sonnet about the sea, in French.") == 0.0  # no training n-gram at all
    messages = [{"role": "user", "content": "Prove that is irrational."}]
    assert model.familiarity_messages(messages) == model.familiarity("Prove that is irrational.")


def test_the_shipped_model_knows_its_training_prompts_from_open_chat() -> None:
    model = load_model(DEFAULT_MODEL_PATH)
    assert model.familiarity_head is not None and model.familiarity_head.rows == 10588  # dev.jsonl
    assert round(model.familiarity("What is the capital of France?"), 4) == 0.9393
    assert round(model.familiarity("Janet has 3 apples and buys 5 more. How many apples does she have?"), 4) == 0.7328
    assert model.familiarity("Explain quantum entanglement simply.") == 0.0
    assert round(model.familiarity("Write a haiku about autumn."), 4) == 0.0087


# -- the policy condition ----------------------------------------------------------------------------------------
class FamiliarScorer:
    """Stand-in classifier: p_strong 0.2; familiarity 0.9 for prompts that mention 'capital', else 0.01."""

    metadata: dict[str, Any] = {"score_quantiles": {"0.0": 0.0, "1.0": 1.0}}

    def __init__(self) -> None:
        self.familiarity_calls = 0

    def score_messages(self, messages: list[Mapping[str, Any]]) -> float:
        return 0.2

    def familiarity_messages(self, messages: list[Mapping[str, Any]]) -> float:
        self.familiarity_calls += 1
        return 0.9 if "capital" in str(messages[-1]["content"]) else 0.01


class BrokenFamiliarity(FamiliarScorer):
    def familiarity_messages(self, messages: list[Mapping[str, Any]]) -> float:
        raise RuntimeError("boom")


class NoFamiliarity:
    metadata: dict[str, Any] = {"score_quantiles": {"0.0": 0.0, "1.0": 1.0}}

    def score_messages(self, messages: list[Mapping[str, Any]]) -> float:
        return 0.2


POLICY = """\
version: 1
defaults: {action: auto, threshold: 0.5}
rules:
  - {name: pin-local, when: {model: local}, action: local}
  - {name: unfamiliar-upstream, when: {familiarity: {lt: 0.05}}, action: upstream}
  - {name: auto, action: auto}
"""


def ctx(content: str, model: str = "auto") -> RouteContext:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return RouteContext(request=parse_chat_request(json.dumps(body).encode()), headers={}, has_upstream=True,
                        has_local=True)


def test_unfamiliar_prompts_follow_the_familiarity_rule_and_the_reason_says_it() -> None:
    scorer = FamiliarScorer()
    router = PolicyRouter(parse_policy(POLICY, "p.yaml"), scorer)
    odd = router.decide(ctx("Write a haiku."))
    assert (odd.tier, odd.reason, odd.detail, odd.familiarity, odd.score) == (
        "upstream", "unfamiliar-upstream", "rule 'unfamiliar-upstream'; familiarity 0.01 (training-prompt percentile)",
        0.01, None)
    known = router.decide(ctx("What is the capital of France?"))
    assert (known.tier, known.reason, known.detail, known.familiarity) == (
        "local", "classifier",
        "classifier p_strong=0.2 < threshold 0.5 (rule 'auto'); familiarity 0.9 (training-prompt percentile)", 0.9)
    pinned = router.decide(ctx("Write a haiku.", model="local"))
    assert (pinned.reason, pinned.detail, pinned.familiarity) == ("pin-local", "rule 'pin-local'", None)
    assert scorer.familiarity_calls == 2  # lazily: not for the pinned request


@pytest.mark.parametrize("scorer", [NoFamiliarity(), BrokenFamiliarity()], ids=["no-familiarity", "broken"])
def test_without_a_familiarity_the_condition_never_holds(scorer: Any) -> None:
    d = PolicyRouter(parse_policy(POLICY, "p.yaml"), scorer).decide(ctx("Write a haiku."))
    assert (d.tier, d.reason, d.detail, d.familiarity) == (
        "local", "classifier", "classifier p_strong=0.2 < threshold 0.5 (rule 'auto')", None)


def test_familiarity_bounds_are_checked() -> None:
    bad = "rules:\n  - {name: x, when: {familiarity: {lt: 5}}, action: upstream}\n"
    with pytest.raises(PolicyError, match=r"rules\[0\] 'x': when.familiarity: bounds must be within \[0, 1\], got 5"):
        parse_policy(bad, "p.yaml")
    empty = "rules:\n  - {name: x, when: {familiarity: {gt: 0.5, lt: 0.2}}, action: upstream}\n"
    with pytest.raises(PolicyError, match="when.familiarity: empty range"):
        parse_policy(empty, "p.yaml")


def test_quality_first_sends_unfamiliar_prompts_upstream_with_the_shipped_model() -> None:
    from gateway.routing.policy import DEFAULT_POLICY_PATH, load_policy

    router = PolicyRouter(load_policy(DEFAULT_POLICY_PATH.parent / "quality-first.yaml"), load_model())
    d = router.decide(ctx("Explain quantum entanglement simply.", model="gpt-4o-mini"))
    assert (d.tier, d.reason, d.detail) == (
        "upstream", "unfamiliar-upstream", "rule 'unfamiliar-upstream'; familiarity 0 (training-prompt percentile)")
    d = router.decide(ctx("What is the capital of France?", model="gpt-4o-mini"))
    assert (d.tier, d.reason) == ("local", "classifier")
    assert d.detail.endswith("; familiarity 0.939 (training-prompt percentile)")

"""Each rule condition and action of the policy router, on parsed requests (no server)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.openai.request import parse_chat_request
from gateway.metrics import GatewayMetrics
from gateway.routing.decision import RouteContext, RouteDecision
from gateway.routing.policy import parse_policy
from gateway.routing.policy_router import PolicyRejected, PolicyRouter
from gateway.routing.reloadable import ReloadableRouter, RouterSource

HARD = "Prove that there are infinitely many primes."
EASY = "Say hello."


class KeywordScorer:
    """Stand-in classifier: p_strong 0.9 for prompts that say 'prove', else 0.1; counts calls."""

    metadata: dict[str, Any] = {"score_quantiles": {"0.0": 0.0, "1.0": 1.0}}

    def __init__(self) -> None:
        self.calls = 0

    def score_messages(self, messages: list[Mapping[str, Any]]) -> float:
        self.calls += 1
        text = " ".join(str(m.get("content")) for m in messages)
        return 0.9 if "prove" in text.lower() else 0.1


class BrokenScorer:
    metadata: dict[str, Any] = {}

    def score_messages(self, messages: list[Mapping[str, Any]]) -> float:
        raise RuntimeError("boom")


def ctx(
    content: str | list[dict[str, Any]] = EASY,
    *,
    model: str = "gpt-4o",
    headers: dict[str, str] | None = None,
    upstream: bool = True,
    local: bool = True,
    **extra: Any,
) -> RouteContext:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    parsed = parse_chat_request(json.dumps(body).encode())
    return RouteContext(request=parsed, headers=headers or {}, has_upstream=upstream, has_local=local)


def router(policy: str, scorer: Any = None, **kwargs: Any) -> PolicyRouter:
    return PolicyRouter(parse_policy(policy, "test.yaml"), scorer if scorer is not None else KeywordScorer(), **kwargs)


def one_rule(when: str, action: str = "local", extra: str = "") -> PolicyRouter:
    return router(f"defaults: {{action: upstream}}\nrules:\n  - name: r\n    action: {action}\n    when: {when}\n{extra}")


def hits(r: PolicyRouter, c: RouteContext) -> bool:
    """Whether rule 'r' matches (the capability check may still send the request elsewhere)."""
    return r.match(r.features(c)).name == "r"


# -- conditions -------------------------------------------------------------------------------------------------
def test_model_globs_are_case_insensitive() -> None:
    r = one_rule("{model: ['gpt-4o*', 'claude-*']}")
    assert hits(r, ctx(model="gpt-4o-mini")) and hits(r, ctx(model="GPT-4O")) and hits(r, ctx(model="claude-3"))
    assert not hits(r, ctx(model="llama-3")) and not hits(r, ctx(model="my-gpt-4o"))


def test_header_values_match_globs_and_missing_headers_do_not() -> None:
    r = one_rule("{headers: {x-team: ['search', 'ads-*']}}")
    assert hits(r, ctx(headers={"x-team": "ads-eu"})) and hits(r, ctx(headers={"x-team": " search "}))
    assert not hits(r, ctx(headers={"x-team": "billing"})) and not hits(r, ctx())
    present = one_rule("{headers: {x-debug: '*'}}")
    assert hits(present, ctx(headers={"x-debug": "1"})) and not hits(present, ctx())


def test_tag_comes_from_the_header_else_the_user_field() -> None:
    r = one_rule("{tag: 'batch-*'}")
    assert hits(r, ctx(headers={"x-gateway-tag": "batch-nightly"}))
    assert hits(r, ctx(user="batch-7"))
    assert not hits(r, ctx(headers={"x-gateway-tag": "interactive"}, user="batch-7"))  # the header wins
    assert not hits(r, ctx())
    user_only = one_rule("{user: 'alice'}")
    assert hits(user_only, ctx(user="alice")) and not hits(user_only, ctx(headers={"x-gateway-tag": "alice"}))


def test_estimated_prompt_tokens_ranges() -> None:
    r = one_rule("{prompt_tokens: {gte: 100, lt: 1000}}")
    assert not hits(r, ctx("word " * 10))
    assert hits(r, ctx("word " * 200))  # ~250 tokens estimated
    assert not hits(r, ctx("word " * 2000))


def test_exceeds_local_context_counts_the_requested_max_tokens() -> None:
    r = router("rules:\n  - name: r\n    action: upstream\n    when: {exceeds_local_context: true}\n",
               local_context_tokens=1000)
    assert not hits(r, ctx("x" * 3000))  # ~754 tokens
    assert hits(r, ctx("x" * 3000, max_tokens=400))
    assert hits(r, ctx("x" * 5000))


def test_tools_images_response_format_and_stream() -> None:
    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]
    image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:x"}}]
    assert hits(one_rule("{has_tools: true}"), ctx(tools=tools))
    assert hits(one_rule("{has_tools: true}"), ctx(functions=[{"name": "legacy"}]))
    assert not hits(one_rule("{has_tools: true}"), ctx())
    assert hits(one_rule("{has_tools: false}"), ctx())
    assert hits(one_rule("{has_images: true}"), ctx(image)) and not hits(one_rule("{has_images: true}"), ctx())
    structured = one_rule("{response_format: true}")
    assert hits(structured, ctx(response_format={"type": "json_object"}))
    assert not hits(structured, ctx(response_format={"type": "text"})) and not hits(structured, ctx())
    schema_only = one_rule("{response_format: json_schema}")
    assert hits(schema_only, ctx(response_format={"type": "json_schema", "json_schema": {"name": "x"}}))
    assert not hits(schema_only, ctx(response_format={"type": "json_object"}))
    assert hits(one_rule("{stream: true}"), ctx(stream=True)) and not hits(one_rule("{stream: true}"), ctx())


def test_score_condition_consults_the_classifier() -> None:
    r = one_rule("{score: {gte: 0.5}}")
    assert hits(r, ctx(HARD)) and not hits(r, ctx(EASY))
    decision = r.decide(ctx(HARD))
    assert decision.score == pytest.approx(0.9)
    no_classifier = PolicyRouter(parse_policy("rules:\n  - name: r\n    action: local\n    when: {score: {gte: 0}}\n",
                                              "t.yaml"), None)
    assert no_classifier.decide(ctx()).reason != "r"  # no classifier: a score condition never holds


def test_conditions_are_anded() -> None:
    r = one_rule("{model: 'gpt-*', has_tools: false, prompt_tokens: {lt: 50}}")
    assert hits(r, ctx(model="gpt-4o"))
    assert not hits(r, ctx(model="claude"))
    assert not hits(r, ctx("word " * 100, model="gpt-4o"))


# -- actions ----------------------------------------------------------------------------------------------------
def test_first_matching_rule_wins_and_says_so() -> None:
    r = router("rules:\n  - name: first\n    action: upstream\n    when: {model: 'gpt-*'}\n"
               "  - name: second\n    action: local\n    when: {model: 'gpt-4o'}\n")
    decision = r.decide(ctx(model="gpt-4o"))
    assert (decision.tier, decision.reason, decision.detail) == ("upstream", "first", "rule 'first'")


def test_auto_compares_the_score_with_the_threshold() -> None:
    r = router("rules:\n  - name: smart\n    action: auto\n    threshold: 0.42\n")
    easy, hard = r.decide(ctx(EASY)), r.decide(ctx(HARD))
    assert (easy.tier, easy.reason, easy.threshold) == ("local", "classifier", 0.42)
    assert easy.detail == "classifier p_strong=0.1 < threshold 0.42 (rule 'smart')"
    assert hard.tier == "upstream" and hard.detail == "classifier p_strong=0.9 >= threshold 0.42 (rule 'smart')"
    assert hard.score == pytest.approx(0.9)


def test_default_action_applies_when_no_rule_matches() -> None:
    r = router("defaults: {action: local}\nrules:\n  - name: r\n    action: upstream\n    when: {model: x}\n")
    decision = r.decide(ctx(model="y"))
    assert (decision.tier, decision.reason) == ("local", "default")


def test_reject_answers_403_permission_error_with_its_message() -> None:
    r = router("rules:\n  - name: no-legacy\n    action: reject\n    when: {model: 'text-davinci-*'}\n"
               "    message: Legacy models are retired.\n")
    with pytest.raises(PolicyRejected) as info:
        r.decide(ctx(model="text-davinci-003"))
    exc = info.value
    assert (exc.status_code, exc.error_type, exc.code) == (403, "permission_error", "policy_rejected")
    assert exc.message == "Legacy models are retired."
    assert exc.headers["x-gateway-route-reason"] == "rule 'no-legacy'" and exc.reason == "no-legacy"
    r400 = router("rules:\n  - name: r\n    action: reject\n    status: 400\n    code: too_big\n    when: {prompt_tokens: {gt: 10}}\n")
    with pytest.raises(PolicyRejected) as info:
        r400.decide(ctx("word " * 100))
    assert (info.value.status_code, info.value.error_type, info.value.code) == (400, "invalid_request_error", "too_big")


def test_pii_reject_names_the_kinds_but_never_the_values() -> None:
    r = router("rules:\n  - name: no-pii\n    action: reject\n    when: {pii: any}\n")
    with pytest.raises(PolicyRejected) as info:
        r.decide(ctx("my card is 4111 1111 1111 1111 and mail bob@example.com"))
    exc = info.value
    assert (exc.status_code, exc.code) == (403, "pii_blocked")
    assert "credit_card" in exc.message and "email" in exc.message
    assert "4111" not in exc.message + exc.detail and "bob@" not in exc.message + exc.detail
    assert r.decide(ctx("no personal data here")).reason == "classifier"


PRIVACY = """
defaults: {fallback: both}
rules:
  - name: pii-local
    action: local
    when: {pii: [email, iban]}
  - name: pin-local
    action: local
    when: {model: local}
    pin_spill: true
  - name: auto
    action: auto
    threshold: 0.5
"""


def test_pii_keep_local_never_falls_back_upstream() -> None:
    r = router(PRIVACY)
    decision = r.decide(ctx("send it to jane@example.com", model="gpt-4o"))
    assert (decision.tier, decision.reason, decision.fallback) == ("local", "pii-local", None)


def test_pii_guard_also_drops_the_upstream_fallback_of_other_local_decisions() -> None:
    r = router(PRIVACY)
    # `pin-local` may spill upstream on failure (pin_spill), but the request holds a kind the policy keeps local.
    pinned = r.decide(ctx("IBAN GB82WEST12345698765432", model="local"))
    assert pinned.reason == "pii-local" and pinned.fallback is None
    plain = r.decide(ctx("hello", model="local"))
    assert (plain.reason, plain.fallback) == ("pin-local", "upstream")


def test_pii_keep_local_without_a_local_tier_is_refused() -> None:
    r = router(PRIVACY)
    with pytest.raises(PolicyRejected) as info:
        r.decide(ctx("jane@example.com", local=False))
    assert info.value.code == "pii_blocked" and info.value.status_code == 403


def test_pii_past_the_scan_cap_is_assumed_unless_told_otherwise() -> None:
    long_text = "lorem ipsum " * 200 + "jane@example.com"
    assumed = router("defaults: {pii_max_chars: 1000}\nrules:\n  - name: r\n    action: local\n    when: {pii: email}\n")
    assert assumed.decide(ctx(long_text)).reason == "r"
    ignored = router("defaults: {pii_max_chars: 1000, pii_beyond_cap: ignore}\n"
                     "rules:\n  - name: r\n    action: local\n    when: {pii: email}\n")
    assert ignored.decide(ctx(long_text)).reason != "r"


@pytest.mark.parametrize(
    ("mode", "local_fallback", "upstream_fallback"),
    [("both", "upstream", "local"), ("to_upstream", "upstream", None), ("to_local", None, "local"), ("none", None, None)],
)
def test_fallback_modes(mode: str, local_fallback: str | None, upstream_fallback: str | None) -> None:
    r = router(f"defaults: {{fallback: {mode}}}\nrules:\n  - name: l\n    action: local\n    when: {{model: small}}\n"
               "  - name: u\n    action: upstream\n    when: {model: big}\n")
    assert r.decide(ctx(model="small")).fallback == local_fallback
    assert r.decide(ctx(model="big")).fallback == upstream_fallback


def test_rule_fallback_overrides_the_default_and_spill_setting_is_honoured() -> None:
    policy = "rules:\n  - name: l\n    action: local\n    fallback: none\n    when: {model: local}\n"
    assert router(policy).decide(ctx(model="local")).fallback is None
    assert router("rules: []\ndefaults: {action: local}\n", spill_to_upstream=False).decide(ctx()).fallback is None


def test_no_upstream_sends_everything_local_with_a_clear_reason() -> None:
    r = router("rules:\n  - name: tools\n    action: upstream\n    when: {has_tools: true}\n  - name: auto\n    action: auto\n")
    scorer = r.scorer
    auto = r.decide(ctx(HARD, upstream=False))
    assert (auto.tier, auto.reason, auto.fallback) == ("local", "no_upstream", None)
    assert "no upstream configured" in auto.detail
    assert scorer.calls == 0  # nothing to decide: the classifier is not consulted
    plain = router("rules:\n  - name: big\n    action: upstream\n    when: {model: big}\n").decide(
        ctx(model="big", upstream=False))
    assert (plain.tier, plain.reason, plain.detail) == (
        "local", "no_upstream", "rule 'big' -> upstream, but no upstream is configured: local")
    # the local tier cannot honour tools: never answered as if it did
    with pytest.raises(PolicyRejected) as info:
        r.decide(ctx(upstream=False, tools=[{"type": "function", "function": {"name": "f"}}]))
    exc = info.value
    assert (exc.status_code, exc.error_type, exc.param, exc.code, exc.reason) == (
        400, "invalid_request_error", "tools", "unsupported_on_local", "unsupported_feature")
    assert exc.detail == ("rule 'tools' -> upstream, but no upstream is configured: local; "
                          "the local tier cannot honour 'tools'")


def test_no_local_tier_sends_local_decisions_upstream() -> None:
    r = router("rules:\n  - name: l\n    action: local\n    when: {model: [local, small]}\n")
    decision = r.decide(ctx(model="small", local=False))
    assert (decision.tier, decision.reason, decision.fallback) == ("upstream", "no_local", None)
    with pytest.raises(PolicyRejected) as info:  # a pin is never answered by the other tier
        r.decide(ctx(model="local", local=False))
    assert (info.value.status_code, info.value.param, info.value.code) == (400, "model", "local_not_configured")


def test_unavailable_or_failing_classifier_degrades_to_the_configured_tier() -> None:
    spec = parse_policy("defaults: {classifier_unavailable: upstream}\nrules: []\n", "t.yaml")
    missing = PolicyRouter(spec, None, scorer_problem="router model file not found: /x/router.skops")
    decision = missing.decide(ctx())
    assert (decision.tier, decision.reason) == ("upstream", "classifier_unavailable")
    assert "router model file not found" in decision.detail
    broken = PolicyRouter(spec, BrokenScorer()).decide(ctx())
    assert (broken.tier, broken.reason) == ("upstream", "classifier_error")


def test_cache_override_is_carried_on_the_decision() -> None:
    r = one_rule("{model: x}", extra="    cache: false\n")
    assert r.decide(ctx(model="x")).cacheable is False
    assert r.decide(ctx(model="y")).cacheable is None


# -- cost: expensive features only when needed ------------------------------------------------------------------
def test_classifier_and_pii_scan_run_only_when_a_rule_needs_them() -> None:
    r = router("rules:\n  - name: pin\n    action: local\n    when: {model: local}\n"
               "  - name: pii\n    action: local\n    when: {pii: email}\n  - name: auto\n    action: auto\n")
    features = r.features(ctx(model="local"))
    assert r.match(features).name == "pin"
    assert not features._pii_checked and features.score_if_computed is None
    features = r.features(ctx(model="gpt-4o"))
    assert r.match(features).name == "auto"
    assert features._pii_checked == {"email"}


def test_default_policy_pins_and_auto_routes_any_model_name() -> None:
    from gateway.routing.policy import load_policy

    r = PolicyRouter(load_policy(None), KeywordScorer())
    assert r.decide(ctx(HARD, model="gpt-4o")).reason == "classifier"
    assert r.decide(ctx(HARD, model="auto")).tier == "upstream"
    assert r.decide(ctx(EASY, model="whatever-model")).tier == "local"
    assert r.decide(ctx(HARD, model="local")).tier == "local"
    assert r.decide(ctx(EASY, model="upstream")).tier == "upstream"
    assert r.decide(ctx(HARD, headers={"x-gateway-route": "local"})).reason == "pin-local-header"
    assert r.decide(ctx(EASY, headers={"x-gateway-route": "upstream"})).reason == "pin-upstream-header"
    # pins: never answered by the other tier, not even on failure
    assert r.decide(ctx(model="local")).fallback is None
    assert r.decide(ctx(model="upstream")).fallback is None
    assert r.decide(ctx(headers={"x-gateway-route": "local"})).fallback is None
    assert r.decide(ctx(HARD, model="gpt-4o")).fallback == "local"


# -- metrics ----------------------------------------------------------------------------------------------------
def test_classifier_duration_and_rejections_are_recorded(tmp_path: Any) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - name: nope\n    action: reject\n    when: {model: banned}\n  - name: auto\n    action: auto\n")
    metrics = GatewayMetrics()
    source = RouterSource(policy_path=str(policy))
    spec = parse_policy(policy.read_text(), str(policy))
    from gateway.routing.reloadable import build_router

    holder = ReloadableRouter(source, metrics, initial=build_router(source, spec, KeywordScorer(), None, metrics))
    decision: RouteDecision = holder.decide(ctx(EASY))
    assert decision.tier == "local"
    with pytest.raises(PolicyRejected) as caught:
        holder.decide(ctx(model="banned"))
    from gateway.accounting import Accounting  # rejections are counted by accounting, whatever the router
    from gateway.exchange import Exchange

    rejected = Exchange("rid", {}, 0.0)
    rejected.reason = caught.value.reason
    from gateway.costs import CostModel
    from gateway.settings import CostSettings

    Accounting(metrics, CostModel(CostSettings(), "gpt-4o-mini")).rejected(rejected)
    registry = metrics.registry
    assert registry.get_sample_value("slm_gateway_classifier_duration_seconds_count") == 1
    assert registry.get_sample_value("slm_gateway_routing_decisions_total", {"tier": "rejected", "reason": "nope"}) == 1


# -- capabilities: what the chosen tier must honour -----------------------------------------------------------
TOOL = [{"type": "function", "function": {"name": "f"}}]
PICTURE = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:x"}}]


def test_required_features_name_exactly_what_the_request_asks_for() -> None:
    from gateway.routing.capabilities import feature_param, required_features
    from gateway.tiers.base import NO_FEATURES

    def needs(content: Any = EASY, **extra: Any) -> frozenset[str]:
        return required_features(ctx(content, **extra).request)

    assert needs() is NO_FEATURES  # the common request allocates nothing
    assert needs([{"type": "text", "text": "hi"}], n=1, logprobs=False, top_logprobs=0) is NO_FEATURES
    assert needs(response_format={"type": "text"}) is NO_FEATURES
    assert needs(tools=TOOL, tool_choice="none") is NO_FEATURES
    assert needs(tools=[]) is NO_FEATURES
    assert needs(tools=TOOL) == {"tools"}
    assert needs(tools=TOOL, tool_choice="required") == {"tools"}
    assert needs(functions=[{"name": "f"}]) == {"tools"}
    assert needs(functions=[{"name": "f"}], function_call="none") is NO_FEATURES
    assert needs(response_format={"type": "json_object"}) == {"response_format"}
    assert needs(response_format={"type": "json_schema", "json_schema": {"name": "x"}}) == {"response_format"}
    assert needs(PICTURE) == {"images"}
    assert needs(n=2) == {"n"}
    assert needs(logprobs=True) == {"logprobs"} == needs(top_logprobs=3)
    assert needs(PICTURE, tools=TOOL, n=4, logprobs=True, response_format={"type": "json_object"}) == {
        "tools", "images", "n", "logprobs", "response_format"}
    assert feature_param(ctx(PICTURE).request, "images") == "messages[0].content[1]"
    assert feature_param(ctx(top_logprobs=2).request, "logprobs") == "top_logprobs"
    assert feature_param(ctx(functions=[{"name": "f"}]).request, "tools") == "functions"


def test_auto_sends_what_local_cannot_honour_upstream_without_the_classifier() -> None:
    r = router("rules:\n  - name: auto\n    action: auto\n    threshold: 0.5\n")
    decision = r.decide(ctx(EASY, n=2))
    assert (decision.tier, decision.reason, decision.detail, decision.fallback) == (
        "upstream", "needs_upstream", "the local tier cannot honour 'n': upstream (rule 'auto')", None)
    assert r.scorer.calls == 0 and decision.score is None
    assert r.decide(ctx(EASY)).tier == "local" and r.scorer.calls == 1  # the control


def test_a_local_rule_moves_upstream_and_loses_its_local_fallback() -> None:
    r = router("rules:\n  - name: small\n    action: local\n    when: {model: small}\n"
               "  - name: big\n    action: upstream\n    when: {model: big}\n")
    moved = r.decide(ctx(model="small", tools=TOOL))
    assert (moved.tier, moved.reason, moved.detail, moved.fallback) == (
        "upstream", "needs_upstream", "rule 'small'; the local tier cannot honour 'tools': upstream", None)
    assert r.decide(ctx(model="big", logprobs=True)).fallback is None  # local cannot take it on failure
    assert r.decide(ctx(model="big")).fallback == "local"


def test_a_local_tier_that_gains_a_feature_serves_it() -> None:
    r = PolicyRouter(parse_policy("rules: []\ndefaults: {action: local}\n", "t.yaml"), KeywordScorer())
    for model, tier in (("gpt-4o", "upstream"), ("local", None)):
        c = ctx(model=model, tools=TOOL)
        capable = RouteContext(request=c.request, headers={}, has_upstream=True, has_local=True,
                               local_features=frozenset({"tools"}))
        assert (r.decide(capable).tier, r.decide(capable).reason) == ("local", "default")
        if tier is None:
            with pytest.raises(PolicyRejected):  # pinned local, and today's local tier lacks tools
                r.decide(c)
        else:
            assert r.decide(c).tier == tier


def test_personal_data_kept_local_is_refused_rather_than_sent_upstream_for_a_feature() -> None:
    r = router(PRIVACY)
    with pytest.raises(PolicyRejected) as info:
        r.decide(ctx("mail jane@example.com", model="gpt-4o", response_format={"type": "json_object"}))
    assert (info.value.status_code, info.value.param, info.value.code) == (400, "response_format", "unsupported_on_local")
    with pytest.raises(PolicyRejected):  # caught by the guard too when another local rule matched
        router("rules:\n  - name: pii\n    action: local\n    when: {pii: email, model: x}\n"
               "  - name: any-local\n    action: local\n").decide(ctx("mail jane@example.com", tools=TOOL))


def test_pin_spill_is_validated() -> None:
    from gateway.routing.policy import PolicyError

    with pytest.raises(PolicyError, match="pin_spill only applies to actions 'local' and 'upstream'"):
        parse_policy("rules:\n  - name: a\n    action: auto\n    pin_spill: true\n", "t.yaml")
    with pytest.raises(PolicyError, match="cannot let pinned requests spill upstream"):
        parse_policy("rules:\n  - name: p\n    action: local\n    when: {pii: email}\n    pin_spill: true\n", "t.yaml")
    spilling = router("defaults: {pin_spill: true}\nrules:\n  - name: l\n    action: local\n    when: {model: local}\n")
    assert spilling.decide(ctx(model="local")).fallback == "upstream"


def test_tool_count_counts_tools_else_legacy_functions() -> None:
    r = one_rule("{tool_count: {gt: 2}}")
    three = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(3)]
    assert hits(r, ctx(tools=three)) and not hits(r, ctx(tools=three[:2])) and not hits(r, ctx())
    assert hits(r, ctx(functions=[{"name": f"f{i}"} for i in range(3)]))
    from gateway.routing.policy import PolicyError

    with pytest.raises(PolicyError, match="when.tool_count: empty range"):
        parse_policy("rules:\n  - name: r\n    action: upstream\n    when: {tool_count: {gt: 5, lt: 3}}\n", "t.yaml")


LOCAL_AGENT = frozenset({"tools", "response_format"})  # what LlamaCppBackend honours


def agent_ctx(content: str, **extra: Any) -> RouteContext:
    c = ctx(content, **extra)
    return RouteContext(request=c.request, headers={}, has_upstream=True, has_local=True, local_features=LOCAL_AGENT)


def test_default_policy_keeps_tools_and_structured_output_local_when_the_classifier_allows() -> None:
    from gateway.routing.policy import load_policy

    r = PolicyRouter(load_policy(None), KeywordScorer())  # calibrated threshold: 0.6 on the scorer's 0..1 scale
    easy_tool = r.decide(agent_ctx(EASY, tools=TOOL))
    assert (easy_tool.tier, easy_tool.reason, easy_tool.detail, easy_tool.fallback) == (
        "local", "classifier", "classifier p_strong=0.1 < threshold 0.6 (rule 'auto')", "upstream")
    hard_tool = r.decide(agent_ctx(HARD, tools=TOOL))
    assert (hard_tool.tier, hard_tool.reason, hard_tool.detail) == (
        "upstream", "classifier", "classifier p_strong=0.9 >= threshold 0.6 (rule 'auto')")
    six = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(6)]
    many = r.decide(agent_ctx(EASY, tools=six))
    assert (many.tier, many.reason, many.detail, many.fallback) == (
        "upstream", "many-tools-upstream", "rule 'many-tools-upstream'", "local")
    assert r.decide(agent_ctx(EASY, tools=six[:5])).reason == "classifier"  # five tools: still the classifier's call
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    structured = r.decide(agent_ctx(EASY, response_format=schema))
    assert (structured.tier, structured.reason, structured.detail, structured.fallback) == (
        "local", "classifier", "classifier p_strong=0.1 < threshold 0.6 (rule 'auto')", "upstream")
    # a local tier without the features (a FakeBackend, an older build): the capability check still sends it up
    plain = r.decide(ctx(EASY, tools=TOOL))
    assert (plain.tier, plain.reason, plain.fallback) == ("upstream", "needs_upstream", None)


def test_shipped_policies_route_tool_requests_by_their_stated_rules() -> None:
    from gateway.routing.policy import DEFAULT_POLICY_PATH, load_policy

    def decide(name: str, content: str, **extra: Any) -> tuple[str, str]:
        spec = load_policy(DEFAULT_POLICY_PATH.parent / f"{name}.yaml")
        d = PolicyRouter(spec, KeywordScorer()).decide(agent_ctx(content, **extra))
        return d.tier, d.reason

    json_mode = {"type": "json_object"}
    assert decide("cost-saver", EASY, tools=TOOL) == ("local", "short-prompts-local")
    assert decide("cost-saver", EASY, response_format=json_mode) == ("local", "short-prompts-local")
    assert decide("cost-saver", HARD, response_format=json_mode) == ("upstream", "classifier")  # p_strong 0.9: hard
    assert decide("privacy-first", EASY, tools=TOOL) == ("local", "classifier")
    assert decide("privacy-first", "mail jane@example.com", tools=TOOL) == ("local", "pii-keep-local")
    mini = "gpt-4o-mini"  # quality-first sends gpt-4o upstream by name
    assert decide("quality-first", EASY, model=mini, tools=TOOL) == ("upstream", "capabilities-upstream")
    assert decide("quality-first", EASY, model=mini, response_format=json_mode) == ("upstream", "structured-output-upstream")
    assert decide("quality-first", EASY, model=mini) == ("local", "classifier")  # the control

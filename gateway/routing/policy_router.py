"""The policy router: evaluates a validated policy (first matching rule wins) with an optional classifier.

A `PolicyRouter` is immutable once built; reloading builds a new one (see `gateway.routing.reloadable`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import GatewayError
from gateway.routing.calibration import CalibrationError, calibrate
from gateway.routing.capabilities import first_missing, required_features
from gateway.routing.conditions import CompiledWhen, RequestFeatures
from gateway.routing.decision import RouteContext, RouteDecision, Tier
from gateway.routing.policy import (
    DEFAULT_THRESHOLD,
    Action,
    Fallback,
    PolicyError,
    PolicySpec,
    Rule,
    When,
    check_tier_names,
    keeps_pii_local,
)
from gateway.routing.score_memo import ScoreMemo
from gateway.routing.static import pinned_tier

REJECTED = "rejected"


class PolicyRejected(GatewayError):
    """The policy refuses the request (action `reject`): 403 permission_error, or 400 when the rule says so."""

    def __init__(
        self, message: str, *, status: int, code: str, reason: str, detail: str, param: str | None = None
    ) -> None:
        super().__init__(
            message,
            status_code=status,
            error_type="permission_error" if status == 403 else "invalid_request_error",
            param=param,
            code=code,
            headers={"x-gateway-route": REJECTED, "x-gateway-route-reason": detail},
        )
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to evaluate: compiled conditions, resolved fallback mode and threshold."""

    name: str
    action: Action
    when: CompiledWhen
    fallback: Fallback
    keeps_pii_local: bool
    threshold: float | None = None
    threshold_source: str = ""
    message: str | None = None
    status: int = 403
    code: str | None = None
    cacheable: bool | None = None
    cache_kind: Literal["exact", "semantic"] | None = None
    pin_spill: bool = False
    fallback_tiers: tuple[str, ...] | None = None
    slm_tier: str = "local"


def needs_classifier(spec: PolicySpec) -> bool:
    """Whether any rule (or the default action) consults the classifier (its score or its familiarity)."""
    return spec.defaults.action == "auto" or any(
        r.action == "auto" or r.when.score is not None or r.when.familiarity is not None for r in spec.rules
    )


def _fmt(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"


class PolicyRouter:
    """Routes by a policy. `scorer` is the classifier (anything with `score_messages`), or None if unavailable."""

    def __init__(
        self,
        spec: PolicySpec,
        scorer: Any | None,
        *,
        local_context_tokens: int = 4096,
        spill_to_upstream: bool = True,
        scorer_problem: str | None = None,
        observe_score_seconds: Callable[[float], None] | None = None,
        slm_tiers: frozenset[str] | None = None,
    ) -> None:
        """`slm_tiers`: the named SLM tiers the gateway has; given, a policy naming another tier is a PolicyError."""
        if slm_tiers is not None:
            check_tier_names(spec, slm_tiers)
        self.spec = spec
        self.scorer = scorer
        self._memo = ScoreMemo(scorer) if scorer is not None else None  # exact repeats scored once (this router's)
        problem = scorer_problem or ("no classifier loaded" if scorer is None else None)
        # it ends up in a response header: keep it one short ASCII line
        self.scorer_problem = problem and problem.encode("ascii", "replace").decode()[:200].replace("\n", " ")
        self.spill_to_upstream = spill_to_upstream
        self._observe = observe_score_seconds
        self._calibrated: dict[float, tuple[float, str]] = {}
        self.rules: tuple[CompiledRule, ...] = tuple(
            self._compile(i, rule, local_context_tokens) for i, rule in enumerate(spec.rules)
        )
        d = spec.defaults
        default = Rule(name="default", action=d.action, message=d.message, pin_spill=d.pin_spill)
        self.default_rule = self._compile(None, default, local_context_tokens)
        guard: list[str] = []
        for rule in self.rules:
            if rule.keeps_pii_local:
                guard += [k for k in rule.when.pii_kinds if k not in guard]
        self.guard_kinds: tuple[str, ...] = tuple(guard)
        """PII kinds the policy keeps local: a request holding them never gets an upstream fallback."""

    # -- building ------------------------------------------------------------------------------------------
    def _threshold(self, index: int | None, rule: Rule) -> tuple[float | None, str]:
        if rule.action != "auto" or self.scorer is None:
            return None, ""
        d = self.spec.defaults
        if rule.threshold is not None:
            return rule.threshold, "rule threshold"
        share = rule.target_local_share
        if share is None and d.threshold is not None:
            return d.threshold, "policy default threshold"
        share = share if share is not None else d.target_local_share
        if share is None:
            return DEFAULT_THRESHOLD, "built-in default threshold"
        if share not in self._calibrated:
            try:
                self._calibrated[share] = calibrate(self.scorer, share)
            except (CalibrationError, ValueError, TypeError) as exc:
                where = f"rules[{index}] {rule.name!r}" if index is not None else "defaults"
                raise PolicyError(f"policy {self.spec.path}: {where}: cannot calibrate target_local_share: {exc}")
        value, source = self._calibrated[share]
        return value, f"target_local_share {share} from {source}"

    def _compile(self, index: int | None, rule: Rule, local_context_tokens: int) -> CompiledRule:
        threshold, source = self._threshold(index, rule)
        keep_local = keeps_pii_local(rule)
        fallback = rule.fallback or self.spec.defaults.fallback
        if keep_local and fallback in ("both", "to_upstream"):
            fallback = "none"  # inherited default: a keep-local PII rule never falls back upstream
        pii_rule = rule.when.pii is not None
        return CompiledRule(
            name=rule.name,
            action=rule.action,
            when=CompiledWhen(rule.when if index is not None else When(), local_context_tokens),
            fallback=fallback,
            keeps_pii_local=keep_local,
            threshold=threshold,
            threshold_source=source,
            message=rule.message,
            status=rule.status or 403,
            code=rule.code or ("pii_blocked" if pii_rule else "policy_rejected"),
            cacheable=None if rule.cache is None else rule.cache is not False,
            cache_kind=rule.cache if isinstance(rule.cache, str) else None,
            pin_spill=rule.pin_spill if rule.pin_spill is not None else self.spec.defaults.pin_spill,
            fallback_tiers=tuple(rule.fallback_tiers) if rule.fallback_tiers is not None else None,
            slm_tier=rule.slm_tier or "local",
        )

    def thresholds(self) -> dict[str, tuple[float, str]]:
        """Rule name -> (threshold, where it came from), for auto rules."""
        rules = (*self.rules, self.default_rule)
        return {r.name: (r.threshold, r.threshold_source) for r in rules if r.threshold is not None}

    # -- deciding ------------------------------------------------------------------------------------------
    def features(self, ctx: RouteContext) -> RequestFeatures:
        d = self.spec.defaults
        return RequestFeatures(
            ctx,
            self._memo,
            pii_max_chars=d.pii_max_chars,
            pii_beyond_cap=d.pii_beyond_cap,
            observe_score_seconds=self._observe,
        )

    def match(self, features: RequestFeatures) -> CompiledRule:
        """The first rule whose conditions hold, else the default rule."""
        for rule in self.rules:
            if rule.when.matches(features):
                return rule
        return self.default_rule

    def decide(self, ctx: RouteContext) -> RouteDecision:
        features = self.features(ctx)
        return self._apply(self.match(features), features, ctx)

    def _apply(self, rule: CompiledRule, f: RequestFeatures, ctx: RouteContext) -> RouteDecision:
        label = f"rule '{rule.name}'"
        if rule.action == "reject":
            raise self._rejection(rule, f, label)
        needs = required_features(ctx.request)
        pinned = pinned_tier(ctx)
        action = rule.action
        if pinned is not None and action == "auto" and pinned[0] in ctx.slm_tiers:
            action = pinned[0]  # a named SLM tier asked for by name: the classifier is not consulted
            label = f"{label}: pinned by {pinned[1]}"
        pin: Tier | None = None  # the tier the client pinned, when this rule sends the request there
        if pinned is not None and pinned[0] == action:
            pin = pinned[0]
            if not ctx.has(pin):
                raise PolicyRejected(
                    f"The request is pinned to the {pin} tier ({pinned[1]}), which this gateway does not have.",
                    status=400, code=f"{pin}_not_configured", reason="pin_unavailable", param="model",
                    detail=f"{label}: pinned by {pinned[1]}, but no {pin} tier is configured",
                )
        threshold: float | None = None
        if action == "auto":
            tier, reason, detail, threshold = self._auto(rule, f, ctx, needs)
        else:
            tier, reason, detail = action, rule.name if action == rule.action else "pinned", label
        if tier == "upstream" and not ctx.has_upstream:
            tier, reason = rule.slm_tier if ctx.has(rule.slm_tier) else "local", "no_upstream"
            detail = f"{detail} -> upstream, but no upstream is configured: {tier}"
        elif tier != "upstream" and not ctx.has(tier):
            if rule.keeps_pii_local:
                raise PolicyRejected(
                    "The request contains personal data that this gateway's policy keeps on the local model, "
                    "and no local model is configured.",
                    status=403, code="pii_blocked", reason=rule.name,
                    detail=f"{label} keeps personal data local, but no {tier} tier is configured",
                )
            missing, tier, reason = tier, "upstream", "no_local"
            detail = f"{detail} -> {missing}, but no {missing} tier is configured: upstream"
        if needs and needs - ctx.features_of(tier):
            tier, reason, detail = self._capable(rule, f, ctx, tier, needs, pinned if pin == tier else None, detail)
        chain = self._fallback(rule, tier, ctx, needs, pinned=pin == tier)
        if "upstream" in chain and self.guard_kinds and f.pii(self.guard_kinds):
            chain = tuple(t for t in chain if t != "upstream")
            detail += "; no upstream fallback: personal data stays local"
        familiarity = f.familiarity_if_computed
        if familiarity is not None:  # computed for a rule that asked: say it (a percentile of the training prompts')
            detail += f"; familiarity {_fmt(familiarity)} (training-prompt percentile)"
        return RouteDecision(
            tier=tier,
            reason=reason,
            detail=detail,
            fallback=chain[0] if chain else None,
            then=chain[1:],
            score=f.score_if_computed,
            threshold=threshold,
            cacheable=rule.cacheable,
            cache_kind=rule.cache_kind,
            familiarity=familiarity,
            small_tier=rule.slm_tier,
        )

    def _capable(
        self,
        rule: CompiledRule,
        f: RequestFeatures,
        ctx: RouteContext,
        tier: Tier,
        needs: frozenset[str],
        pinned: tuple[Tier, str] | None,
        detail: str,
    ) -> tuple[Tier, str, str]:
        """`tier` lacks a feature the request needs: the other tier if it has them all, else a 400 naming the
        field. Never for a request pinned to `tier`, nor upstream for personal data the policy keeps local."""
        feature, param = first_missing(ctx.request, needs - ctx.features_of(tier))
        other: Tier = "upstream" if tier != "upstream" else rule.slm_tier if ctx.has(rule.slm_tier) else "local"
        why = f"the {tier} tier cannot honour '{param}'"
        if pinned is not None:
            message = f"The request is pinned to the {tier} tier ({pinned[1]}), which does not support '{param}'."
        elif other == "upstream" and (rule.keeps_pii_local or (self.guard_kinds and f.pii(self.guard_kinds))):
            message = (f"The request contains personal data that this gateway keeps on the local model, "
                       f"which does not support '{param}'.")
        elif ctx.has(other) and not needs - ctx.features_of(other):
            return other, f"needs_{other}", f"{detail}; {why}: {other}"
        elif not ctx.has(other):
            message = f"'{param}' is not supported by the {tier} model, and no {other} is configured on this gateway."
        else:
            message = f"No tier of this gateway supports every feature this request asks for ('{param}' on {tier})."
        raise PolicyRejected(
            message, status=400, code=f"unsupported_on_{tier}", reason="unsupported_feature", param=param,
            detail=f"{detail}; {why}",
        )

    def _auto(
        self, rule: CompiledRule, f: RequestFeatures, ctx: RouteContext, needs: frozenset[str]
    ) -> tuple[Tier, str, str, float | None]:
        label = f"rule '{rule.name}'"
        small = rule.slm_tier  # the SLM tier that gets what the classifier leaves to a small model
        if not ctx.has_upstream:
            return small, "no_upstream", f"no upstream configured: {small} ({label})", None
        if not ctx.has(small):
            return "upstream", "no_local", f"no {small} tier configured: upstream ({label})", None
        if needs and needs - ctx.features_of(small) and not needs - ctx.upstream_features:
            _, param = first_missing(ctx.request, needs - ctx.features_of(small))
            return "upstream", "needs_upstream", f"the {small} tier cannot honour '{param}': upstream ({label})", None
        unavailable = self.spec.defaults.classifier_unavailable
        if unavailable == "local":
            unavailable = small
        if self.scorer is None or rule.threshold is None:
            tier: Tier = unavailable
            return tier, "classifier_unavailable", f"classifier unavailable ({self.scorer_problem}): {tier} ({label})", None
        try:
            score = f.score()
        except Exception as exc:  # a scoring bug must not fail the request
            tier = unavailable
            return tier, "classifier_error", f"classifier failed ({type(exc).__name__}): {tier} ({label})", None
        threshold = rule.threshold
        if score >= threshold:
            detail = f"classifier p_strong={_fmt(score)} >= threshold {_fmt(threshold)} ({label})"
            return "upstream", "classifier", detail, threshold
        detail = f"classifier p_strong={_fmt(score)} < threshold {_fmt(threshold)} ({label})"
        return small, "classifier", detail if small == "local" else f"{detail}: {small}", threshold

    def _fallback(
        self, rule: CompiledRule, tier: Tier, ctx: RouteContext, needs: frozenset[str], *, pinned: bool
    ) -> tuple[Tier, ...]:
        """The tiers to retry on, in order, when `tier` fails: none for a pinned request (unless `pin_spill`),
        nor one that lacks a feature the request needs, nor upstream for an SLM tier when spilling is off."""
        if pinned and not rule.pin_spill:
            return ()
        if rule.fallback_tiers is not None:
            chain = [t for t in rule.fallback_tiers if t != tier and ctx.has(t)]
            if tier != "upstream" and not (self.spill_to_upstream and not rule.keeps_pii_local):
                chain = [t for t in chain if t != "upstream"]
        else:
            mode = rule.fallback
            if tier != "upstream":
                allowed = mode in ("both", "to_upstream") and self.spill_to_upstream and not rule.keeps_pii_local
                chain = ["upstream"] if allowed and ctx.has_upstream else []
            else:
                chain = ["local"] if mode in ("both", "to_local") and ctx.has_local else []
        return tuple(t for t in chain if not (needs and needs - ctx.features_of(t)))

    def _rejection(self, rule: CompiledRule, f: RequestFeatures, label: str) -> PolicyRejected:
        message = rule.message
        if rule.when.pii_kinds:
            found = ", ".join(sorted(f.pii(rule.when.pii_kinds))) or "personal data"
            message = message or f"The request contains personal data ({found}) and this gateway's policy does not allow it."
            label = f"{label}: {found}"
        message = message or "This gateway's routing policy does not allow this request."
        return PolicyRejected(message, status=rule.status, code=rule.code or "policy_rejected", reason=rule.name, detail=label)

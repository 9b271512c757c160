"""The policy file format (msgspec structs, unknown fields refused) and its loader.

A policy is an ordered list of rules; the first rule whose `when` conditions all hold decides the route.
`load_policy(path)` returns a validated `PolicySpec` or raises `PolicyError` with one line naming the file and
the rule (index and name). See policies/README.md for the format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from gateway.routing.pii import expand_kinds
from gateway.settings import TIER_NAME, SettingsError

DEFAULT_POLICY_PATH: Path = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
"""The shipped default policy (the `policies` directory sits beside `gateway` in the repo and in the wheel)."""

Action = str
""""local", "upstream", "auto", "reject", or the name of an SLM tier (`slm_tiers` in the settings)."""
BUILTIN_ACTIONS = frozenset({"local", "upstream", "auto", "reject"})
NOT_SLM_ACTIONS = frozenset({"upstream", "auto", "reject"})
Fallback = Literal["both", "to_upstream", "to_local", "none"]
RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RESERVED_NAMES = frozenset(
    {"default", "classifier", "classifier_unavailable", "classifier_error", "no_upstream", "no_local", "pinned",
     "needs_upstream", "needs_local", "unsupported_feature", "pin_unavailable"}
)
"""Reason labels the router itself uses; rule names may not take them."""
HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


class PolicyError(SettingsError):
    """A policy file is missing or invalid; the message is one line naming the file (and rule)."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Range(_Strict):
    """Numeric bounds; all given bounds must hold (`gte: 1000, lt: 3000`)."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def check(self) -> str | None:
        """A problem with the bounds, or None."""
        if self.gt is None and self.gte is None and self.lt is None and self.lte is None:
            return "a range needs at least one of gt, gte, lt, lte"
        if self.gt is not None and self.gte is not None or self.lt is not None and self.lte is not None:
            return "give gt or gte (and lt or lte), not both"
        low = self.gt if self.gt is not None else self.gte
        high = self.lt if self.lt is not None else self.lte
        if low is not None and high is not None and low >= high:
            return f"empty range: lower bound {low} is not below upper bound {high}"
        return None


class When(_Strict):
    """Conditions of a rule; every condition given must hold (absent conditions are ignored)."""

    model: str | list[str] | None = None
    headers: dict[str, str | list[str]] | None = None
    tag: str | list[str] | None = None
    user: str | list[str] | None = None
    prompt_tokens: Range | None = None
    exceeds_local_context: bool | None = None
    has_tools: bool | None = None
    tool_count: Range | None = None
    """How many tools (or legacy `functions`) the request offers, in range."""
    has_images: bool | None = None
    response_format: bool | str | list[str] | None = None
    stream: bool | None = None
    pii: str | list[str] | None = None
    score: Range | None = None
    familiarity: Range | None = None
    """How familiar the prompt is to the classifier's training prompts, in range (a percentile in [0, 1]: 0.05 is
    less familiar than 95% of them); never holds without a classifier that reports familiarity."""


class Rule(_Strict):
    """One rule: conditions, and the action taken when they hold."""

    name: str
    action: Action
    when: When = msgspec.field(default_factory=When)
    description: str | None = None
    fallback: Fallback | None = None
    threshold: float | None = None
    target_local_share: float | None = None
    message: str | None = None
    status: Literal[400, 403] | None = None
    code: str | None = None
    cache: bool | Literal["exact", "semantic"] | None = None
    """false: never cached; true / exact: cached (exact repeats only, for `exact`); semantic: cached, and
    paraphrases answered by the semantic cache (when the gateway has one)."""
    pin_spill: bool | None = None
    """Overrides `defaults.pin_spill` for requests this rule sends to the tier they pinned."""
    fallback_tiers: list[str] | None = None
    """The tiers tried in order when the chosen one fails (instead of `fallback`), e.g. `[local, upstream]`."""
    slm_tier: str | None = None
    """Action `auto`: the SLM tier that serves what the classifier leaves to a small model (default `local`)."""


class Defaults(_Strict):
    """Policy-wide settings: what happens when no rule matches, fallback, classifier threshold, PII scan limits."""

    action: Action = "auto"
    fallback: Fallback = "both"
    threshold: float | None = None
    target_local_share: float | None = None
    classifier_unavailable: Literal["local", "upstream"] = "local"
    pii_max_chars: int = 65536
    pii_beyond_cap: Literal["assume", "ignore"] = "assume"
    message: str | None = None
    pin_spill: bool = False
    """A request pinned to a tier (`model: local|upstream`, header `x-gateway-route`) that the matching rule
    sends there may fall back to the other tier on failure only when this is true (default: never)."""


class PolicySpec(_Strict):
    """A whole policy file."""

    version: Literal[1] = 1
    name: str | None = None
    description: str | None = None
    defaults: Defaults = msgspec.field(default_factory=Defaults)
    rules: list[Rule] = msgspec.field(default_factory=list)
    path: str = ""
    """Where it was loaded from (set by the loader, not read from the file)."""

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem or "policy"


DEFAULT_THRESHOLD = 0.5


def as_list(value: str | list[str] | None) -> list[str]:
    """A condition value that may be one string or a list of strings, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def keeps_pii_local(rule: Rule) -> bool:
    """A rule that sends requests with personal data to an SLM tier: it must never fall back upstream."""
    return rule.action not in NOT_SLM_ACTIONS and rule.when.pii is not None


def _check_tiers(rule: Rule) -> str | None:
    """A problem with the tier names of a rule (whether each is configured is checked when the router is built)."""
    if rule.action not in BUILTIN_ACTIONS and not re.match(TIER_NAME, rule.action):
        return f"action must be local, upstream, auto, reject or the name of an SLM tier, got {rule.action!r}"
    if rule.fallback_tiers is not None:
        if rule.fallback is not None:
            return "give fallback or fallback_tiers, not both"
        if rule.action == "reject":
            return "fallback_tiers does not apply to action 'reject'"
        for name in rule.fallback_tiers:
            if name in NOT_SLM_ACTIONS - {"upstream"} or not re.match(TIER_NAME, name):
                return f"fallback_tiers: {name!r} is not a tier name"
        if len(set(rule.fallback_tiers)) != len(rule.fallback_tiers) or rule.action in rule.fallback_tiers:
            return "fallback_tiers: each tier once, and not the rule's own action"
        if keeps_pii_local(rule) and "upstream" in rule.fallback_tiers:
            return "a rule that keeps personal data local cannot fall back upstream"
    if rule.slm_tier is not None:
        if rule.action != "auto":
            return "slm_tier only applies to action 'auto'"
        if rule.slm_tier in NOT_SLM_ACTIONS or not re.match(TIER_NAME, rule.slm_tier):
            return f"slm_tier: {rule.slm_tier!r} is not the name of an SLM tier"
    return None


def check_tier_names(spec: PolicySpec, slm_tiers: frozenset[str]) -> PolicySpec:
    """`spec`, if every tier it names (actions, `fallback_tiers`, `slm_tier`) is local, upstream or one of the
    gateway's `slm_tiers`; else PolicyError naming the rule and the tier."""
    have = ", ".join(["local", "upstream", *sorted(slm_tiers)])
    known = BUILTIN_ACTIONS | slm_tiers
    if spec.defaults.action not in known:
        raise PolicyError(f"policy {spec.path}: defaults: action {spec.defaults.action!r} is not a configured tier "
                          f"(slm_tiers; this gateway has: {have})")
    for index, rule in enumerate(spec.rules):
        for name in (rule.action, *(rule.fallback_tiers or ()), *([rule.slm_tier] if rule.slm_tier else [])):
            if name not in known:
                raise PolicyError(f"policy {spec.path}: rules[{index}] {rule.name!r}: tier {name!r} is not "
                                  f"configured (slm_tiers; this gateway has: {have})")
    return spec


def _check_rule(rule: Rule, defaults: Defaults) -> str | None:
    """A problem with one rule (semantic checks types cannot express), or None."""
    if not RULE_NAME.match(rule.name):
        return "name must be 1-64 characters of letters, digits, '_', '.', '-' (it is a metrics label)"
    if rule.name in RESERVED_NAMES:
        return f"name {rule.name!r} is reserved (reserved: {', '.join(sorted(RESERVED_NAMES))})"
    if problem := _check_tiers(rule):
        return problem
    when = rule.when
    for field in ("prompt_tokens", "tool_count", "score", "familiarity"):
        rng: Range | None = getattr(when, field)
        if rng is not None and (problem := rng.check()):
            return f"when.{field}: {problem}"
    for field in ("score", "familiarity"):
        unit: Range | None = getattr(when, field)
        for bound in (unit.gt, unit.gte, unit.lt, unit.lte) if unit is not None else ():
            if bound is not None and not 0.0 <= bound <= 1.0:
                return f"when.{field}: bounds must be within [0, 1], got {bound}"
    for name in (when.headers or {}):
        if not HEADER_NAME.match(name):
            return f"when.headers: header names must be lower-case tokens, got {name!r}"
    for field in ("model", "tag", "user"):
        if getattr(when, field) is not None and not as_list(getattr(when, field)):
            return f"when.{field}: give at least one pattern"
    if when.pii is not None:
        try:
            if not expand_kinds(as_list(when.pii)):
                return "when.pii: give at least one kind (or 'any')"
        except ValueError as exc:
            return f"when.pii: {exc}"
    if rule.threshold is not None and rule.target_local_share is not None:
        return "give threshold or target_local_share, not both"
    if (rule.threshold is not None or rule.target_local_share is not None) and rule.action != "auto":
        return "threshold and target_local_share only apply to action 'auto'"
    if rule.threshold is not None and not 0.0 <= rule.threshold <= 1.0:
        return f"threshold must be within [0, 1], got {rule.threshold}"
    if rule.target_local_share is not None and not 0.0 < rule.target_local_share < 1.0:
        return f"target_local_share must be between 0 and 1 (exclusive), got {rule.target_local_share}"
    if rule.action != "reject" and (rule.message is not None or rule.status is not None or rule.code is not None):
        return "message, status and code only apply to action 'reject'"
    if rule.code is not None and not RULE_NAME.match(rule.code):
        return "code must be 1-64 characters of letters, digits, '_', '.', '-'"
    if rule.action == "reject" and rule.fallback is not None:
        return "fallback does not apply to action 'reject'"
    if rule.action not in ("local", "upstream") and rule.pin_spill is not None:
        return "pin_spill only applies to actions 'local' and 'upstream'"
    if keeps_pii_local(rule) and rule.pin_spill:
        return "a rule that keeps personal data local cannot let pinned requests spill upstream"
    if keeps_pii_local(rule) and rule.fallback in ("both", "to_upstream"):
        return "a rule that keeps personal data local cannot fall back upstream (use fallback: none)"
    return None


def _is_unconditional(when: When) -> bool:
    return all(getattr(when, f) is None for f in When.__struct_fields__)


def validate_spec(spec: PolicySpec, path: str) -> PolicySpec:
    """Semantic checks; PolicyError naming the file and rule."""
    d = spec.defaults
    if d.threshold is not None and d.target_local_share is not None:
        raise PolicyError(f"policy {path}: defaults: give threshold or target_local_share, not both")
    if d.threshold is not None and not 0.0 <= d.threshold <= 1.0:
        raise PolicyError(f"policy {path}: defaults: threshold must be within [0, 1], got {d.threshold}")
    if d.target_local_share is not None and not 0.0 < d.target_local_share < 1.0:
        raise PolicyError(f"policy {path}: defaults: target_local_share must be between 0 and 1 (exclusive)")
    if d.pii_max_chars < 1000:
        raise PolicyError(f"policy {path}: defaults: pii_max_chars must be at least 1000, got {d.pii_max_chars}")
    if d.action not in BUILTIN_ACTIONS and (d.action == "reject" or not re.match(TIER_NAME, d.action)):
        raise PolicyError(f"policy {path}: defaults: action must be local, upstream, auto, reject or the name of an "
                          f"SLM tier, got {d.action!r}")
    seen: dict[str, int] = {}
    catch_all: int | None = None
    for index, rule in enumerate(spec.rules):
        where = f"policy {path}: rules[{index}] {rule.name!r}"
        if catch_all is not None:
            raise PolicyError(
                f"{where}: unreachable, rules[{catch_all}] {spec.rules[catch_all].name!r} matches every request"
            )
        if rule.name in seen:
            raise PolicyError(f"{where}: duplicate rule name (also rules[{seen[rule.name]}])")
        seen[rule.name] = index
        problem = _check_rule(rule, d)
        if problem:
            raise PolicyError(f"{where}: {problem}")
        if _is_unconditional(rule.when):
            catch_all = index
    return spec


def _rule_of(raw: Any, message: str) -> str:
    """'rules[2] 'name'' for a msgspec error located under `$.rules[2]`, else ''."""
    match = re.search(r"`\$\.rules\[(\d+)\]", message)
    if not match:
        return ""
    index = int(match.group(1))
    name = None
    try:
        entry = raw["rules"][index]
        name = entry.get("name") if isinstance(entry, dict) else None
    except (KeyError, IndexError, TypeError):
        pass
    return f" rules[{index}]" + (f" {name!r}" if isinstance(name, str) else "")


def parse_policy(text: str, path: str) -> PolicySpec:
    """Parse and validate policy YAML text (`path` is only used in messages)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).replace("\n", " ")
        raise PolicyError(f"policy {path}: not valid YAML: {first}") from None
    except RecursionError:
        raise PolicyError(f"policy {path}: not valid YAML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"policy {path}: must hold a mapping with 'rules' at the top level")
    if "path" in raw:
        raise PolicyError(f"policy {path}: unknown top-level field 'path'")
    try:
        spec = msgspec.convert(raw, PolicySpec)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = _rule_of(raw, message)
        location = re.search(r" - at `\$\.(.*)`$", message)
        message = re.sub(r" - at `.*`$", "", message)
        at = f" (at {location.group(1)})" if location else ""
        raise PolicyError(f"policy {path}:{where}: {message}{at}") from None
    spec = msgspec.structs.replace(spec, path=path)
    return validate_spec(spec, path)


def load_policy(path: str | Path | None = None) -> PolicySpec:
    """Read and validate a policy file (None: the shipped default policy)."""
    file = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"policy file not found: {file}") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy {file}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    except OSError as exc:
        raise PolicyError(f"policy {file}: cannot read: {exc.strerror or exc}") from None
    return parse_policy(text, str(file))

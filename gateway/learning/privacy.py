"""Which requests learning must never touch: prompts a policy keeps local for privacy, and opt-outs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.openai.request import ParsedRequest
from gateway.routing.conditions import TAG_HEADER
from gateway.routing.decision import RouteContext
from gateway.routing.pii import scan

OFF_VALUES = frozenset({"off", "no", "0", "false", "none"})


def opted_out(headers: Mapping[str, str], raw: Mapping[str, Any], header: str, tags: frozenset[str]) -> bool:
    """The request asks not to be used for learning: the opt-out header set to off, or an opt-out tag."""
    value = headers.get(header)
    if value is not None and value.strip().lower() in OFF_VALUES:
        return True
    if not tags:
        return False
    tag = headers.get(TAG_HEADER)
    if tag is None:
        user = raw.get("user")
        tag = user if isinstance(user, str) else None
    return tag is not None and tag in tags


class PrivacyGuard:
    """Asks the current routing policy whether a request holds personal data that it keeps local."""

    def __init__(self, router: Any) -> None:
        self.router = router

    def _policy(self) -> Any:
        return getattr(self.router, "current", self.router)

    def rule_keeps_local(self, reason: str) -> bool:
        """The decision came from a rule that keeps personal data local (cheap: a look-up by rule name)."""
        return any(
            rule.name == reason and getattr(rule, "keeps_pii_local", False)
            for rule in getattr(self._policy(), "rules", ())
        )

    def is_private(self, request: ParsedRequest, reason: str) -> bool:
        """True when the decision came from a keep-local PII rule, or the text holds a kind such a rule keeps local.

        A policy without keep-local PII rules has nothing private by this definition.
        """
        if self.rule_keeps_local(reason):
            return True
        policy = self._policy()
        kinds = getattr(policy, "guard_kinds", ())
        if not kinds:
            return False
        ctx = RouteContext(request=request, headers={}, has_upstream=True, has_local=True)
        return bool(policy.features(ctx).pii(kinds))

    def text_is_private(self, text: str) -> bool:
        """The text holds a kind of personal data that the policy keeps local."""
        kinds = getattr(self._policy(), "guard_kinds", ())
        return bool(kinds) and bool(scan(text, kinds))

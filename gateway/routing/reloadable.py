"""The reloadable router: holds the current `PolicyRouter` and swaps in a new one on SIGHUP or admin reload.

A reload builds a complete new router off the event loop and replaces the reference in one assignment, so
in-flight requests keep the router they started with. An invalid new policy or classifier keeps the old one
(per component) and counts `slm_gateway_reloads_total{component, result="failure"}`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from gateway.metrics import GatewayMetrics
from gateway.routing.decision import RouteContext, RouteDecision
from gateway.routing.policy import DEFAULT_POLICY_PATH, PolicyError, PolicySpec, check_tier_names, load_policy
from gateway.routing.policy_router import PolicyRouter, needs_classifier
from gateway.routing.scorer import ClassifierUnavailable, describe, load_scorer, model_facts
from gateway.settings import Settings, SettingsError

log = logging.getLogger("slm_gateway.routing")


@dataclass(frozen=True, slots=True)
class RouterSource:
    """Where routers come from: the policy and classifier files, and the local tier facts rules need."""

    policy_path: str | None = None
    classifier_path: str | None = None
    local_context_tokens: int = 4096
    spill_to_upstream: bool = True
    slm_tiers: frozenset[str] = frozenset()
    """The named SLM tiers of the settings (a policy may name only these)."""
    embedder: Any = None
    """`() -> Embedder | None`: the gateway's one embedder (`SharedEmbedder.get`), handed to a classifier whose
    chat head embeds prompts, so the weights are in memory once; None: the classifier loads its own."""

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Any = None) -> RouterSource:
        return cls(
            embedder=embedder,
            policy_path=settings.policy,
            classifier_path=settings.classifier_model,
            local_context_tokens=settings.local.context_size,
            spill_to_upstream=settings.local.spill_to_upstream,
            slm_tiers=frozenset(settings.slm_tiers),
        )


class ReloadResult(msgspec.Struct):
    """The outcome of reloading one component."""

    component: str
    result: str
    detail: str

    def without_paths(self, known: tuple[str, ...]) -> ReloadResult:
        """The same result with file names instead of paths (an admin answer never shows server directories)."""
        return ReloadResult(self.component, self.result, strip_directories(self.detail, known))


_ABSOLUTE_DIRS = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s/\\:'\"`]+[/\\])+")


def strip_directories(text: str, known: tuple[str, ...] = ()) -> str:
    """`text` with each of the `known` paths reduced to its file name, and any other absolute directory dropped."""
    for path in known:
        if path and path in text:
            text = text.replace(path, Path(path).name)
    return _ABSOLUTE_DIRS.sub("", text)


def build_router(
    source: RouterSource,
    spec: PolicySpec,
    scorer: Any | None,
    problem: str | None,
    metrics: GatewayMetrics | None,
) -> PolicyRouter:
    """A `PolicyRouter` for `spec` (PolicyError if calibration fails)."""
    observe = metrics.classifier_duration.observe if metrics is not None else None
    return PolicyRouter(
        spec,
        scorer,
        local_context_tokens=source.local_context_tokens,
        spill_to_upstream=source.spill_to_upstream,
        scorer_problem=problem,
        observe_score_seconds=observe,
        slm_tiers=source.slm_tiers,
    )


def load_router(source: RouterSource, metrics: GatewayMetrics | None = None) -> PolicyRouter:
    """The first router, strictly: a bad policy or an explicitly configured classifier that fails raises
    SettingsError (one line). The shipped classifier failing only degrades auto decisions (logged)."""
    spec = check_tier_names(load_policy(source.policy_path), source.slm_tiers)
    scorer, problem = None, None
    if needs_classifier(spec) or source.classifier_path is not None:
        try:
            scorer = load_scorer(source.classifier_path, source.embedder)
        except ClassifierUnavailable as exc:
            if source.classifier_path is not None:
                raise SettingsError(f"classifier_model: {exc}") from None
            problem = str(exc)
            log.warning("routing classifier unavailable, auto routing degrades to %s: %s",
                        spec.defaults.classifier_unavailable, problem)
    return build_router(source, spec, scorer, problem, metrics)


class ReloadableRouter:
    """A `Router` that delegates to the current `PolicyRouter` and can reload it."""

    def __init__(self, source: RouterSource, metrics: GatewayMetrics | None = None,
                 initial: PolicyRouter | None = None) -> None:
        self.source = source
        self.metrics = metrics
        self._current = initial if initial is not None else load_router(source, metrics)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._show_model()

    def _show_model(self) -> None:
        """Show the classifier in use (its version and evaluated APGR) as `slm_gateway_router_model_apgr`."""
        facts = model_facts(self._current.scorer)
        if self.metrics is not None and facts is not None:
            self.metrics.learning.set_model(*facts)

    @property
    def current(self) -> PolicyRouter:
        return self._current

    def decide(self, ctx: RouteContext) -> RouteDecision:
        return self._current.decide(ctx)  # read once: a concurrent reload cannot change this request's router

    # -- reloading -----------------------------------------------------------------------------------------
    def _build_next(self) -> tuple[PolicyRouter, list[ReloadResult]]:
        """Load the policy and classifier again; keep the current ones where the new ones are invalid."""
        current = self._current
        results: list[ReloadResult] = []
        try:
            spec = check_tier_names(load_policy(self.source.policy_path), self.source.slm_tiers)
            results.append(ReloadResult("policy", "success", spec.path))
        except PolicyError as exc:
            spec = current.spec
            results.append(ReloadResult("policy", "failure", str(exc)))
        scorer, problem = current.scorer, current.scorer_problem
        if needs_classifier(spec) or self.source.classifier_path is not None:
            try:
                scorer, problem = load_scorer(self.source.classifier_path, self.source.embedder), None
                results.append(ReloadResult("classifier", "success", describe(scorer)))
            except ClassifierUnavailable as exc:
                results.append(ReloadResult("classifier", "failure", str(exc)))
                if scorer is None:
                    problem = str(exc)
        try:
            return build_router(self.source, spec, scorer, problem, self.metrics), results
        except PolicyError as exc:  # the new policy cannot be calibrated with this classifier
            results = [r for r in results if r.component != "policy"] + [ReloadResult("policy", "failure", str(exc))]
        try:
            return build_router(self.source, current.spec, scorer, problem, self.metrics), results
        except PolicyError:
            return current, [
                ReloadResult(r.component, "failure", r.detail if r.result == "failure" else "kept the old one")
                for r in results
            ]

    def _known_paths(self) -> tuple[str, ...]:
        paths = [self.source.policy_path, self.source.classifier_path, str(DEFAULT_POLICY_PATH)]
        model_path = (getattr(self._current.scorer, "metadata", None) or {}).get("model_path")
        known = [str(p) for p in (*paths, model_path) if p]
        known += [str(Path(p).resolve()) for p in known]
        return tuple(sorted(set(known), key=len, reverse=True))  # longest first: no partial replacement

    async def reload(self) -> list[ReloadResult]:
        """Reload policy and classifier off the event loop, then swap atomically. Never raises for bad files.

        The results name files without their directories (they are answered to `/admin/reload`); the log has
        the full paths."""
        async with self._lock:
            router, results = await asyncio.to_thread(self._build_next)
            self._current = router
            self._show_model()
        for r in results:
            if self.metrics is not None:
                self.metrics.reloads.labels(r.component, r.result).inc()
            if r.result == "success":
                log.info("reloaded %s: %s", r.component, r.detail)
            else:
                log.warning("reload of %s failed, keeping the previous one: %s", r.component, r.detail)
        known = self._known_paths()
        return [r.without_paths(known) for r in results]

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def install_sighup(self) -> None:
        """Reload on SIGHUP (startup hook; uvicorn handles only SIGINT/SIGTERM in a single worker)."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (ValueError, RuntimeError, NotImplementedError, AttributeError) as exc:
            log.debug("SIGHUP reload not installed: %s", exc)  # not the main thread (test clients), or Windows

    async def remove_sighup(self) -> None:
        """Shutdown hook: remove the SIGHUP handler."""
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (ValueError, RuntimeError, NotImplementedError, AttributeError):
            pass


def router_from_settings(settings: Settings, metrics: GatewayMetrics | None = None,
                         embedder: Any = None) -> ReloadableRouter:
    """The gateway's router for `settings` (SettingsError / PolicyError, one line, if it cannot start);
    `embedder` as in `RouterSource.embedder`."""
    source = RouterSource.from_settings(settings, embedder)
    return ReloadableRouter(source, metrics)

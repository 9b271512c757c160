"""`slm-gateway route PROMPT`: show offline which tier a request would go to under a policy, and why."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from gateway.openai.request import parse_chat_request
from gateway.errors import GatewayError
from gateway.routing.decision import RouteContext
from gateway.routing.policy_router import PolicyRejected
from gateway.routing.reloadable import RouterSource, load_router
from gateway.settings import SettingsError, load_settings


def _headers(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise SettingsError(f"--header expects NAME:VALUE, got {pair!r}")
        out[name.strip().lower()] = value.strip()
    return out


def _body(args: argparse.Namespace) -> dict[str, Any]:
    if args.request:
        try:
            body = json.loads(Path(args.request).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SettingsError(f"--request {args.request}: {exc}") from None
        if not isinstance(body, dict):
            raise SettingsError(f"--request {args.request}: must hold a JSON object")
    else:
        if args.prompt is None:
            raise SettingsError("give a PROMPT or --request FILE")
        body = {"messages": [{"role": "user", "content": args.prompt}]}
    if args.model is not None or "model" not in body:
        body["model"] = args.model or "auto"
    if args.user is not None:
        body["user"] = args.user
    return body


def cmd_route(args: argparse.Namespace) -> int:
    """Print the routing decision for one prompt (or request body) without starting a server."""
    try:
        settings = load_settings(args.config, overrides={
            k: v for k, v in (("policy", args.policy), ("classifier_model", args.classifier_model)) if v is not None
        })
        router = load_router(RouterSource.from_settings(settings))
        parsed = parse_chat_request(msgspec.json.encode(_body(args)))
        has_upstream = not args.no_upstream
        from gateway.tiers.local import LlamaCppBackend  # the features the local tier honours (llama_cpp: CLI only)

        ctx = RouteContext(
            request=parsed,
            headers=_headers(args.header or []),
            has_upstream=has_upstream,
            has_local=True,
            local_features=LlamaCppBackend.features,
        )
    except SettingsError as exc:
        print(f"slm-gateway: error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"slm-gateway: error: invalid request: {exc.message}", file=sys.stderr)
        return 2
    features = router.features(ctx)
    rule = router.match(features)
    try:
        decision = router.decide(ctx)
    except PolicyRejected as exc:
        result: dict[str, Any] = {
            "policy": router.spec.path, "route": "rejected", "rule": rule.name, "why": exc.detail,
            "status": exc.status_code, "code": exc.code, "message": exc.message,
        }
    else:
        result = {
            "policy": router.spec.path, "route": decision.tier, "rule": rule.name, "why": decision.detail,
            "fallback": decision.fallback, "reason_label": decision.reason,
        }
        if decision.score is not None:
            result["p_strong"] = round(decision.score, 4)
        if decision.threshold is not None:
            result["threshold"] = decision.threshold
            result["threshold_source"] = rule.threshold_source
    familiarity = features.familiarity()
    if familiarity is not None:
        result["familiarity"] = round(familiarity, 4)
    result["estimated_prompt_tokens"] = features.prompt_tokens
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value if value is not None else '-'}")
    return 0


def register(sub: Any) -> None:
    """Add the `route` sub-command to the `slm-gateway` parser."""
    route = sub.add_parser("route", help="explain the routing decision for a prompt (offline, no server)")
    route.add_argument("prompt", nargs="?", help="the user prompt")
    route.add_argument("--request", help="a JSON chat completion body instead of PROMPT (tools, images, ...)")
    route.add_argument("--policy", help="routing policy YAML (default: the configured or shipped policy)")
    route.add_argument("--classifier-model", help="router model file (default: the shipped model)")
    route.add_argument("--config", help="YAML config file (env SLM_GATEWAY_CONFIG)")
    route.add_argument("--model", help="the requested model name (default: auto)")
    route.add_argument("--user", help="the OpenAI `user` field")
    route.add_argument("--header", action="append", metavar="NAME:VALUE", help="a request header; repeatable")
    route.add_argument("--no-upstream", action="store_true", help="decide as if no upstream were configured")
    route.add_argument("--json", action="store_true", help="print JSON")
    route.set_defaults(func=cmd_route)

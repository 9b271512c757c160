"""The `slm-gateway` command: `serve`, `model fetch`, `labels export`, and the `classifier` tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.settings import Settings, SettingsError, load_settings
from gateway.tiers.bundled_model import BundledModelError, default_cache_dir, ensure_bundled_model

GGUF_MAGIC = b"GGUF"


def _serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        target = overrides
        *parents, leaf = path.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value

    put("host", args.host)
    put("port", args.port)
    put("workers", args.workers)
    put("api_keys", args.api_key)
    put("admin_api_keys", args.admin_api_key)
    put("policy", args.policy)
    put("classifier_model", args.classifier_model)
    put("log_level", args.log_level)
    put("upstream.url", args.upstream_url)
    put("upstream.api_key", args.upstream_api_key)
    put("local.model_path", args.local_model)
    put("cache.redis_url", args.redis_url)
    return overrides


def _check_model_file(settings: Settings) -> None:
    path = settings.local.model_path
    if path is None:
        return
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise SettingsError(f"local model {path!r} is not a GGUF file")


def _check_policy(settings: Settings) -> None:
    """Validate the routing policy before serving (PolicyError is a one-line SettingsError)."""
    from gateway.routing.policy import load_policy

    load_policy(settings.policy)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    try:
        settings = load_settings(args.config, overrides=_serve_overrides(args))
        _check_model_file(settings)
        _check_policy(settings)
        if not settings.api_keys:
            admin = "" if settings.admin_api_keys else ", /admin/reload included"
            print(
                f"slm-gateway: no API keys configured (--api-key): the gateway is OPEN to anyone who can reach it{admin}",
                file=sys.stderr,
            )
        serve(settings)
    except (SettingsError, BundledModelError) as exc:
        print(f"slm-gateway: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_model_fetch(args: argparse.Namespace) -> int:
    try:
        path = ensure_bundled_model(Path(args.cache_dir) if args.cache_dir else None)
    except BundledModelError as exc:
        print(f"slm-gateway: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slm-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="listen address (env SLM_GATEWAY_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env SLM_GATEWAY_PORT; default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (env SLM_GATEWAY_WORKERS; default 1)")
    serve.add_argument("--upstream-url", help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1 (env SLM_GATEWAY_UPSTREAM_URL)")
    serve.add_argument("--upstream-api-key", help="key for the upstream (env SLM_GATEWAY_UPSTREAM_API_KEY)")
    serve.add_argument("--local-model", help="path to a GGUF (env SLM_GATEWAY_LOCAL_MODEL; default: bundled model)")
    serve.add_argument("--config", help="YAML config file (env SLM_GATEWAY_CONFIG)")
    serve.add_argument("--policy", help="routing policy YAML (env SLM_GATEWAY_POLICY; default: shipped policy)")
    serve.add_argument(
        "--classifier-model", help="router model file (env SLM_GATEWAY_CLASSIFIER_MODEL; default: shipped model)"
    )
    serve.add_argument(
        "--api-key", action="append", help="gateway API key clients must send; repeatable (env SLM_GATEWAY_API_KEYS, comma-separated)"
    )
    serve.add_argument(
        "--admin-api-key", action="append",
        help="key for /admin/* (tenant keys are refused there); repeatable (env SLM_GATEWAY_ADMIN_API_KEYS)",
    )
    serve.add_argument("--redis-url", help="redis://HOST:PORT/DB for the response cache (env SLM_GATEWAY_REDIS_URL)")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=cmd_serve)

    model = sub.add_parser("model", help="the bundled local model")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    fetch = model_sub.add_parser("fetch", help=f"assemble and verify the bundled GGUF (default dir {default_cache_dir()})")
    fetch.add_argument("--cache-dir", help="where to put it (env SLM_GATEWAY_MODEL_CACHE_DIR)")
    fetch.set_defaults(func=cmd_model_fetch)

    _register_optional(sub)
    return parser


def _register_optional(sub: Any) -> None:
    """Sub-commands that live in other packages (the classifier tools, the routing explainer)."""
    try:
        from classifier.cli import register as register_classifier
    except ImportError:
        pass
    else:
        register_classifier(sub)
    from gateway.routing.explain import register as register_route

    register_route(sub)
    from gateway.learning.cli import register as register_labels

    register_labels(sub)
    from gateway.cache.cli import register as register_cache

    register_cache(sub)
    from gateway.limits.cli import register as register_keys

    register_keys(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

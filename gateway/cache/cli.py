"""`slm-gateway cache ...`: `calibrate` (the semantic threshold from labelled pairs) and `purge` (one tenant)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any


def cmd_calibrate(args: argparse.Namespace) -> int:
    from gateway.cache.semantic.calibrate import (
        CalibrationError,
        calibrate,
        render,
        write_threshold,
    )
    from gateway.embedding import EmbedderError, WordLlamaEmbedder

    try:
        embedder = WordLlamaEmbedder()
        result = calibrate(
            Path(args.pairs), embedder, max_false_hit_rate=args.max_false_hit_rate, margin=args.margin
        )
    except (CalibrationError, EmbedderError, OSError) as exc:
        print(f"slm-gateway: error: {exc}", file=sys.stderr)
        return 2
    print(render(result))
    if args.write:
        write_threshold(result, Path(args.pairs).name, Path(args.thresholds))
        print(f"wrote the threshold of {result.embedder} to {args.thresholds}")
    return 0


def _tenant(args: argparse.Namespace) -> str:
    from gateway.auth import tenant_of

    tenant = args.tenant if args.tenant else tenant_of(args.api_key)
    return f"{tenant}/{args.sub}" if args.sub else tenant


async def _purge(url: str, prefix: str, tenant: str) -> int:
    from gateway.cache.semantic.purge import purge_tenant
    from gateway.redis_link import redis_client

    client = redis_client(url, timeout_seconds=5, max_connections=2)
    try:
        return await purge_tenant(client, prefix, tenant)
    finally:
        await client.aclose()


def cmd_purge(args: argparse.Namespace) -> int:
    from gateway.cache.store import StoreError
    from gateway.settings import SettingsError, load_settings

    overrides: dict[str, Any] = {}
    if args.redis_url:
        overrides["cache"] = {"redis_url": args.redis_url}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except SettingsError as exc:
        print(f"slm-gateway: error: {exc}", file=sys.stderr)
        return 2
    if not settings.cache.redis_url:
        print(
            "slm-gateway: error: no Redis configured (--redis-url): the in-process cache lives and dies with its "
            "gateway process",
            file=sys.stderr,
        )
        return 2
    tenant = _tenant(args)
    try:
        removed = asyncio.run(_purge(settings.cache.redis_url, settings.cache.key_prefix, tenant))
    except StoreError as exc:
        print(f"slm-gateway: error: {exc}", file=sys.stderr)
        return 1
    print(f"purged {removed} keys of tenant {tenant}")
    return 0


def register(sub: Any) -> None:
    """Add the `cache` command group to the top-level sub-parsers."""
    from gateway.cache.semantic.calibrate import (
        DEFAULT_MARGIN,
        DEFAULT_MAX_FALSE_HIT_RATE,
        DEFAULT_PAIRS,
        THRESHOLDS_FILE,
    )

    cache = sub.add_parser("cache", help="the response cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)

    cal = cache_sub.add_parser("calibrate", help="fit the semantic-cache threshold of the bundled embedder")
    cal.add_argument("--pairs", default=str(DEFAULT_PAIRS), help="labelled pairs (JSONL; default: the shipped set)")
    cal.add_argument("--max-false-hit-rate", type=float, default=DEFAULT_MAX_FALSE_HIT_RATE,
                     help=f"false-hit budget on the calib split (default {DEFAULT_MAX_FALSE_HIT_RATE})")
    cal.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                     help=f"added to the fitted threshold (default {DEFAULT_MARGIN})")
    cal.add_argument("--write", action="store_true", help="store the threshold in the thresholds file")
    cal.add_argument("--thresholds", default=str(THRESHOLDS_FILE), help="the thresholds file (default: the shipped one)")
    cal.set_defaults(func=cmd_calibrate)

    purge = cache_sub.add_parser("purge", help="remove every cached entry and semantic vector of one tenant")
    who = purge.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="the tenant id (as in logs: t-...)")
    who.add_argument("--api-key", help="the gateway API key whose tenant to purge")
    purge.add_argument("--sub", help="the cache.tenant_header value, for a subdivided tenant")
    purge.add_argument("--redis-url", help="redis://HOST:PORT/DB (env SLM_GATEWAY_REDIS_URL)")
    purge.add_argument("--config", help="YAML config file (for cache.redis_url and cache.key_prefix)")
    purge.set_defaults(func=cmd_purge)

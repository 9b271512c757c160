"""`slm-gateway labels export`: write the shared Redis label stream out as JSONL (training data)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from redis.exceptions import RedisError

from gateway.learning.labels import export_stream
from gateway.learning.redis_client import close_client, learning_redis
from gateway.settings import SettingsError, load_settings


async def _export(url: str, stream: str, out_path: str | None) -> int:
    redis = learning_redis(url, timeout=10.0)
    try:
        if out_path is None or out_path == "-":
            return await export_stream(redis, stream, sys.stdout)
        with open(out_path, "w", encoding="utf-8") as out:
            return await export_stream(redis, stream, out)
    finally:
        await close_client(redis)


def cmd_labels_export(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"slm-gateway: error: {exc}", file=sys.stderr)
        return 2
    url = args.redis_url or settings.cache.redis_url
    if not url:
        print("slm-gateway: error: no Redis configured (--redis-url or cache.redis_url); "
              "without Redis the labels are already in learning.labels_path", file=sys.stderr)
        return 2
    stream = args.stream or settings.learning.redis_stream
    try:
        count = asyncio.run(_export(url, stream, args.out))
    except (RedisError, OSError) as exc:
        print(f"slm-gateway: error: cannot read the label stream {stream!r}: {exc}", file=sys.stderr)
        return 1
    print(f"exported {count} label rows from {stream}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add `labels export` to the `slm-gateway` command."""
    labels = sub.add_parser("labels", help="label rows collected by shadow judging and feedback")
    labels_sub = labels.add_subparsers(dest="labels_command", required=True)
    export = labels_sub.add_parser("export", help="write the Redis label stream as JSONL")
    export.add_argument("--config", help="YAML config file (env SLM_GATEWAY_CONFIG)")
    export.add_argument("--redis-url", help="redis://HOST:PORT/DB (default: cache.redis_url)")
    export.add_argument("--stream", help="stream key (default: learning.redis_stream)")
    export.add_argument("--out", help="output JSONL file (default: stdout)")
    export.set_defaults(func=cmd_labels_export)

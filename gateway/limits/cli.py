"""`slm-gateway keys create|list|revoke|set-limits|usage`: manage gateway keys and caps in the shared Redis."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway.errors import GatewayError
from gateway.limits.admin import KeyAdmin, KeyRequest, public
from gateway.limits.records import KeyRecord, Limits
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.store import StoreUnavailable
from gateway.settings import SettingsError, load_settings

LIMIT_FLAGS = (("rpm", int), ("tpm", int), ("concurrency", int), ("usd_per_day", float), ("usd_per_month", float))


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(**{name: getattr(args, name) for name, _ in LIMIT_FLAGS})


def _admin(args: argparse.Namespace) -> KeyAdmin:
    settings = load_settings(args.config)
    url = args.redis_url or settings.limits.redis_url or settings.cache.redis_url
    if not url:
        raise SettingsError("keys live in Redis: give --redis-url (or limits.redis_url / cache.redis_url)")
    prefix = args.key_prefix or settings.limits.key_prefix
    return KeyAdmin(RedisLimitStore(url, prefix=prefix, timeout_seconds=5.0))


def _run(args: argparse.Namespace, action: Callable[[KeyAdmin], Awaitable[Any]]) -> int:
    async def go() -> Any:
        admin = _admin(args)
        await admin.store.start()
        try:
            return await action(admin)
        finally:
            await admin.store.close()

    try:
        result = asyncio.run(go())
    except (SettingsError, GatewayError, StoreUnavailable) as exc:
        print(f"slm-gateway: error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    if isinstance(result, str):
        print(result)
    else:
        print(msgspec.json.encode(result).decode())
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    async def create(admin: KeyAdmin) -> Any:
        request = KeyRequest(
            team=args.team, name=args.name or "", allowed_tiers=args.allow_tier, allowed_models=args.allow_model,
            expires_in_seconds=args.expires_in_days * 86_400 if args.expires_in_days else None, limits=_limits(args),
        )
        key, record = await admin.create(request)
        return {**public(record), "key": key}

    return _run(args, create)


def cmd_list(args: argparse.Namespace) -> int:
    async def listing(admin: KeyAdmin) -> str:
        return table(await admin.list())

    return _run(args, listing)


def cmd_revoke(args: argparse.Namespace) -> int:
    async def revoke(admin: KeyAdmin) -> Any:
        return public(await admin.revoke(args.id))

    return _run(args, revoke)


def cmd_set_limits(args: argparse.Namespace) -> int:
    async def set_limits(admin: KeyAdmin) -> Any:
        if args.key:
            return public(await admin.set_key_limits(args.key, _limits(args)))
        return {"object": "gateway.team", "team": args.team, "limits": await admin.set_team_limits(args.team, _limits(args))}

    return _run(args, set_limits)


def cmd_usage(args: argparse.Namespace) -> int:
    async def usage(admin: KeyAdmin) -> Any:
        return await admin.usage(kid=args.key, team=args.team)

    return _run(args, usage)


def table(records: list[KeyRecord]) -> str:
    """Keys as aligned columns: id, team, name, revoked, limits."""
    rows = [["id", "team", "name", "revoked", "limits"]]
    for r in records:
        caps = " ".join(f"{k}={v}" for k, v in msgspec.to_builtins(r.limits).items())
        rows.append([r.id, r.team, r.name or "-", "yes" if r.revoked else "no", caps or "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(row[i].ljust(widths[i]) for i in range(4)), row[4]]) for row in rows)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="redis://HOST:PORT/DB (default: limits.redis_url, else cache.redis_url)")
    parser.add_argument("--key-prefix", help="the limits.key_prefix of the gateways (default slmgw:limits:v1)")
    parser.add_argument("--config", help="YAML config file (for the Redis URL and prefix)")


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    for name, kind in LIMIT_FLAGS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=f"cap: {name}")


def register(sub: Any) -> None:
    """Add the `keys` command group to the top-level sub-parsers."""
    keys = sub.add_parser("keys", help="gateway keys, rate limits and budgets (stored in Redis)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    create = keys_sub.add_parser("create", help="create a key (printed once: only its sha256 is stored)")
    create.add_argument("--team", required=True)
    create.add_argument("--name")
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--allow-tier", action="append", choices=["local", "upstream"], help="repeatable")
    create.add_argument("--allow-model", action="append", help="repeatable")
    _limit_flags(create)
    _common(create)
    create.set_defaults(func=cmd_create)

    listing = keys_sub.add_parser("list", help="list keys (ids, teams, caps; never the keys)")
    _common(listing)
    listing.set_defaults(func=cmd_list)

    revoke = keys_sub.add_parser("revoke", help="revoke a key (every replica refuses it within a second)")
    revoke.add_argument("id", help="the key's id (key-...)")
    _common(revoke)
    revoke.set_defaults(func=cmd_revoke)

    for name, helptext, func in (("set-limits", "set caps of a key or a team", cmd_set_limits),
                                 ("usage", "a key's or team's use this minute, day and month", cmd_usage)):
        parser = keys_sub.add_parser(name, help=helptext)
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--key", help="a key id (key-...)")
        who.add_argument("--team")
        if name == "set-limits":
            _limit_flags(parser)
        _common(parser)
        parser.set_defaults(func=func)

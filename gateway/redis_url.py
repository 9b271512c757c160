"""What a Redis URL means to the gateway: redis-py's own `parse_url` (the semantics of `Redis.from_url`), checked
once, so that both Redis clients (redis-py's, `gateway/redis_link.py`; the gateway's own, `gateway/resp.py`) connect
the same way or the gateway refuses to start.

Forms (docs/deploy.md, "Redis URLs"): `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS),
`unix://[[user]:password@]/path/to/socket[?db=N]`; query options `db`, `client_name` and, on `rediss://` only, the
`ssl_*` options of redis-py's `SSLConnection` (`ssl_cert_reqs=required|optional|none`, `ssl_ca_certs`,
`ssl_ca_path`, `ssl_certfile`, `ssl_keyfile`, `ssl_password`, `ssl_check_hostname`, `ssl_min_version`, ...).
Any other option is refused: an option only one client would honour (a `socket_timeout` redis-py would take over
the gateway's own timeout) or none (a typo) is a startup error, not a silent difference. The TLS context is built
here, by redis-py's own `SSLConnection`, so an unreadable CA or client certificate fails at startup too.

No message of this module carries the password (nor `ssl_password`): `redacted(url)` is the URL to show.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import RedisError

SCHEMES = ("redis://", "rediss://", "unix://")
BOTH = frozenset({"db", "username", "password", "client_name"})
"""Options both clients honour on every scheme (besides host, port and path)."""
TLS = frozenset({
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile", "ssl_password",
    "ssl_check_hostname", "ssl_min_version", "ssl_ciphers", "ssl_include_verify_flags", "ssl_exclude_verify_flags",
})
"""`rediss://` options: redis-py's `SSLConnection` arguments, one TLS context for both clients."""
PLACES = frozenset({"host", "port", "path", "connection_class"})


class RedisUrlError(ValueError):
    """A Redis URL the gateway cannot honour (its message names the option, never the password)."""


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect, as redis-py would for the same URL."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    """A unix socket (`unix://`), else TCP to host:port."""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_name: str | None = None
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    """`rediss://`: the context redis-py's `SSLConnection` builds from the URL's `ssl_*` options."""
    server_hostname: str | None = None
    """The name the server's certificate is checked against (the host), None for a unix socket."""


def redacted(url: str) -> str:
    """`url` fit to show: the password (and the query's values) replaced by `***`."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
        query = "&".join(f"{item.partition('=')[0]}=***" for item in parts.query.split("&") if item)
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "<unparseable URL>"


def redis_target(url: str) -> RedisTarget:
    """The target of `url`, or `RedisUrlError` for a URL (an option, a TLS file) the clients cannot both honour."""
    if not url.startswith(SCHEMES):
        raise RedisUrlError(f"must start with redis://, rediss:// or unix:// (Sentinel and Cluster URLs are not "
                            f"supported), got {redacted(url)!r}")
    try:
        options: dict[str, Any] = parse_url(url)
    except ValueError as exc:  # redis-py's own messages name the option, not its value
        raise RedisUrlError(str(exc)) from None
    tls = url.startswith("rediss://")
    unknown = sorted(set(options) - BOTH - PLACES - TLS)
    if unknown:
        raise RedisUrlError(f"unsupported option(s) {', '.join(unknown)} (supported: db, client_name and, with "
                            f"rediss://, {', '.join(sorted(TLS))}; timeouts come from the gateway's settings)")
    tls_options = {name: value for name, value in options.items() if name in TLS}
    if tls_options and not tls:
        raise RedisUrlError(f"{', '.join(sorted(tls_options))}: TLS options need a rediss:// URL")
    context = _tls_context(tls_options) if tls else None
    path = options.get("path")
    host = options.get("host", "localhost")
    return RedisTarget(
        host=host, port=options.get("port", 6379), path=path, db=options.get("db", 0),
        username=options.get("username"), password=options.get("password"), client_name=options.get("client_name"),
        tls=context, server_hostname=None if path else host,
    )


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The context redis-py's asyncio `SSLConnection` would use (its defaults: `ssl_cert_reqs=required`,
    `ssl_check_hostname=true`, the system's CAs unless `ssl_ca_certs` / `ssl_ca_path` / `ssl_ca_data`)."""
    try:
        return SSLConnection(**options).ssl_context.get()
    except (OSError, ssl.SSLError, ValueError, TypeError) as exc:
        files = ", ".join(f"{name}={options[name]}" for name in ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile",
                                                               "ssl_keyfile") if options.get(name))
        raise RedisUrlError(f"cannot build the TLS context ({files or 'no files'}): {type(exc).__name__}: "
                            f"{_no_secret(str(exc), options)}") from None
    except RedisError as exc:  # a bad ssl_cert_reqs
        raise RedisUrlError(f"TLS options: {_no_secret(str(exc), options)}") from None


def _no_secret(text: str, options: dict[str, Any]) -> str:
    secret = options.get("ssl_password")
    return text.replace(secret, "***") if secret else text

"""A real gateway process whose local tier is a `FakeBackend` (no model is loaded): for tests that need several
gateway processes (replicas sharing Redis) and only exercise what is around the tiers.

    python -m gateway.devtools.fake_gateway --config gw.yaml --port 8080 [--local-delay 0.05]

The upstream tier is the real HTTP backend of `upstream.url` (point it at `gateway.devtools.fake_upstream`); the
router, cache, limits and the HTTP layer are the ones `slm-gateway serve` builds from the config.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn

from gateway.app import create_app
from gateway.build import build_gateway
from gateway.devtools.fake_backend import FakeBackend
from gateway.devtools.process import LOOPBACK
from gateway.dispatch import Tiers
from gateway.metrics import GatewayMetrics
from gateway.routing.reloadable import router_from_settings
from gateway.server import _uvicorn_options
from gateway.settings import load_settings
from gateway.tiers.http import OpenAIHTTPBackend


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.devtools.fake_gateway", description=__doc__)
    p.add_argument("--config", required=True, help="YAML config of the gateway")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--local-delay", type=float, default=0.0, help="seconds the fake local tier takes per answer")
    a = p.parse_args(argv)
    settings = load_settings(a.config, environ={}, overrides={"host": LOOPBACK, "port": a.port})
    up = settings.upstream
    upstream = None
    if up.url:
        upstream = OpenAIHTTPBackend("upstream", up.url, up.api_key, max_connections=up.max_connections)
    name = settings.local.model_name or "local"
    tiers = Tiers(local=FakeBackend("local", model=name, delay=a.local_delay), upstream=upstream,
                  upstream_default_model=up.default_model, local_model_name=name)
    metrics = GatewayMetrics()
    pipeline = build_gateway(settings, tiers=tiers, router=router_from_settings(settings, metrics), metrics=metrics)
    uvicorn.run(create_app(settings, pipeline), **_uvicorn_options(settings))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

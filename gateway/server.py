"""Running the app under uvicorn, with one worker or several (each worker builds its own app from the settings)."""

from __future__ import annotations

import gc
import os
import tempfile

import msgspec
import uvicorn
from litestar import Litestar

from gateway.app import create_app
from gateway.http_guard import GuardLimits, protocol_factory
from gateway.settings import Settings
from gateway.supervisor import SUPERVISOR_ENV, ReloadingSupervisor

SETTINGS_ENV = "SLM_GATEWAY_SETTINGS_JSON"


def freeze_startup_heap() -> None:
    """Take everything built by start-up (routes, the router's model, tokenizers, libraries: ~190,000 objects)
    out of the cyclic collector's reach. Each full collection walked all of them while the event loop waited:
    6 collections of 330-480 ms in 30 s of bench/cache.py load (2 busy cores). After `gc.freeze()` they cost
    nothing; only objects made later are walked (the last start-up hook: the pipeline has started)."""
    gc.collect()
    gc.freeze()


def served(app: Litestar) -> Litestar:
    """`app` as a server runs it: its start-up heap frozen once it has started (not done by `create_app`: a test
    process that builds many apps would keep their garbage cycles for good)."""
    app.on_startup.append(freeze_startup_heap)
    return app


def app_from_env() -> Litestar:
    """Factory used by uvicorn workers: settings arrive as JSON in the environment."""
    settings = msgspec.json.decode(os.environ[SETTINGS_ENV], type=Settings)
    return served(create_app(settings))


def _uvicorn_options(settings: Settings) -> dict[str, object]:
    server = settings.server
    limits = GuardLimits(server.max_header_bytes, server.header_timeout_seconds, server.body_timeout_seconds)
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": protocol_factory(limits),  # httptools, with head size and arrival-time limits
        "timeout_keep_alive": server.keep_alive_seconds,
        "limit_concurrency": server.max_concurrency,
        "timeout_graceful_shutdown": 30,
        "server_header": False,
        "proxy_headers": False,
    }


def serve(settings: Settings) -> None:
    """Serve until interrupted."""
    if settings.workers == 1:
        uvicorn.run(served(create_app(settings)), **_uvicorn_options(settings))  # type: ignore[arg-type]
        return
    os.environ[SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="slm-gateway-metrics-"))
    config = uvicorn.Config(
        "gateway.server:app_from_env", factory=True, workers=settings.workers, **_uvicorn_options(settings)  # type: ignore[arg-type]
    )
    try:
        ReloadingSupervisor(config, sockets=[config.bind_socket()]).run()
    except KeyboardInterrupt:
        pass

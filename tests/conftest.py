"""Shared fixtures: real servers on loopback (the gateway as `slm-gateway serve`, the fake upstream), and the
gateway in-process (litestar's test client around `create_app`, with `FakeBackend` tiers)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.build import build_gateway
from gateway.devtools.process import LOOPBACK, ServerProcess, free_port, run_fake_upstream, spawn_server
from gateway.dispatch import Tiers
from gateway.pipeline import Pipeline
from gateway.routing.decision import Router
from gateway.routing.static import StaticRouter
from gateway.settings import load_settings
from gateway.tiers.base import Backend

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODEL_ID = "Qwen2.5-Coder-0.5B-Instruct-AWQ"
"""The id local answers carry with the bundled model: its GGUF's `general.name`, spaces as dashes."""
GATEWAY_START_TIMEOUT = 180.0


@contextmanager
def flushed_redis(url: str) -> Iterator[redis.Redis]:
    """A client on the real Redis test database at `url` (each module has its own DB number), emptied before and
    after; no Redis answering is an error, not a skip (CI starts one)."""
    client = redis.Redis.from_url(url)
    client.ping()
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()



@asynccontextmanager
async def aiohttp_site(routes: list[tuple[str, str, Callable[..., Awaitable[Any]]]]) -> AsyncIterator[str]:
    """A small aiohttp server on 127.0.0.1 with `(method, path, handler)` routes; yields its base URL."""
    from aiohttp import web

    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()

@pytest.fixture(scope="module")
def redis_db(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """`flushed_redis` on the test module's own `REDIS_URL`, for the whole module."""
    with flushed_redis(request.module.REDIS_URL) as client:
        yield client


class RunningGateway:
    """A `slm-gateway serve` subprocess: its base URL (`.../v1`), root URL and process."""

    def __init__(self, server: ServerProcess, port: int) -> None:
        self.server = server
        self.port = port
        self.root = f"http://{LOOPBACK}:{port}"
        self.base_url = f"{self.root}/v1"


@contextmanager
def run_gateway(
    *args: str,
    config: dict | None = None,
    tmp_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = GATEWAY_START_TIMEOUT,
    wait_path: str = "/readyz",
) -> Iterator[RunningGateway]:
    """Start `slm-gateway serve` on a free port with extra CLI `args` (and a YAML `config`); wait for `wait_path`."""
    argv: list[str] = [sys.executable, "-m", "gateway", "serve", "--host", LOOPBACK]
    if config is not None:
        assert tmp_dir is not None, "a config needs a tmp_dir to be written to"
        path = tmp_dir / f"config-{free_port()}.yaml"
        path.write_text(yaml.safe_dump(config))
        argv += ["--config", str(path)]
    port = free_port()
    argv += ["--port", str(port), *args]
    with spawn_server(argv, f"http://{LOOPBACK}:{port}{wait_path}", timeout=timeout, env=env, cwd=REPO_ROOT) as server:
        yield RunningGateway(server, port)


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[str]:
    """A fake OpenAI-compatible upstream (no latency); yields its base URL ending in /v1."""
    with run_fake_upstream() as url:
        yield url


@pytest.fixture(scope="session")
def gateway(fake_upstream: str) -> Iterator[RunningGateway]:
    """A gateway with the bundled local model and the fake upstream, open (no API keys)."""
    with run_gateway("--upstream-url", fake_upstream, "--upstream-api-key", "sk-upstream-secret") as gw:
        yield gw


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Start extra gateways for one test: `gateway_factory(*cli_args, config={...})`; all stopped afterwards."""
    with ExitStack() as stack:

        def start(
            *args: str, config: dict | None = None, env: dict[str, str] | None = None, wait_path: str = "/readyz"
        ) -> RunningGateway:
            return stack.enter_context(run_gateway(*args, config=config, tmp_dir=tmp_path, env=env, wait_path=wait_path))

        yield start


@pytest.fixture
def upstream_factory() -> Iterator[Callable[..., str]]:
    """Start extra fake upstreams with options (latency_ms=..., error_rate=..., ...); yields their base URLs."""
    with ExitStack() as stack:

        def start(**opts: object) -> str:
            return stack.enter_context(run_fake_upstream(**opts))

        yield start



@pytest.fixture(scope="session")
def tiny_router_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real router model (skops) trained on synthetic prompts: 'prove/derive/integral' prompts are hard."""
    import json

    from classifier.train import RouterConfig, train

    hard = ["Prove that {n} is irrational.", "Derive the closed form of sum k^{n}.", "Evaluate the integral of x^{n} e^x."]
    easy = ["Say hello {n} times.", "What is the capital of country {n}?", "Translate good morning, take {n}."]
    rows = []
    for n in range(120):
        for template in hard:
            rows.append({"prompt": template.format(n=n), "weak_correct": n % 5 == 0, "strong_correct": True})
        for template in easy:
            rows.append({"prompt": template.format(n=n), "weak_correct": n % 7 != 0, "strong_correct": True})
    folder = tmp_path_factory.mktemp("tiny-router")
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = folder / "router.skops"
    # word-only features (no word-problem block): keeps HARD/EASY either side of the policy threshold
    train(data, out, RouterConfig(word_features=2**12, word_problem_weight=0.0))
    return out


class InProcessGateway:
    """A gateway app served in-process: `client` (an httpx client on the app) and its `pipeline`."""

    def __init__(self, client: httpx.AsyncClient, pipeline: Pipeline) -> None:
        self.client = client
        self.pipeline = pipeline

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value in this gateway's registry (0 when it was never written)."""
        return self.pipeline.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def app_factory() -> AsyncIterator[Callable[..., Awaitable[InProcessGateway]]]:
    """Start in-process gateways: `await app_factory(local=FakeBackend("local"), upstream=..., config={...})`.

    The tiers are the given backends; the router is a `StaticRouter` unless one is given. Stopped afterwards.
    """
    async with AsyncExitStack() as stack:

        async def start(
            *,
            local: Backend | None = None,
            upstream: Backend | None = None,
            config: dict[str, Any] | None = None,
            router: Router | None = None,
        ) -> InProcessGateway:
            settings = load_settings(environ={}, overrides=config or {})
            tiers = Tiers(
                local=local,
                upstream=upstream,
                upstream_default_model=settings.upstream.default_model,
                local_model_name=settings.local.model_name or "local",
            )
            pipeline = build_gateway(settings, tiers=tiers, router=router or StaticRouter())
            client = await stack.enter_async_context(AsyncTestClient(create_app(settings, pipeline)))
            return InProcessGateway(client, pipeline)

        yield start

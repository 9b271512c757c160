"""What a semantic hit costs in Redis commands, on the REAL Redis (`SLM_TEST_REDIS_URL`), counted with MONITOR:
a repeated paraphrase hit is one `GET` (its own exact key's miss), like an exact hit; no collapse lock is taken
for it (the semantic lookup comes before `SET NX` / the unlock script), the entry is reused from `recent.py`
and a warm mirror is not caught up within its interval."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis

from gateway.cache import build_cache_layer
from gateway.cache.entry import decode_entry
from gateway.cache.flow import CacheLayer, _Stored
from gateway.cache.semantic.scope import scope_of_request
from gateway.devtools.fake_backend import FakeBackend
from gateway.dispatch import Answer, Dispatcher, Tiers
from gateway.embedding import WordLlamaEmbedder
from gateway.exchange import Exchange
from gateway.metrics import GatewayMetrics
from gateway.openai.request import parse_chat_request
from gateway.routing.decision import RouteDecision
from gateway.settings import load_settings

URL = os.environ.get("SLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
FIRST, PARAPHRASE = "What is the capital city of France?", "what's the capital of France?"


class Monitor:
    """Every command Redis runs on the test's database while it is open (MONITOR in a thread)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.start, self.end = f"start-{uuid.uuid4().hex}", f"end-{uuid.uuid4().hex}"
        self.commands: list[str] = []
        self.started = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            while True:
                command = monitor.next_command()
                if command["db"] != self.db:
                    continue
                if self.end in command["command"]:
                    return
                if self.started:
                    self.commands.append(command["command"])
                self.started = self.started or self.start in command["command"]

    def __enter__(self) -> Monitor:
        self.thread.start()
        self.ready.wait(5)
        self.client.echo(self.start)  # what comes before it (this client's own connection set-up) is not counted
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(self.end)
        self.thread.join(5)
        self.client.close()


async def answered(layer: CacheLayer, text: str) -> tuple[Exchange, Answer]:
    """A pinned upstream request through the layer, without the HTTP layer's `after_send`."""
    ex = Exchange(uuid.uuid4().hex, {}, 0.0)
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    ex.accept("anonymous", parse_chat_request(json.dumps(body).encode()))
    ex.routed(RouteDecision(tier="upstream", reason="pinned", detail="pinned"), "gpt-4o-mini")
    answer = await layer(ex)
    assert isinstance(answer, Answer) and answer.status == 200
    return ex, answer


async def ask(layer: CacheLayer, text: str) -> Exchange:
    """`answered`, then its `after_send`, as the HTTP layer runs it once the client has the answer."""
    ex, answer = await answered(layer, text)
    if answer.after_send is not None:
        await answer.after_send()
    return ex


@asynccontextmanager
async def semantic_layer(name: str) -> AsyncIterator[tuple[CacheLayer, FakeBackend, redis.Redis]]:
    """A started exact + semantic layer on the test's Redis over a `FakeBackend` upstream answering "Paris.", and
    a Redis client; its keys are deleted afterwards."""
    prefix = f"t:{name}-{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {"cache": {"redis_url": URL, "key_prefix": prefix, "semantic": {
        "enabled": True, "default": True, "sync_interval_seconds": 60, "deadline_seconds": 1}}}
    settings = load_settings(environ={}, overrides=overrides)
    upstream = FakeBackend("upstream", reply="Paris.")
    tiers = Tiers(local=None, upstream=upstream, upstream_default_model="gpt-4o-mini", local_model_name="local")
    layer = build_cache_layer(settings.cache, Dispatcher(tiers), GatewayMetrics(), WordLlamaEmbedder())
    await layer.start()
    client = redis.Redis.from_url(URL)
    try:
        yield layer, upstream, client
    finally:
        await layer.close()
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.unlink(key)
        client.close()


async def test_a_miss_is_indexed_once_the_client_has_its_answer() -> None:
    """The exact entry is stored before the answer goes out; the prompt's index row (embedding, guard signature)
    only by the answer's `after_send`, which the HTTP layer runs after the last byte."""
    async with semantic_layer("semafter") as (layer, upstream, client):
        semantic = layer.semantic.semantic  # type: ignore[union-attr]
        first, answer = await answered(layer, FIRST)
        assert (first.cache, first.tier) == ("miss", "upstream")
        stored = client.get(layer.key_for(first))  # the exact entry: stored before the answer
        assert stored is not None and decode_entry(stored).content == "Paris."
        assert first.parsed is not None
        scope_id = scope_of_request("anonymous", "upstream", "gpt-4o-mini", first.parsed.raw)[0].scope_id
        classes = semantic.guard.signature(PARAPHRASE).classes
        assert await semantic.index.class_rows(scope_id, classes) == (0, 0)  # not indexed yet
        assert (await answered(layer, "Which city is the capital of France?"))[0].cache == "miss"
        assert isinstance(answer.after_send, _Stored)
        await answer.after_send()
        await asyncio.gather(*semantic._indexing)
        assert await semantic.index.class_rows(scope_id, classes) == (1, 1)
        assert (await ask(layer, PARAPHRASE)).cache == "semantic-hit"
        assert len(upstream.calls) == 2  # the first prompt, and a paraphrase asked before its row was there


async def test_a_repeated_semantic_hit_is_one_get_and_takes_no_lock() -> None:
    async with semantic_layer("semhit") as (layer, upstream, _):
        first = await ask(layer, FIRST)
        assert (first.cache, first.tier) == ("miss", "upstream")
        semantic = layer.semantic.semantic  # type: ignore[union-attr]
        await asyncio.gather(*semantic._indexing)
        assert (await ask(layer, PARAPHRASE)).cache == "semantic-hit"  # reads the entry once
        paraphrase_key = layer.key_for(await ask(layer, PARAPHRASE))
        first_key = layer.key_for(first)
        with Monitor(URL) as seen:
            hits = [await ask(layer, PARAPHRASE), await ask(layer, PARAPHRASE), await ask(layer, FIRST)]
        assert [(ex.cache, ex.tier) for ex in hits] == [("semantic-hit", "cache")] * 2 + [("hit", "cache")]
        assert seen.commands == ['GET ' + paraphrase_key] * 2 + ['GET ' + first_key]
        assert len(upstream.calls) == 1

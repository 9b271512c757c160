"""One embedding per short chat prompt with the router's chat head and the semantic cache both on
(`gateway.embedding.recent.RecentEmbeddings` inside the gateway's `SharedEmbedder`): counted on the real embedder,
with the router's score exactly the score of a router with its own embedder."""

from __future__ import annotations

import asyncio

import json

import numpy as np
import pytest

from classifier import DEFAULT_MODEL_PATH, load_model
from gateway.build import build_gateway
from gateway.devtools.fake_backend import FakeBackend
from gateway.dispatch import Tiers
from gateway.embedding import SharedEmbedder, WordLlamaEmbedder
from gateway.embedding.recent import RecentEmbeddings
from gateway.exchange import Exchange
from gateway.openai.request import parse_chat_request
from gateway.settings import load_settings


class CountingEmbedder:
    """The bundled embedder, recording every call's texts."""

    def __init__(self, inner: WordLlamaEmbedder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def wordllama() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def test_a_text_embedded_lately_is_not_embedded_again(wordllama: WordLlamaEmbedder) -> None:
    counting = CountingEmbedder(wordllama)
    recent = RecentEmbeddings(counting, size=2, max_chars=40)
    assert (recent.name, recent.dim) == ("wordllama-l2_supercat-256", 256)
    first = recent.embed(["turn off dark mode"])
    first[0, 0] = 99.0  # a caller's change is its own: the remembered row is a copy
    again = recent.embed(["turn off dark mode"])
    assert counting.calls == [["turn off dark mode"]]
    assert again.shape == (1, 256) and again.dtype == np.float32
    assert np.array_equal(again, wordllama.embed(["turn off dark mode"]))  # the same bits
    recent.embed(["a", "b"])  # several texts: not remembered
    recent.embed(["x" * 41])  # too long: not remembered
    recent.embed(["x" * 41])
    recent.embed(["one"])
    recent.embed(["two"])  # the oldest of 2 goes: "turn off dark mode"
    recent.embed(["one"])
    recent.embed(["turn off dark mode"])
    assert counting.calls == [["turn off dark mode"], ["a", "b"], ["x" * 41], ["x" * 41], ["one"], ["two"],
                              ["turn off dark mode"]]


def test_the_shared_embedder_hands_out_the_remembering_one(wordllama: WordLlamaEmbedder) -> None:
    counting = CountingEmbedder(wordllama)
    shared = SharedEmbedder(lambda: counting)
    embedder = shared.get()
    assert isinstance(embedder, RecentEmbeddings) and embedder.inner is counting and shared.get() is embedder


async def ask(pipeline, text: str) -> Exchange:
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    ex = Exchange("r1", {}, 0.0)
    ex.accept("anonymous", parse_chat_request(json.dumps(body).encode()))
    answer = await pipeline.chat(ex)
    assert answer.status == 200
    if answer.after_send is not None:  # as the HTTP layer does once the client has the answer (indexing)
        await answer.after_send()
    return ex


@pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="shipped model not built yet")
async def test_router_and_semantic_cache_embed_a_short_prompt_once(wordllama: WordLlamaEmbedder) -> None:
    counting = CountingEmbedder(wordllama)
    settings = load_settings(environ={}, overrides={"access_log": False,
                                                    "cache": {"semantic": {"enabled": True, "default": True}}})
    tiers = Tiers(local=FakeBackend("local"), upstream=FakeBackend("upstream"),
                  upstream_default_model="gpt-4o-mini", local_model_name="local")
    pipeline = build_gateway(settings, tiers=tiers, embedder=SharedEmbedder(lambda: counting))
    alone = load_model(DEFAULT_MODEL_PATH, embedder=WordLlamaEmbedder())  # a router with its own embedder
    await pipeline.start()
    try:
        short = "What is the capital of France?"
        ex = await ask(pipeline, short)
        assert counting.calls == [[short]]  # the router's text is the prompt: embedded once, for both
        assert ex.cache == "miss" and ex.decision is not None and ex.decision.reason == "classifier"
        assert ex.decision.score == alone.score_messages([{"role": "user", "content": short}])  # bit for bit
        sample = pipeline.metrics.registry.get_sample_value
        assert sample("slm_gateway_semantic_cache_rejected_total", {"reason": "empty"}) == 1.0

        long = "Explain, step by step and with an example for each, " + "how a hash map handles collisions; " * 5
        assert 200 < len(long) <= 256
        counting.calls.clear()
        ex = await ask(pipeline, long)
        router_text = long[:100] + "\n" + long.rstrip()[-100:]
        # the lookup found its scope empty (another tier's scope than the first prompt's): decided before embedding,
        # the prompt is embedded by its index write, after the answer
        for _ in range(200):
            if len(counting.calls) >= 2:
                break
            await asyncio.sleep(0.01)
        assert counting.calls == [[router_text], [long]]  # the router embeds its 200-character cut: two texts
        assert sample("slm_gateway_semantic_cache_rejected_total", {"reason": "empty"}) == 2.0
        assert ex.decision is not None and ex.decision.score == alone.score_messages([{"role": "user", "content": long}])
    finally:
        await pipeline.stop()

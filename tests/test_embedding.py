"""The bundled embedder: offline, normalised float32, the same vectors as WordLlama's own inference."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.embedding import Embedder, EmbedderError, SharedEmbedder, WordLlamaEmbedder
from gateway.embedding.shared import load_bundled
from gateway.embedding.wordllama import TOKENIZER_FILE, WEIGHTS_FILE, package_dir


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def test_shape_dtype_and_unit_norm(embedder: WordLlamaEmbedder) -> None:
    vectors = embedder.embed(["How far is 5 miles in km?", "turn off dark mode", ""])
    assert embedder.name == "wordllama-l2_supercat-256"
    assert embedder.dim == 256
    assert vectors.shape == (3, 256)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), [1.0, 1.0], rtol=1e-6)
    assert not vectors[2].any()  # no tokens: the zero vector, similar to nothing
    assert embedder.embed([]).shape == (0, 256)


def test_same_vectors_as_wordllama_inference(embedder: WordLlamaEmbedder) -> None:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    from wordllama.inference import WordLlamaInference

    root = package_dir()
    reference = WordLlamaInference(
        load_file(str(root / WEIGHTS_FILE))["embedding.weight"], Tokenizer.from_file(str(root / TOKENIZER_FILE))
    )
    texts = ["Write a haiku about autumn.", "What is the capital of Australia?", "def f(x): return x + 1"]
    np.testing.assert_allclose(embedder.embed(texts), reference.embed(texts, norm=True), atol=1e-6)


def test_weights_come_from_the_wheel_not_a_download() -> None:
    root = package_dir()
    assert (root / WEIGHTS_FILE).stat().st_size == 16_384_096
    assert (root / TOKENIZER_FILE).is_file()


def test_missing_files_are_an_embedder_error(tmp_path) -> None:
    with pytest.raises(EmbedderError, match="cannot load the bundled WordLlama model"):
        WordLlamaEmbedder(root=tmp_path)


def test_dim_truncation_and_bounds(embedder: WordLlamaEmbedder) -> None:
    small = WordLlamaEmbedder(dim=64)
    assert small.name == "wordllama-l2_supercat-64"
    assert small.embed(["hello"]).shape == (1, 64)
    with pytest.raises(EmbedderError, match="dim must be in 1..256"):
        WordLlamaEmbedder(dim=512)


def test_max_tokens_bounds_the_work() -> None:
    short = WordLlamaEmbedder(max_tokens=4)
    long_text = "alpha beta gamma delta " * 200
    np.testing.assert_allclose(short.embed([long_text]), short.embed(["alpha beta gamma delta"]), atol=1e-6)


class CountingLoader:
    """`load_bundled`, counting its calls (or failing, for `fail=True`)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self) -> Embedder:
        self.calls += 1
        if self.fail:
            raise EmbedderError("no weights here")
        return load_bundled()


async def test_one_embedder_per_gateway_serves_v1_embeddings() -> None:
    from litestar.testing import AsyncTestClient

    from gateway.app import create_app
    from gateway.build import build_gateway
    from gateway.devtools.fake_backend import FakeBackend
    from gateway.dispatch import Tiers
    from gateway.routing.static import StaticRouter
    from gateway.settings import load_settings

    loader = CountingLoader()
    shared = SharedEmbedder(loader)
    settings = load_settings(environ={}, overrides={"access_log": False})
    tiers = Tiers(local=FakeBackend("local"), upstream=None, upstream_default_model=settings.upstream.default_model,
                  local_model_name=settings.local.model_name)
    pipeline = build_gateway(settings, tiers=tiers, router=StaticRouter(), embedder=shared)
    assert pipeline.embedder is shared and loader.calls == 0  # loaded on first use, not before
    async with AsyncTestClient(create_app(settings, pipeline)) as client:
        response = await client.post("/v1/embeddings", json={"model": "local-embedding", "input": "turn off dark mode"})
        assert response.status_code == 200
        embedder = shared.get()
        assert embedder is not None and loader.calls == 1  # the drop-in endpoints' embedder is the shared one
        (row,) = response.json()["data"]
        np.testing.assert_allclose(row["embedding"], embedder.embed(["turn off dark mode"])[0], rtol=1e-6)
    assert shared.get() is embedder and loader.calls == 1


def test_an_embedder_that_cannot_load_is_none_and_tried_once(caplog: pytest.LogCaptureFixture) -> None:
    loader = CountingLoader(fail=True)
    shared = SharedEmbedder(loader)
    assert shared.get() is None and shared.get() is None
    assert loader.calls == 1
    assert [r.getMessage() for r in caplog.records] == [
        "the bundled embedder could not be loaded: semantic caching and local embeddings are off"
    ]

"""`bench/miss_prompts.py`: bench/cache.py's `--misses populated` prompts are distinct, in the seeded rows' guard
classes, and misses through the real `SemanticCache` (bundled embedder, lexical guard, shipped threshold) however
many of them are stored before: embedded and scanned, with candidates above the threshold refused as word swaps."""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.cache.semantic.cache import SemanticMiss
from gateway.embedding import WordLlamaEmbedder
from tests.test_semantic_cache import embedder, make, sample, scoped  # noqa: F401 (a fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import miss_prompts  # noqa: E402

TTL_MS = 3_600_000


def test_the_texts_are_distinct_and_in_the_filler_classes() -> None:
    texts = miss_prompts.populated_texts(60_000)
    assert len(texts) == len(set(texts)) == 60_000
    assert texts[:2] == miss_prompts.populated_texts(2)
    assert texts[0] == "describe the history, climate and wildlife of the shovel newt teapot"
    miss_prompts.check_populated(60_000)


async def test_each_is_a_miss_after_the_ones_before_it_were_stored(embedder: WordLlamaEmbedder) -> None:  # noqa: F811
    cache, registry = make(embedder)
    reasons: dict[str, int] = {}
    for i, text in enumerate(miss_prompts.populated_texts(600)):
        scope, prompt, key = scoped("anonymous", text)
        found = await cache.lookup(scope, prompt)
        assert isinstance(found, SemanticMiss), (i, text)
        reasons[found.reason] = reasons.get(found.reason, 0) + 1
        await cache.entries.set(key, text.encode(), TTL_MS)
        assert await cache.store(scope, prompt, key, TTL_MS, found) is True
    assert reasons == {"empty": 1, "threshold": 9, "guard": 590}
    assert sample(registry, "slm_gateway_semantic_cache_hits_total") == 0
    assert sample(registry, "slm_gateway_semantic_cache_guard_refusals_total", check="swap") == 2326  # of 590 x <= 4
    assert sample(registry, "slm_gateway_semantic_cache_embed_seconds_count") == 600  # each once (the first by store)

"""`bench/paraphrases.py`: the distinct paraphrases bench/cache.py's semantic-hit runs rotate through are exactly
2,400 texts, every one a semantic hit of the stored prompt through the real `SemanticCache` (bundled embedder,
lexical guard, shipped threshold), and the rotation sends no text again within the prompt memo's size."""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.cache.semantic.cache import SemanticHit
from gateway.cache.semantic.calibrate import shipped_threshold
from gateway.cache.semantic.prompts import PromptMemo
from gateway.embedding import WordLlamaEmbedder
from tests.test_semantic_cache import embedder, make, remember, sample, scoped  # noqa: F401 (a fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import paraphrases  # noqa: E402


def test_the_candidates_are_2400_distinct_texts() -> None:
    texts = paraphrases.candidates()
    assert len(texts) == len(set(texts)) == 2400
    assert paraphrases.HIT_PROMPT not in texts and paraphrases.PARAPHRASE not in texts
    assert texts[0] == "what is the capital of France? (cache bench)"
    assert texts[-1] == "Hmm, what is the capital of france? cheers (cache bench)"
    assert PromptMemo().max_prompts == paraphrases.MEMO_PROMPTS < paraphrases.MIN_DISTINCT < len(texts)


def test_every_candidate_is_kept_with_its_own_vector() -> None:
    found = paraphrases.checked()
    assert found.refused == {}
    assert found.kept == paraphrases.candidates()
    assert found.embedder == "wordllama-l2_supercat-256"
    assert found.threshold == shipped_threshold(found.embedder) == 0.6214
    assert round(found.min_similarity, 4) == 0.7324
    assert "2,400 distinct paraphrases kept of 2,400" in found.summary()


async def test_every_candidate_is_a_semantic_hit_of_the_stored_prompt(embedder: WordLlamaEmbedder) -> None:  # noqa: F811
    cache, registry = make(embedder)
    key = await remember(cache, "anonymous", paraphrases.HIT_PROMPT, b"Paris")
    outcomes = []
    for text in paraphrases.candidates():
        scope, prompt, _ = scoped("anonymous", text)
        outcomes.append(await cache.lookup(scope, prompt))
    assert [type(o).__name__ for o in outcomes] == ["SemanticHit"] * 2400
    assert {o.entry_key for o in outcomes if isinstance(o, SemanticHit)} == {key}
    assert sample(registry, "slm_gateway_semantic_cache_hits_total") == 2400
    assert sample(registry, "slm_gateway_semantic_cache_rejected_total", reason="guard") == 0


def test_each_scope_gets_every_text_and_none_comes_back_within_the_memo() -> None:
    for scopes in (1, 100):
        n = 2400
        last: dict[int, int] = {}
        gaps = []
        per_scope: dict[int, set[int]] = {s: set() for s in range(scopes)}
        for i in range(2 * n * scopes):
            scope, text = paraphrases.rotation(i, n, scopes)
            per_scope[scope].add(text)
            if text in last:
                gaps.append(i - last[text])
            last[text] = i
        assert all(len(seen) == n for seen in per_scope.values())
        assert min(gaps) > paraphrases.MEMO_PROMPTS
        assert min(gaps) == (2400 if scopes == 1 else 2399)

"""`PieceTokenizer` + `WordLlamaEmbedder`: every bit of every vector is what the unmodified path gives
(`Tokenizer.encode(...).ids`, `table[ids].sum(axis=0)`, `np.linalg.norm`, division), on the repo's prompt sets, the
shared data sets and edge cases. CI embeds a fixed sample of the two shared sets; `SLM_EMBED_FULL=1` embeds all."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from gateway.embedding import WordLlamaEmbedder
from gateway.embedding.pieces import PieceTokenizer, independent_pieces
from gateway.embedding.wordllama import DEFAULT_MAX_TOKENS, TOKENIZER_FILE, package_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PAIRS = REPO / "gateway/cache/data/semantic_pairs.jsonl"
FULL = os.environ.get("SLM_EMBED_FULL") == "1"
SAMPLE_EVERY = 10
"""CI: every 10th prompt of the shared sets (125 arena-hard, 1,059 routing dev prompts)."""

EDGES = [
    "", " ", "   ", "\t", "\n", "\r\n", " \n \t ", "a", " a", "a ", "  a  ", "a  b", "a   b    c", "\u2581",
    "\u2581\u2581x", "x\u2581y", " \u2581 ", "a\u00a0b", "zero\u200bwidth", "\x00nul", "e\u0301t\u00e9",
    "Ünïcödé façade", "日本語のテキストです。", "Привет, мир!", "مرحبا بالعالم", "한국어 텍스트", "👍🏽 family 👨‍👩‍👧‍👦",
    "🔥", "🔥🔥", "\U0001d11e\U0001d11e", "🔥" * 300,
    "def f(x):\n    return x + 1\n", "if (a<b && c>d) { return a->b; }", "<p>html</p> <br/>",
    "SELECT * FROM t WHERE x < 5;", "<s>", "</s>", "<unk>", "a<s>b", "x </s> y", "<s><s>", " <unk> c", "<s",
    "< s>", "s>", "What is 5 miles in km?", "What is 50 miles in km?", "turn off dark mode",
    "alpha beta gamma delta " * 400, "x" * 5000, "antidisestablishmentarianism" * 40, "word," * 3000,
    " ".join(str(n) for n in range(3000)),
]


def shared(name: str, field: str) -> list[str]:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    texts = [json.loads(line)[field] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts if FULL else texts[::SAMPLE_EVERY]


def pair_texts() -> list[str]:
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(dict.fromkeys(text for row in rows for text in (row["a"], row["b"])))


def paraphrase_texts() -> list[str]:
    sys.path.insert(0, str(REPO / "bench"))
    import paraphrases

    return [paraphrases.HIT_PROMPT, paraphrases.PARAPHRASE, *paraphrases.candidates()]


def tokenizer(max_tokens: int) -> Tokenizer:
    """The tokenizer as the unmodified embedder set it up."""
    tok = Tokenizer.from_file(str(package_dir() / TOKENIZER_FILE))
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    return tok


def unmodified(embedder: WordLlamaEmbedder, texts: list[str]) -> np.ndarray:
    """The embedder's loop before `PieceTokenizer`, line for line."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    encode = tokenizer(embedder.max_tokens).encode
    for row, text in enumerate(texts):
        ids = encode(text, add_special_tokens=False).ids
        if not ids:
            continue
        vector = embedder._table[ids].sum(axis=0)
        norm = float(np.linalg.norm(vector))
        if norm > 0.0:
            out[row] = vector / norm
    return out


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def assert_bit_identical(embedder: WordLlamaEmbedder, texts: list[str]) -> None:
    expected = unmodified(embedder, texts)
    cold = np.concatenate([embedder.embed([text]) for text in texts]) if texts else expected[:0]
    warm = embedder.embed(texts)  # every piece remembered by now
    for got in (cold, warm):
        assert got.dtype == expected.dtype == np.float32 and got.shape == expected.shape
        differ = [texts[i][:60] for i in np.flatnonzero((got.view(np.uint32) != expected.view(np.uint32)).any(axis=1))]
        assert differ == [] and np.array_equal(got, expected)


def test_the_bundled_tokenizer_takes_the_piece_path() -> None:
    assert PieceTokenizer(tokenizer(DEFAULT_MAX_TOKENS), DEFAULT_MAX_TOKENS).fast is True


def test_edge_cases_are_bit_identical(embedder: WordLlamaEmbedder) -> None:
    assert_bit_identical(embedder, EDGES)
    assert not embedder.embed([""]).any()


def test_pair_set_and_bench_paraphrases_are_bit_identical(embedder: WordLlamaEmbedder) -> None:
    texts = pair_texts() + paraphrase_texts()
    assert len(texts) == 770 + 2_402
    assert_bit_identical(embedder, texts)


def test_arena_hard_prompts_are_bit_identical(embedder: WordLlamaEmbedder) -> None:
    texts = shared("chat/arena-hard-prompts.jsonl", "prompt")
    assert len(texts) == (1_250 if FULL else 125)
    assert_bit_identical(embedder, texts)


def test_routing_dev_prompts_are_bit_identical(embedder: WordLlamaEmbedder) -> None:
    texts = shared("routing/dev.jsonl", "prompt")
    assert len(texts) == (10_588 if FULL else 1_059)
    assert_bit_identical(embedder, texts)


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 7, 8, 12, 64])
def test_truncation_is_the_tokenizers(max_tokens: int) -> None:
    texts = EDGES + pair_texts()[:200]
    encode = tokenizer(max_tokens).encode
    pieces = PieceTokenizer(tokenizer(max_tokens), max_tokens)
    assert [pieces.ids(t) for t in texts] == [encode(t, add_special_tokens=False).ids for t in texts]
    assert_bit_identical(WordLlamaEmbedder(dim=64, max_tokens=max_tokens), EDGES)


def test_a_tiny_piece_memo_evicts_and_stays_exact() -> None:
    texts = pair_texts()[:300] + EDGES
    pieces = PieceTokenizer(tokenizer(DEFAULT_MAX_TOKENS), DEFAULT_MAX_TOKENS, pieces=4)
    encode = tokenizer(DEFAULT_MAX_TOKENS).encode
    assert [pieces.ids(t) for t in texts] == [encode(t, add_special_tokens=False).ids for t in texts]


def test_a_lone_surrogate_fails_as_the_tokenizer_does(embedder: WordLlamaEmbedder) -> None:
    with pytest.raises(TypeError, match="TextInputSequence must be str"):
        embedder.embed(["a \ud800 b"])


def test_other_tokenizers_go_through_encode() -> None:
    config = json.loads(tokenizer(DEFAULT_MAX_TOKENS).to_str())
    assert independent_pieces(config) is True
    changed = [
        {**config, "pre_tokenizer": {"type": "Whitespace"}},
        {**config, "normalizer": None},
        {**config, "model": {**config["model"], "dropout": 0.1}},
        {**config, "model": {**config["model"], "ignore_merges": True}},
        {**config, "model": {**config["model"], "vocab": {**config["model"]["vocab"], "a\u2581b": 32_000}}},
    ]
    assert [independent_pieces(c) for c in changed] == [False] * 5
    slow = PieceTokenizer(Tokenizer.from_str(json.dumps(changed[0])), DEFAULT_MAX_TOKENS)
    assert slow.fast is False and slow.ids("hello world") == [29871, 12199, 29871, 11526]  # "▁", "hello", "▁", "world"

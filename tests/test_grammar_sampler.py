"""Grammar-first sampling (gateway/tiers/grammar_sampler.py) on the real bundled model: the grammar is checked
against the sampled token, applied to the top of the vocabulary or to all of it only after a rejection, and the
answers are the ones llama-cpp-python's stock full-vocabulary grammar pass gives."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import jsonschema
import pytest

from gateway.tiers.bundled_model import ensure_bundled_model
from gateway.tiers.grammar import schema_grammar
from gateway.tiers.grammar_sampler import GrammarFirstLlama, GrammarFirstSampler
from gateway.tiers.llama_generation import GenerationResult, SamplingParams, generate

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm() -> Iterator[GrammarFirstLlama]:
    model = GrammarFirstLlama(str(ensure_bundled_model()), n_ctx=1024, n_threads=1, verbose=False)
    yield model
    model.close()


def run(
    llm: GrammarFirstLlama, prompt: str, grammar: str, *, grammar_first: bool, temperature: float = 0.0,
    seed: int | None = None,
) -> tuple[GenerationResult, GrammarFirstSampler | None]:
    llm.grammar_first = grammar_first
    llm.reset()
    text = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
    params = SamplingParams(max_tokens=48, temperature=temperature, seed=seed, grammar=grammar)
    result = generate(llm, tokens, params, None, threading.Event())
    sampler = llm._sampler
    return result, sampler if isinstance(sampler, GrammarFirstSampler) else None


def test_greedy_json_matches_the_full_vocabulary_pass(llm: GrammarFirstLlama) -> None:
    grammar = schema_grammar(PERSON)
    fast, sampler = run(llm, "Extract as JSON: Bob is 42.", grammar, grammar_first=True)
    stock, none = run(llm, "Extract as JSON: Bob is 42.", grammar, grammar_first=False)
    assert fast.text == stock.text == '{"name": "Bob", "age": 42}'
    assert fast.completion_tokens == stock.completion_tokens == 13
    jsonschema.validate(json.loads(fast.text), PERSON)
    assert none is None and sampler is not None
    assert sampler.counts.sampled == 14  # 13 tokens and the end of generation
    assert (sampler.counts.window, sampler.counts.full) == (2, 0)  # two rejections, both settled in the window


def test_a_grammar_the_model_would_never_follow_falls_back_to_the_whole_vocabulary(llm: GrammarFirstLlama) -> None:
    fast, sampler = run(llm, "Say hello", 'root ::= "zqxj"', grammar_first=True)
    stock, _ = run(llm, "Say hello", 'root ::= "zqxj"', grammar_first=False)
    assert fast.text == stock.text == "zqxj"
    assert sampler is not None
    # every sampled token was rejected; one of them ("z" after "Say hello") was not among the top 1024 logits
    assert (sampler.counts.sampled, sampler.counts.window, sampler.counts.full) == (5, 4, 1)


def test_a_choice_grammar_is_honoured(llm: GrammarFirstLlama) -> None:
    fast, _ = run(llm, "Say hello", 'root ::= "yes" | "no"', grammar_first=True)
    stock, _ = run(llm, "Say hello", 'root ::= "yes" | "no"', grammar_first=False)
    assert fast.text == stock.text == "no"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sampled_json_validates_and_is_reproducible_by_seed(llm: GrammarFirstLlama, seed: int) -> None:
    grammar = schema_grammar(PERSON)
    first, _ = run(llm, "Extract as JSON: Bob is 42.", grammar, grammar_first=True, temperature=1.0, seed=seed)
    again, _ = run(llm, "Extract as JSON: Bob is 42.", grammar, grammar_first=True, temperature=1.0, seed=seed)
    assert first.text == again.text
    assert json.loads(first.text) == {"name": "Bob", "age": 42}
    jsonschema.validate(json.loads(first.text), PERSON)


def test_a_grammar_llama_cpp_rejects_raises(llm: GrammarFirstLlama) -> None:
    with pytest.raises(ValueError, match="llama.cpp rejected the grammar"):
        GrammarFirstSampler(llm._model.vocab, llm.n_vocab(), "root ::= (", "root", temp=0.0, top_k=40, top_p=1.0,
                            min_p=0.05, seed=1)

"""The open-chat head: family choice, format-free features, the head's scoring, saving, and the shipped model.

Run alone: ``python -m pytest tests/test_classifier_chat.py -q``.  Uses the real bundled embedder (WordLlama).
"""

from __future__ import annotations

import asyncio
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from classifier import DEFAULT_MODEL_PATH, ModelLoadError, load_model
from classifier.chathead import LEVELS, ChatHead
from classifier.data import RoutingDataset
from classifier.features import CHAT, family, segment, truncate, word_problem_shaped
from classifier.fit import RouterConfig, fit_router
from classifier.generic import GENERIC_FEATURE_NAMES, generic_features, question_text
from classifier.model import bundled_embedder, chat_inputs, messages_text, save_model

MC = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
WORD_PROBLEM = "Tom buys 3 boxes of 12 eggs and breaks 5. How many eggs are left?"
HAIKU = "Write a haiku about autumn leaves."
CODE = "Implement a lock-free queue in C++ with std::atomic; explain the memory orderings."

DEV_DATA = Path(os.environ.get("SLM_ROUTING_DEV_DATA")
                or Path(__file__).resolve().parents[1].parent / "shared/data/routing/dev.jsonl")
"""The routing dev set: shared/ beside the repository (as CI lays it), or SLM_ROUTING_DEV_DATA."""


def test_families_of_prompts() -> None:
    assert [family(t) for t in (MC, WORD_PROBLEM, HAIKU, CODE)] == ["mc", "text", CHAT, CHAT]
    assert [segment(t) for t in (MC, WORD_PROBLEM, HAIKU, CODE)] == ["mc", "text", "text", "text"]
    # word-problem shaped: one paragraph, a quantity, a last sentence asking for a quantity
    assert word_problem_shaped("Calculate the total cost of 4 pens at $2 each and 3 books at $7 each.")
    assert not word_problem_shaped("How many moons does Jupiter have?")  # no quantity in the text
    assert not word_problem_shaped("x = 3\nHow many times does the loop run for 5 items?")  # two lines
    assert not word_problem_shaped("In Python, how many items does `range(5)` yield?")  # code characters


def test_question_text_cuts_the_multiple_choice_scaffolding() -> None:
    assert question_text(MC) == "Which planet is largest?"
    assert question_text(WORD_PROBLEM) == WORD_PROBLEM
    # a single lettered line is content, not options
    assert question_text("Explain point A. first, then the rest.") == "Explain point A. first, then the rest."


def test_generic_features_of_a_fixed_text() -> None:
    text = "Write a Python function f(x) that returns x**2 + 1; it must not use loops.\n1. code\n2. tests?"
    values = dict(zip(GENERIC_FEATURE_NAMES, generic_features(text)))
    assert len(values) == len(GENERIC_FEATURE_NAMES) == 20
    expected_counts = {  # each feature is log1p(count)
        "g_log_chars": 92,
        "g_log_words": 16,  # [a-z]+ tokens of the lower-cased text
        "g_log_lines": 2,
        "g_log_numbers": 4,  # 2, 1, 1, 2
        "g_log_math": 3,  # '*', '*', '+'
        "g_log_latex": 0,
        "g_log_code_fences": 0,
        "g_log_code_tokens": 2,  # ';' and the word "function"
        "g_log_questions": 1,
        "g_log_sentences": 4,  # "loops.", "1.", "2.", "tests?"
        "g_log_instructions": 1,  # write
        "g_log_constraints": 1,  # must
        "g_log_enumerations": 2,
    }
    assert len(text) == 92
    for name, count in expected_counts.items():
        assert values[name] == pytest.approx(np.log1p(count), abs=1e-12), name
    assert values["g_digit_frac"] == pytest.approx(4 / len(text))
    assert values["g_math_frac"] == pytest.approx(3 / len(text))
    assert values["g_negation"] == 1.0
    assert values["g_upper_frac"] == pytest.approx(2 / len(text))  # W, P
    assert values["g_words_per_sentence"] == pytest.approx(np.log1p(16 / 4))
    assert values["g_mean_word_len"] == 60 / 16 and values["g_long_word_frac"] == 0.0


def _head_params(**over: object) -> dict:
    params: dict = {
        "embedder": "e", "dim": 2, "embed_chars": 10, "feature_chars": 20, "mean": np.zeros(1), "scale": np.ones(1), "clip": 3.0,
        "coef": np.array([1.0, -1.0, 2.0]), "intercept": 0.0,
        "raw_quantiles": LEVELS.copy(), "score_quantiles": 0.5 + 0.5 * LEVELS,
    }
    params.update(over)
    return params


def test_chat_head_scores_and_refuses_bad_arrays() -> None:
    head = ChatHead(_head_params())
    # logit = 1*0.6 - 1*0.8 + 2*clip(10, -3, 3) = 5.8; raw = sigmoid(5.8); score = 0.5 + 0.5 * raw
    raw = 1.0 / (1.0 + np.exp(-5.8))
    assert head.score(np.array([0.6, 0.8]), [10.0]) == pytest.approx(0.5 + 0.5 * raw, abs=1e-12)
    assert head.score_many(np.array([[0.6, 0.8]]), np.array([[10.0]]))[0] == pytest.approx(0.5 + 0.5 * raw, abs=1e-12)
    assert ChatHead(head.to_params()).to_params()["coef"].tolist() == [1.0, -1.0, 2.0]
    for bad in ({"coef": np.ones(2)}, {"scale": np.zeros(1)}, {"raw_quantiles": LEVELS[::-1].copy()},
                {"clip": 0.0}, {"coef": np.array([np.nan, 1.0, 1.0])}, {"embed_chars": 0}, {"feature_chars": 0}):
        with pytest.raises(ValueError):
            ChatHead(_head_params(**bad))
    with pytest.raises(ValueError, match="lacks coef"):
        ChatHead({k: v for k, v in _head_params().items() if k != "coef"})


def _chat_rows(n: int = 300) -> RoutingDataset:
    """Multiple-choice rows, and free-text rows where the weak model fails the maths questions."""
    prompts, weak, strong, bench = [], [], [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        if i % 3 == 0:
            prompts.append(f"Question {i} about a capital city?\nA. one\nB. two\nC. three\nD. four\nAnswer:")
            bench.append("mmlu")
            weak.append(bool(rng.random() < 0.8))
        else:
            hard = i % 2 == 0
            topic = "prove the integral inequality for the eigenvalues" if hard else "write a short greeting card"
            prompts.append(f"Please {topic} number {i}.")
            bench.append("chat")
            weak.append(bool(rng.random() < (0.2 if hard else 0.9)))
        strong.append(bool(weak[-1] or rng.random() < 0.7))
    return RoutingDataset(prompts, np.array(bench, dtype=object), np.array(weak), np.array(strong))


@pytest.fixture(scope="module")
def chat_router():
    embedder = bundled_embedder()
    config = RouterConfig(word_features=2**10, tree_weight=0.0, min_segment_rows=50, chat_min_rows=100)
    return fit_router(_chat_rows(), config, embedder), embedder


def test_a_router_with_a_chat_head_scores_open_chat_with_it(chat_router, tmp_path: Path) -> None:
    router, embedder = chat_router
    assert router.chat_head is not None and router.chat_head.embedder == "wordllama-l2_supercat-256"
    hard, easy = "Please prove the integral inequality for the eigenvalues.", "Please write a short greeting card."
    assert [router.family_of(t) for t in (hard, easy, MC)] == [CHAT, CHAT, "mc"]
    s_hard, s_easy = router.score(hard), router.score(easy)
    assert s_hard > s_easy
    many = router.score_many([hard, easy, MC])
    assert many[:2].tolist() == pytest.approx([s_hard, s_easy], abs=1e-12)
    assert many[2] == pytest.approx(router.score(MC), abs=1e-6)  # the family models' float32 batch path
    q, feats = chat_inputs(hard, router.chat_head.feature_chars, router.chat_head.embed_chars)
    assert s_hard == pytest.approx(router.chat_head.score(embedder.embed([q])[0], feats), abs=0)
    # save/load: identical scores, and the head is in the file as plain arrays
    path = save_model(router, tmp_path / "r.skops")
    again = load_model(path, embedder=embedder)
    texts = [hard, easy, MC, HAIKU, CODE]
    assert again.score_many(texts).tolist() == router.score_many(texts).tolist()
    assert [again.score(t) for t in texts] == [router.score(t) for t in texts]
    assert "chat" in zipfile.ZipFile(path).read("schema.json").decode()


def test_a_chat_head_needs_its_own_embedder(chat_router, tmp_path: Path) -> None:
    router, embedder = chat_router
    path = save_model(router, tmp_path / "r.skops")

    class Other:
        name, dim = "another-embedder", 256

        def embed(self, texts: list[str]) -> np.ndarray:
            return np.zeros((len(texts), 256), dtype=np.float32)

    with pytest.raises(ModelLoadError, match="fitted with embedder 'wordllama-l2_supercat-256'"):
        load_model(path, embedder=Other())


def test_small_training_sets_get_no_chat_head() -> None:
    router = fit_router(_chat_rows(), RouterConfig(word_features=2**10, tree_weight=0.0, min_segment_rows=50))
    assert router.chat_head is None and router.family_of(HAIKU) == "text"  # 300 rows < chat_min_rows


# ------------------------------------------------------------------------------------------- shipped model
EASY = ["Write a haiku about autumn leaves.", "What is the capital of France?", "Say hello in Spanish."]
HARD = ["Prove that there are infinitely many primes p such that p ≡ 3 (mod 4).",
        "Explain quantum entanglement and Bell's theorem, and why it does not allow faster-than-light signalling.",
        "Implement a lock-free multi-producer multi-consumer queue in C++ using std::atomic and explain the "
        "memory orderings."]


@pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="shipped model not built yet")
def test_the_shipped_model_tells_easy_from_hard_chat_prompts() -> None:
    """Prompts written for this test (not from any data set): the default policy's threshold (the training
    scores' 60th percentile) keeps the easy ones local and sends the hard ones upstream."""
    model = load_model()
    assert model.chat_head is not None
    threshold = model.metadata["score_quantiles"]["p60"]
    easy = [model.score_messages([{"role": "user", "content": t}]) for t in EASY]
    hard = [model.score_messages([{"role": "user", "content": t}]) for t in HARD]
    assert {model.family_of(t) for t in EASY + HARD} == {CHAT}
    assert max(easy) < threshold < min(hard)
    assert [round(s, 4) for s in easy + hard] == SHIPPED_SCORES


SHIPPED_SCORES = [0.5521, 0.5236, 0.5344, 0.6852, 0.5747, 0.5928]  # easy, then hard; threshold 0.5661


@pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="shipped model not built yet")
def test_the_gateway_hands_its_one_embedder_to_the_router() -> None:
    from gateway.embedding.shared import SharedEmbedder
    from gateway.routing.reloadable import ReloadableRouter, RouterSource

    shared = SharedEmbedder()
    router = ReloadableRouter(RouterSource(embedder=shared.get))
    assert router.current.scorer.embedder is shared.get()  # one copy of the weights per gateway
    first = router.current
    results = asyncio.run(router.reload())  # a reload keeps using it
    assert [(r.component, r.result) for r in results] == [("policy", "success"), ("classifier", "success")]
    assert router.current is not first and router.current.scorer.embedder is shared.get()


LONG_STEM = (
    "A 54-year-old man comes to the emergency department because of chest pain that began two hours ago while he "
    "was shovelling snow. The pain is substernal, pressure-like and radiates to his left arm and jaw. "
) * 7 + "Which of the following is the most appropriate next step in management?"
LONG_MC = LONG_STEM + ("\nA. Aspirin and a 12-lead electrocardiogram\nB. Discharge with a follow-up visit"
                       "\nC. Oral antibiotics for 10 days\nD. Abdominal ultrasonography\nAnswer:")
CUT = 1200  # the shipped featurizer's max_chars: the text the gateway scored was cut there


@pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="shipped model not built yet")
def test_a_long_multiple_choice_prompt_is_scored_with_its_options() -> None:
    """A multiple-choice question whose options start after the cut: the gateway used to score its first 1,200
    characters, options lost, as chat. Now the whole prompt: the `mc` family, and exactly the score of the
    features the model was trained on (head and tail halves, the prompt's own length): `score` of the prompt, and
    within float32 rounding (2.4e-8 here) `score_many`, the training path (featurizer.transform, sklearn's
    predict_proba)."""
    model = load_model()
    assert model.featurizer.max_chars == CUT and LONG_MC.index("\nA. ") > CUT
    messages = [{"role": "user", "content": LONG_MC}]
    assert messages_text(messages, CUT) == LONG_MC
    assert (model.family_of(LONG_MC[:CUT]), model.family_of(LONG_MC)) == (CHAT, "mc")  # before, now
    seen = truncate(LONG_MC, CUT)  # what the mc head reads: all four options, after the stem's head
    assert [seen.count(f"\n{c}. ") for c in "ABCD"] == [1, 1, 1, 1]
    expected = float(model.score_many([LONG_MC])[0])
    assert model.score_messages(messages) == model.score(LONG_MC)
    assert abs(model.score_messages(messages) - expected) < 1e-7
    assert round(expected, 4) == LONG_MC_SCORE
    assert round(model.score(LONG_MC[:CUT]), 4) == LONG_MC_CUT_SCORE  # what the old cut scored, as chat


LONG_MC_SCORE, LONG_MC_CUT_SCORE = 0.5808, 0.5599

@pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="shipped model not built yet")
def test_the_score_cli_scores_messages_as_the_gateway_does() -> None:
    """`classifier score` on a `messages` row gives the gateway's score (`score_messages`), also past the cut."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    row = {"id": "long-mc", "messages": [{"role": "user", "content": LONG_MC}]}
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "classifier.cli", "classifier", "score"], input=json.dumps(row) + "\n",
                          capture_output=True, text=True, cwd=repo, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"id": "long-mc", "p_strong": round(load_model().score_messages(row["messages"]), 6)}
    assert round(json.loads(proc.stdout)["p_strong"], 4) == LONG_MC_SCORE  # not the old cut's 0.5599
  # the default threshold is 0.5661: upstream now, local before


def test_a_long_last_turn_is_scored_whole_and_short_ones_as_before() -> None:
    long_turn, short = "x" * 30 + "?", "What is 2 + 2?"
    chat = [{"role": "user", "content": short}, {"role": "assistant", "content": "4"}, {"role": "user", "content": long_turn}]
    assert messages_text(chat, 20) == long_turn  # longer than the cut: whole, the earlier turns left out
    assert messages_text(chat[:2] + [{"role": "user", "content": "Why?"}], 12) == "Why?\nWhat is"  # cut as before
    assert messages_text([{"role": "user", "content": "y" * 20}], 20) == "y" * 20


@pytest.mark.skipif(not DEV_DATA.is_file(), reason="dev data not available")
def test_dev_prompts_under_the_cut_are_scored_as_before() -> None:
    """Every dev prompt no longer than the cut, sent as one user message, is scored on the very text the old
    cut gave (so every decision is the same); the longer ones are scored whole."""
    prompts = [json.loads(line)["prompt"] for line in DEV_DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    short = [p for p in prompts if len(p) <= CUT]
    assert (len(prompts), len(short)) == (10_588, 9_718)
    assert sum(messages_text([{"role": "user", "content": p}], CUT) != p[:CUT] for p in short) == 0
    assert all(messages_text([{"role": "user", "content": p}], CUT) == p for p in prompts if len(p) > CUT)

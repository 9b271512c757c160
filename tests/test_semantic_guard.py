"""The lexical guard: which check refuses each classic near miss, and that paraphrases pass."""

from __future__ import annotations

import pytest

from gateway.cache.semantic.guard import (
    GUARD_VERSION,
    GuardSignature,
    LexicalGuard,
    decode_signature,
    encode_signature,
)

guard = LexicalGuard()


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("How far is 5 miles in km?", "How far is 50 miles in km?", "numbers"),
        ("Convert five miles to km", "Convert 6 miles to km", "numbers"),
        ("Convert 1,000 miles to km", "Convert 1.000 miles to km", "numbers"),
        ("How do I turn on dark mode?", "How do I turn off dark mode?", "polarity"),
        ("How do I enable two-factor login?", "How do I disable two-factor login?", "polarity"),
        ("Sort the array in ascending order", "Sort the array in descending order", "polarity"),
        ("Write a haiku about autumn", "Write a limerick about autumn", "form"),
        ("Why does my code compile?", "Why does my code not compile?", "negation"),
        ("Make a cake without eggs", "Make a cake with eggs", "negation"),
        ("Translate hello into French", "Translate hello into German", "language"),
        ("Sort an array in JavaScript", "Sort an array in Rust", "language"),
        ("Sort an array in C++", "Sort an array in C#", "language"),
        ("Convert 10 kilograms to pounds", "Convert 10 grams to pounds", "unit"),
        ("Who founded Microsoft?", "When was Microsoft founded?", "wh"),
        ("What does x == y mean?", "What does x != y mean?", "symbols"),
        ('Reverse the word "stressed"', 'Reverse the word "desserts"', "quoted"),
        ("What is the capital of France?", "Quelle est la capitale de la France et pourquoi ?", "tongue"),
        ("Tell me about Paris", "Tell me about Berlin", "entity"),
        ("What does df.loc do in pandas?", "What does df.iloc do in pandas?", "entity"),
        ("What is the NASA budget?", "What is the ESA budget?", "entity"),
        ("How do I sort a list in Python?", "How do I reverse a list in Python?", "polarity"),
        ("How do I merge two dictionaries in Python?", "How do I compare two dictionaries in Python?", "swap"),
        ("What is the boiling point of water?", "What is the freezing point of water?", "polarity"),
        ("What are the symptoms of flu?", "What are the treatments for flu?", "swap"),
        ("Give me a vegetarian lasagna recipe", "Give me a lasagna recipe", "qualifier"),
        ("Give me a vegan chocolate cake recipe", "Give me a chocolate cake recipe", "qualifier"),
        ("Is it safe to eat raw cookie dough?", "Is it safe to eat cookie dough?", "qualifier"),
        ("Suggest healthy snacks for kids", "Suggest snacks for kids", "qualifier"),
        ("How do I read a file in python", "How do I write a file in python", "qualifier"),  # `write`: a request word
        ("How do I delete a branch in git", "How do I delete a remote branch in git", "qualifier"),
        ("How much water should I drink per day?", "How much water should my dog drink per day?", "qualifier"),
        ("what does ls -la do", "what does ls -l do", "entity"),  # flags are code tokens
        ("git push --force to main", "git push to main", "entity"),
    ],
)
def test_near_misses_are_refused_by_name(a: str, b: str, reason: str) -> None:
    assert guard.agree(a, b) == reason
    assert guard.agree(b, a) == reason


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I sort a list in Python?", "What is the best way to sort a Python list?"),
        ("Convert five miles to km", "Convert 5 miles to kilometers"),
        ("Write a poem on love", "Compose a poem about love"),
        ("How do I use my_func in pandas?", "How can I use my_func with pandas?"),
        ("Write a binary search in Haskell.", "Implement binary search in Haskell."),
        ("How can I increase my credit score quickly?", "How do I increase my credit score fast?"),
        ("Write a short story about a cat who learns to fly.", "Create a short story about a cat that learns to fly."),
        ("How do I turn on dark mode?", "How can I switch on dark mode?"),
        ("Summarize the plot of Inception.", "Give me a summary of the plot of Inception."),
        ("Give me a vegetarian lasagna recipe", "What is a good vegetarian lasagna recipe?"),
        ("Explain recursion for beginners", "Explain recursion to a beginner"),  # forms of one group
        ("Is it legal to record a phone call?", "Is recording a phone call legal?"),
        ("What does ls -la do?", "Explain ls -la"),
        ("Tell me a joke about cats", "Tell me a cat joke"),
    ],
)
def test_paraphrases_agree(a: str, b: str) -> None:
    assert guard.agree(a, b) is None


def test_on_as_a_preposition_is_not_a_polarity() -> None:
    assert guard.agree("Write a poem on autumn", "Write a poem about autumn") is None
    assert guard.agree("Turn on the light", "Turn the light") == "polarity"


def test_signatures_round_trip_and_hold_no_words() -> None:
    signature = guard.signature("What is the capital of Australia?")
    data = encode_signature(signature)
    assert decode_signature(data) == signature
    assert b"Australia" not in data and b"australia" not in data and b"capital" not in data
    assert decode_signature(b"\xff garbage") is None


def test_another_guard_version_never_agrees() -> None:
    mine = guard.signature("What is the capital of Australia?")
    theirs = GuardSignature(GUARD_VERSION + 1, mine.tongue, mine.classes, mine.marks, mine.words, mine.content)
    assert guard.disagreement(mine, theirs) == "version"

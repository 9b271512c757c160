"""The lexical guard: which check refuses each classic near miss, and that paraphrases pass."""

from __future__ import annotations

import msgspec
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
        # meaning carried by word order (the order check)
        ("convert celsius to fahrenheit", "convert fahrenheit to celsius", "order"),
        ("Did Germany beat Brazil?", "Did Brazil beat Germany?", "order"),
        ("Brazil was beaten by Germany", "Germany was beaten by Brazil", "order"),
        ("translate English to French", "translate French to English", "order"),
        ("is an elephant bigger than a mouse", "is a mouse bigger than an elephant", "order"),
        ("move files from Downloads to Documents", "move files from Documents to Downloads", "order"),
        ("USD to EUR", "EUR to USD", "order"),
        ("Is 0.1 greater than 0.01?", "Is 0.01 greater than 0.1?", "order"),  # a number is one side
        ("Subtract 3 from 10", "Subtract 10 from 3", "order"),
        ("Use tabs instead of spaces", "Use spaces instead of tabs", "order"),
        ("convert celsius to fahrenheit and fahrenheit to celsius", "convert celsius to fahrenheit", "order"),
        ("Redirect HTTP to HTTPS", "Redirect HTTPS to HTTP", "order"),  # an acronym is not stemmed
        ("how many feet in a mile", "how many miles in a foot", "order"),  # `in a` after "how many"
        ("how many ounces in a pound", "how many pounds in an ounce", "order"),
        ("the population of the us", "the population of the uk", "swap"),  # "the us" is not the pronoun
        # courtesies asked about are content words; "every other" is a number (guard version 4)
        ("How do I say thank you in Japanese?", "How do I say sorry in Japanese?", "swap"),
        ("How do I say hello in French?", "How do I say goodbye in French?", "swap"),
        ("Remind me to water the plants every day", "Remind me to water the plants every other day", "numbers"),
        ("Take one pill every other day", "Take one pill every day", "numbers"),
        ("What is 5!", "What is 5", "symbols"),  # a factorial, not an exclamation
        ("What is n!", "What is n", "symbols"),
        ("Explain inner join vs outer join", "Explain inner join", "qualifier"),  # a comparison asks for both
        ("Explain how to tie a tie", "Explain how to untie a tie", "polarity"),  # an action and its un- undoing
        ("What is the GDP per capita of India?", "What is the GDP of India?", "qualifier"),
        ("How do I unmute myself on Zoom?", "How do I mute myself on Zoom?", "polarity"),
        ("How do I undo a git commit?", "How do I redo a git commit?", "polarity"),
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
        # words moved around a directional word or a comma, the same request
        ("How far is Lyon from Paris?", "How far is it from Paris to Lyon?"),  # `from` reads right to left
        ("How do I get from the airport to downtown?", "How do I get downtown from the airport?"),
        ("Was Brazil defeated by Germany?", "Did Germany defeat Brazil?"),  # `by` after a participle reverses
        ("Do I need a visa to travel to Japan?", "To travel to Japan, do I need a visa?"),  # a comma ends a side
        ("Python vs Java for web development", "Java vs Python for web development"),  # `vs` is symmetric
        ("what's France's capital city", "capital of France?"),
        ("converting http to https", "convert http to https"),  # inflections still merge
        ("How many feet are in a mile?", "A mile is how many feet?"),
        ("Convert 5 miles to km", "What is 5 miles in km?"),  # `in` without "how many ... in a" has no direction
        ("What is the population of the US?", "What is the population of the us?"),  # a possessive is the word (an entity's too)
        ("convert celsius to fahrenheit and fahrenheit to celsius", "convert fahrenheit to celsius and celsius to "
         "fahrenheit"),
        ("How do I say thank you in Japanese?", "How do I say thanks in Japanese?"),
        ("Hi, how do I reverse a string in Python?", "How can I reverse a string in Python?"),  # only polite: added
        ("Hello, what is the capital of France?", "What is the capital city of France?"),
        ("Please translate to Spanish: The meeting is at noon.", "Translate this sentence to Spanish: The meeting is "
         "at noon."),  # `please` stays a stop word
        ("Hi. Thanks. How do I center a div?", "How do I center a div?"),  # opening a sentence: only polite
        ("Thank you. What is the capital of France?", "What is the capital city of France?"),
        ("Thank you! What is the capital of France?", "What is the capital city of France?"),  # "you!" ends a word
        ("Write a slogan for my bakery: Fresh bread daily!!", "Write a slogan for my bakery: Fresh bread daily"),
        ("What is the difference between TCP and UDP?", "TCP vs UDP"),  # both compare
        ("Explain how to tie a tie", "How do I tie a necktie?"),
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


def test_order_pairs_round_trip_and_hold_no_words() -> None:
    signature = guard.signature("Convert Celsius to Fahrenheit")
    assert len(signature.order) == 2  # (convert, fahrenheit), (celsius, fahrenheit)
    data = encode_signature(signature)
    assert decode_signature(data) == signature
    assert b"elsius" not in data and b"ahrenheit" not in data
    assert guard.signature("What is the capital of Australia?").order == frozenset()


def test_a_version_1_row_decodes_and_is_refused_as_version() -> None:
    """Rows stored before the order check (six fields, version 1) are a lost hit, never a wrong one."""
    mine = guard.signature("convert celsius to fahrenheit")
    old = msgspec.msgpack.encode([1, mine.tongue, mine.classes, mine.marks, mine.words, mine.content])
    stored = decode_signature(old)
    assert stored is not None and stored.version == 1 and stored.order == frozenset()
    assert GUARD_VERSION == 4
    assert guard.disagreement(mine, stored) == "version"


def test_order_pairs_are_capped_and_do_not_cross_a_clause() -> None:
    long = " ".join(f"send w{i}a w{i}b w{i}c to w{i}d w{i}e w{i}f." for i in range(10))  # 9 pairs a sentence
    assert len(guard.signature(long).order) == 64
    assert len(guard.signature("convert celsius, to fahrenheit").order) == 0  # the comma ends the left side

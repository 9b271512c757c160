"""New prompts for bench/cache.py's semantic-miss runs, in two kinds.

`numbered` (the default): "Question <run>-<i>: what is <i> + <i>?", each with numbers of its own, so its guard
classes (`gateway.cache.semantic.guard`) are those of no stored row: the lookup is a `classes` miss without
embedding or scanning. That flatters the grouped search; real prompts mostly carry no number.

`populated`: "tell me something about the <adjective> <noun> near the <noun>", words without numbers, negation,
polarity, languages, forms, units, questions, symbols or quotes: the guard classes of the seeded rows ("filler
prompt"), so the lookup embeds the prompt and scans the whole scope (and the guard looks at any candidate above the
threshold: these prompts resemble each other). `check_populated` proves that of every text a run can send.
"""

from __future__ import annotations

ADJECTIVES = tuple(
    "amber brave calm dusty eager fuzzy gentle hollow icy jolly keen leafy mellow noisy oaken pale quiet rusty "
    "sandy tidy velvet windy young zesty mossy cloudy damp frosty grassy hazy misty muddy narrow rocky shady "
    "silky sleepy sunny woolly golden".split()
)
NOUNS = tuple(
    "badger barn beacon bridge cabin canyon cedar cliff cottage creek desert falcon forest garden glacier harbor "
    "island kettle lantern meadow mill orchard otter pasture pebble pond quarry raven ridge river saddle shore "
    "spruce stable thicket tower valley village willow lake".split()
)
WARM_UP = 50_000
"""bench/cache.py's warm-up prompts are `populated(WARM_UP + ...)`: none of a run's (fewer than 50,000)."""
FILLER = "filler prompt"
"""The text whose guard signature bench/cache.py seeds every row with."""


def populated(i: int) -> str:
    """The i-th populated prompt (distinct for i below len(ADJECTIVES) * len(NOUNS) ** 2, 64,000)."""
    a, n = len(ADJECTIVES), len(NOUNS)
    return f"tell me something about the {ADJECTIVES[i % a]} {NOUNS[(i // a) % n]} near the {NOUNS[(i // (a * n)) % n]}"


def check_populated(count: int) -> None:
    """Raise unless the first `count` populated prompts are distinct and share the filler's guard classes."""
    from gateway.cache.semantic.guard import LexicalGuard

    guard = LexicalGuard()
    want = guard.signature(FILLER).classes
    texts = [populated(i) for i in range(count)]
    if len(set(texts)) != count:
        raise SystemExit(f"populated miss prompts repeat within {count}")
    wrong = [t for t in texts if guard.signature(t).classes != want]
    if wrong:
        raise SystemExit(f"{len(wrong)} populated miss prompts have other guard classes than {FILLER!r}: {wrong[:3]}")

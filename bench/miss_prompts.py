"""New prompts for bench/cache.py's semantic-miss runs, in two kinds.

`numbered` (the default): "Question <run>-<i>: what is <i> + <i>?", each with numbers of its own, so its guard
classes (`gateway.cache.semantic.guard`) are those of no stored row: the lookup is a `classes` miss without
embedding or scanning. That flatters the grouped search; real prompts mostly carry no number.

`populated`: `TEMPLATE` with three words of `WORDS`, without numbers, negation, polarity, languages, forms, units,
questions, symbols or quotes: the guard classes of the seeded rows ("filler prompt"), so the lookup embeds the
prompt and scans the whole scope, and the guard looks at the candidates above the threshold (earlier prompts of
the run: they resemble each other) and refuses each as a word swap. `check_populated` proves the classes and the
distinctness of every text a run can send; tests/test_bench_miss_prompts.py that they are misses.
"""

from __future__ import annotations

WORDS = tuple(
    "apple badger barn beacon bridge cabin canyon cedar cliff cottage creek desert falcon forest garden glacier "
    "harbor island kettle lantern meadow mill orchard otter pasture pebble pond quarry raven ridge river saddle shore "
    "spruce stable thicket tower valley village willow lake amber brave calm dusty eager fuzzy gentle hollow icy "
    "jolly keen leafy mellow noisy oaken pale quiet rusty sandy tidy velvet windy young zesty mossy cloudy damp "
    "frosty grassy hazy misty muddy narrow rocky shady silky sleepy sunny woolly golden acorn anchor arrow basket "
    "blanket bottle button candle carpet chimney compass cushion drum feather fence fiddle flute goblet hammer "
    "helmet ladder lemon locket mirror needle oyster paddle parcel pepper pillow puppet quilt ribbon rope satchel "
    "scarf shovel spoon statue teapot thimble trumpet tunnel umbrella wagon whistle barley bramble clover daisy "
    "fern hazel heather ivy juniper lilac maple nettle poppy rosemary sage thistle tulip violet walnut yarrow "
    "beetle cricket dragonfly ferret gecko heron lynx magpie marten moth newt owl pelican puffin robin salmon "
    "sparrow squirrel swan toad trout vole weasel wren".split()
)
TEMPLATE = "describe the history, climate and wildlife of the {} {} {}"
"""Three fixed content words and three of `WORDS` (a set no other prompt has): any two prompts share at least as
many content words as either changed, so the guard refuses each as a word swap when it is a candidate."""


def populated_texts(count: int) -> list[str]:
    """The first `count` populated prompts (at most 100,000): three distinct `WORDS` each, no two with the same set."""
    import numpy as np

    rng = np.random.default_rng(15)
    seen: set[frozenset[int]] = set()
    texts: list[str] = []
    while len(texts) < min(count, 100_000):
        picks = rng.choice(len(WORDS), 3, replace=False)
        key = frozenset(int(p) for p in picks)
        if key not in seen:
            seen.add(key)
            texts.append(TEMPLATE.format(*(WORDS[int(p)] for p in picks)))
    return texts


WARM_UP = 50_000
"""bench/cache.py sends `populated_texts(...)[:WARM_UP]` in its runs and warms up with the ones after."""
FILLER = "filler prompt"
"""The text whose guard signature bench/cache.py seeds every row with."""


def check_populated(count: int) -> None:
    """Raise unless the first `count` populated prompts are distinct and share the filler's guard classes."""
    from gateway.cache.semantic.guard import LexicalGuard

    guard = LexicalGuard()
    want = guard.signature(FILLER).classes
    texts = populated_texts(count)
    if len(set(texts)) != count:
        raise SystemExit(f"populated miss prompts repeat within {count}")
    wrong = [t for t in texts if guard.signature(t).classes != want]
    if wrong:
        raise SystemExit(f"{len(wrong)} populated miss prompts have other guard classes than {FILLER!r}: {wrong[:3]}")

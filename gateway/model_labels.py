"""`ModelLabels`: the bounded set of values the `model` label of the token counters takes.

Clients choose model names (and an OpenAI-compatible upstream may echo any of them), so the label is bounded:
every known name (the configured tiers' models, the cost table's models) keeps its own series, then the first
`max_other` other names seen by this process, then everything else is counted as "other".
"""

from __future__ import annotations

from collections.abc import Iterable

OTHER = "other"
DEFAULT_MAX_OTHER = 50


class ModelLabels:
    """Maps an answering model's name to its label value: itself when known or among the first-seen, else "other"."""

    __slots__ = ("_labels", "_room")

    def __init__(self, known: Iterable[str], max_other: int = DEFAULT_MAX_OTHER) -> None:
        self._labels: dict[str, str] = {name: name for name in known if name}
        self._room = max(0, max_other)

    def __call__(self, model: str) -> str:
        label = self._labels.get(model)
        if label is not None:
            return label
        if self._room == 0:
            return OTHER
        self._room -= 1
        self._labels[model] = model
        return model

"""`Children`: the labelled children of one prometheus-client metric, looked up once per label tuple.

prometheus-client's `labels()` checks the label count, turns every value into a string and takes the metric's
lock on every call; on the request path that was about a fifth of the Python time. A child never changes once
made (nothing here removes series), so the same child is handed back for the same values. The values are bounded
already (tiers, statuses, route reasons, `ModelLabels`), and past `max_children` tuples a lookup simply goes to
`labels()` again, so the dict cannot grow without bound whatever a caller passes.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

DEFAULT_MAX_CHILDREN = 4096


class Children(Generic[M]):
    """`children(*values)` is `metric.labels(*values)`, remembered per tuple of values (up to `max_children`)."""

    __slots__ = ("_metric", "_children", "_room")

    def __init__(self, metric: M, max_children: int = DEFAULT_MAX_CHILDREN) -> None:
        self._metric = metric
        self._children: dict[tuple[Any, ...], M] = {}
        self._room = max_children

    def __call__(self, *values: Any) -> M:
        """The child for `values` (each turned into its label string by prometheus-client, as `labels()` does)."""
        child = self._children.get(values)
        if child is None:
            child = self._metric.labels(*values)
            if self._room > 0:
                self._room -= 1
                self._children[values] = child
        return child

"""Latency quantiles for the in-process benches: `p50 X  p90 Y  p99 Z  max W` (nearest rank)."""

from __future__ import annotations

from collections.abc import Iterable


def quantiles(values: Iterable[float], *, scale: float = 1.0) -> dict[str, float]:
    """p50, p90, p99 (nearest rank) and max of `values` times `scale` (empty: {})."""
    data = sorted(values)
    if not data:
        return {}

    def at(q: float) -> float:
        return data[min(len(data) - 1, int(q * len(data)))] * scale

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": data[-1] * scale}


def quantile_line(values: Iterable[float], *, scale: float = 1.0, digits: int = 0) -> str:
    """`p50 X  p90 Y  p99 Z  max W` of `values` times `scale`, with `digits` decimals ("n=0" when empty)."""
    q = quantiles(values, scale=scale)
    return "  ".join(f"{name} {value:.{digits}f}" for name, value in q.items()) if q else "n=0"

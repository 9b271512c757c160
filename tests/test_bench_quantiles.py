"""`bench/quantiles.py`: the latency line the in-process benches print (classifier_latency, chat_routing,
semantic_ann)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from quantiles import quantile_line, quantiles  # noqa: E402


def test_nearest_rank_quantiles_and_max() -> None:
    assert quantile_line(range(100, 0, -1)) == "p50 51  p90 91  p99 100  max 100"  # unsorted input is sorted
    assert quantile_line([1500, 2500, 900], scale=1e-3, digits=3) == "p50 1.500  p90 2.500  p99 2.500  max 2.500"
    assert quantile_line([0.25]) == "p50 0  p90 0  p99 0  max 0"
    assert quantile_line([]) == "n=0"
    assert quantiles([4000, 1000, 3000, 2000], scale=1e-3) == {"p50": 3.0, "p90": 4.0, "p99": 4.0, "max": 4.0}
    assert quantiles([]) == {}

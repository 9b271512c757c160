"""Threshold calibration: `target_local_share` -> threshold from the classifier's score distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.routing.calibration import (
    CalibrationError,
    calibrate,
    parse_quantiles,
    threshold_from_quantiles,
)
from gateway.routing.calibration_sample import CALIBRATION_PROMPTS
from gateway.routing.policy import parse_policy
from gateway.routing.policy_router import PolicyRouter


class QuantileModel:
    def __init__(self, quantiles: Any) -> None:
        self.metadata = {"score_quantiles": quantiles}

    def score_messages(self, messages: list[dict]) -> float:
        raise AssertionError("quantiles in metadata: no scoring needed")


@pytest.mark.parametrize(
    "raw",
    [
        {"0.0": 0.0, "0.5": 0.2, "1.0": 1.0},
        [[0.0, 0.0], [0.5, 0.2], [1.0, 1.0]],
        {"quantiles": [0.0, 0.5, 1.0], "values": [0.0, 0.2, 1.0]},
        [0.0, 0.2, 1.0],  # evenly spaced quantiles
        {"p0": 0.0, "p50": 0.2, "p100": 1.0},  # percentile labels, as the shipped classifier writes them
    ],
)
def test_quantile_shapes_and_interpolation(raw: Any) -> None:
    pairs = parse_quantiles(raw)
    assert threshold_from_quantiles(pairs, 0.5) == pytest.approx(0.2)
    assert threshold_from_quantiles(pairs, 0.25) == pytest.approx(0.1)
    assert threshold_from_quantiles(pairs, 0.75) == pytest.approx(0.6)


@pytest.mark.parametrize("raw", [42, [0.5], {"2.0": 0.1, "0.5": 0.2}, "0.5"])
def test_unusable_quantiles_are_refused(raw: Any) -> None:
    with pytest.raises(CalibrationError):
        parse_quantiles(raw)


def test_target_local_share_uses_the_metadata_quantiles() -> None:
    model = QuantileModel({str(q / 100): (q / 100) ** 2 for q in range(101)})
    threshold, source = calibrate(model, 0.6)
    assert threshold == pytest.approx(0.36, abs=1e-3) and source == "training-data quantiles"
    spec = parse_policy("rules:\n  - name: auto\n    action: auto\n    target_local_share: 0.6\n", "t.yaml")
    router = PolicyRouter(spec, model)
    assert router.thresholds()["auto"][0] == pytest.approx(0.36, abs=1e-3)
    assert "target_local_share 0.6 from training-data quantiles" in router.thresholds()["auto"][1]


def test_bad_quantiles_fail_the_policy_naming_the_rule() -> None:
    from gateway.routing.policy import PolicyError

    spec = parse_policy("rules:\n  - name: smart\n    action: auto\n    target_local_share: 0.6\n", "t.yaml")
    with pytest.raises(PolicyError, match=r"t.yaml: rules\[0\] 'smart': cannot calibrate"):
        PolicyRouter(spec, QuantileModel(7))


def test_without_quantiles_the_builtin_sample_sets_the_share(tiny_router_model: Path) -> None:
    from classifier import load_model

    model = load_model(tiny_router_model)
    model.metadata.pop("score_quantiles", None)  # a model trained before quantiles were stored
    for share in (0.3, 0.6, 0.85):
        threshold, source = calibrate(model, share)
        assert source == "built-in calibration sample"
        scores = [model.score_messages([{"role": "user", "content": p}]) for p in CALIBRATION_PROMPTS]
        local = sum(s < threshold for s in scores) / len(scores)
        assert abs(local - share) <= 0.1, (share, local)


def test_calibration_sample_is_hand_written_not_the_dev_data() -> None:
    dev = Path("/work/shared/data/routing/dev.jsonl")
    if not dev.is_file():
        pytest.skip("dev data not available")
    text = dev.read_text(encoding="utf-8")
    assert not [p for p in CALIBRATION_PROMPTS if p in text]


def test_the_shipped_model_calibrates_from_its_own_quantiles() -> None:
    from classifier import load_model

    model = load_model()
    threshold, source = calibrate(model, 0.6)
    assert source == "training-data quantiles"
    quantiles = model.metadata["score_quantiles"]
    assert quantiles["p55"] <= threshold <= quantiles["p65"]

"""``bench/multileave.py`` judges its targets by one rule: the interval, not the point estimate.

The summary's verdicts are printed by notebook 05 and quoted in the README; a ratio whose 95%
interval reaches below the target is "met on the point estimate only", never "met" (attack: the
impressions line called 2.44 [1.39, 3.73] met against a target of 2).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest
from test_bench_scripts import BENCH, load_bench_script


@pytest.fixture
def multileave(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_bench_script(BENCH / "multileave.py", monkeypatch)


@pytest.mark.parametrize(("ratio", "low", "target", "verdict"), [
    (2.44, 1.39, 2.0, "met on the point estimate only"),  # the attack's impressions line
    (2.71, 2.43, 2.0, "met"),                             # the README's position-based row
    (2.00, 2.00, 2.0, "met"),                             # the bound reaching the target clears it
    (1.90, 1.50, 2.0, "NOT met"),
    (1.188, 1.159, 1.0, "met"),
    (1.010, 0.990, 1.0, "met on the point estimate only"),
    (0.990, 0.950, 1.0, "NOT met"),
])
def test_target_verdict_judges_the_lower_bound(multileave: ModuleType, ratio: float, low: float,
                                               target: float, verdict: str) -> None:
    assert multileave.target_verdict(ratio, low, target) == verdict


def _method(stop: list[int], clicks: list[int]) -> dict[str, Any]:
    """What ``run_method`` returns, for ``len(stop)`` runs that all named arm 0, the best."""
    runs = len(stop)
    return {"stop": np.array(stop), "answer": np.zeros(runs, dtype=int),
            "clicks": np.array(clicks), "best": 0, "means": np.array([0.5, 0.4]),
            "seconds": 0.1, "cpu_seconds": 0.1, "fill_cpu_seconds": 0.01}


def _lines(multileave: ModuleType, uniform_stop: list[int]) -> list[str]:
    runs = len(uniform_stop)
    res = {"uniform": _method(uniform_stop, [100] * runs),
           "thompson": _method([80] * runs, [110] * runs),
           "multileave": _method([50] * runs, [105] * runs)}
    text, _ = multileave.summarise("pbm", res, arm_names=("a", "b"), m=2, horizon=200,
                                   n_boot=400, rng=np.random.default_rng(0))
    return text.splitlines()


def test_summary_calls_a_noisy_impressions_ratio_met_on_the_point_estimate_only(
        multileave: ModuleType) -> None:
    # median 100 / 50 = 2.00, but a resample drawing three or more of the two 10s has median
    # 10 (about a third of them): the interval's lower bound is 0.20
    lines = _lines(multileave, [100, 100, 100, 10, 10])
    assert ("impressions uniform (A/B/n) / multileave m=2: 2.00 [0.20, 2.00] "
            "(target >= 2: met on the point estimate only)") in lines
    # clicks 105 / 100 in every run: the interval is the point, above 1
    assert ("clicks multileave m=2 / uniform (A/B/n): 1.050 [1.050, 1.050] "
            "(target >= 1, no loss: met)") in lines


def test_summary_calls_a_ratio_met_when_its_whole_interval_clears_the_target(
        multileave: ModuleType) -> None:
    lines = _lines(multileave, [120, 110, 130, 125, 115])
    assert any(line.startswith("impressions uniform (A/B/n) / multileave m=2: 2.40 [2.")
               and line.endswith("(target >= 2: met)") for line in lines), lines
    # the Thompson Sampling peer has no target: no verdict
    assert "impressions Thompson Sampling / multileave m=2: 1.60 [1.60, 1.60]" in lines

"""Change detectors (:mod:`bandits.drift`): delay after a step, false alarms, state, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

import bandits as bd
from bandits.drift import CUSUM, PageHinkley, detector_from_state_dict

# Parameters whose false-alarm rates per 1,000 observations on stationary Bernoulli(0.5) streams
# (the largest variance of a [0, 1] stream of mean 0.5: the worst case) were measured once on a
# larger seeded sample, ``stationary_alarms(make, runs=5000, steps=2000, seed=12345)`` below:
# 1,784 and 3,067 alarms, i.e. 0.1784 and 0.3067 per 1,000 observations.
DETECTORS = {
    "page_hinkley": (lambda arms: PageHinkley(arms, threshold=25.0, delta=0.01), 0.1784),
    "cusum": (lambda arms: CUSUM(arms, threshold=8.0, delta=0.1, min_samples=200), 0.3067),
}


def stationary_alarms(make, runs: int, steps: int, seed: int, n_arms: int = 2) -> tuple[int, int]:
    """Alarms on stationary Bernoulli(0.5) streams, one arm drawn uniformly per step, and the
    total recorded by the state."""
    detector = make(n_arms)
    rng = np.random.default_rng(seed)
    state = detector.init_batch(runs)
    total = 0
    for _ in range(steps):
        a = rng.integers(n_arms, size=runs)
        total += int(detector.update_batch(state, a, (rng.random(runs) < 0.5).astype(float)).sum())
    return total, int(state.stats["alarms"].sum())


def step_stream(detector, p0: float, p1: float, n_before: int, n_after: int, runs: int,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """First alarm before the change (-1: none) and delay of the first alarm after it (-1: none),
    per run, for a Bernoulli stream whose mean steps from ``p0`` to ``p1`` after ``n_before``."""
    rng = np.random.default_rng(seed)
    state = detector.init_batch(runs)
    arm = np.zeros(runs, dtype=np.int64)
    before = np.full(runs, -1)
    delay = np.full(runs, -1)
    for t in range(n_before + n_after):
        x = (rng.random(runs) < (p0 if t < n_before else p1)).astype(float)
        alarm = detector.update_batch(state, arm, x)
        if t < n_before:
            before[(before < 0) & alarm] = t
        else:
            delay[(delay < 0) & alarm] = t - n_before + 1
    return before, delay


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize(("p0", "p1"), [(0.3, 0.6), (0.7, 0.4)], ids=["up", "down"])
def test_delay_after_a_step_change_is_within_the_bound(name, p0, p1):
    detector = DETECTORS[name][0](1)
    n_before = 300
    before, delay = step_stream(detector, p0, p1, n_before, 400, runs=300, seed=1)
    clean = before < 0  # runs with a false alarm before the change restarted their detector
    assert clean.mean() > 0.9
    assert (delay[clean] > 0).all(), "every change is detected within 400 observations"
    bound = detector.delay_bound(abs(p1 - p0), n_before)
    # The bound is on the mean delay. A detector that did not accumulate evidence never alarms;
    # one that ignored its threshold alarms before the change (the 0.9 above).
    assert delay[clean].mean() <= bound


def test_delay_bounds_follow_from_the_parameters():
    ph = PageHinkley(1, threshold=25.0, delta=0.01)
    cusum = CUSUM(1, threshold=8.0, delta=0.1, min_samples=200)
    assert cusum.delay_bound(0.3, 300) == pytest.approx(9.0 / 0.2)
    assert cusum.delay_bound(0.1, 300) == float("inf")
    d = ph.delay_bound(0.3, 300)
    # the expected evidence after d observations reaches threshold + 1 exactly at the bound
    assert d * (0.3 * 300 / (300 + d) - 0.01) == pytest.approx(26.0)
    assert ph.delay_bound(0.3, 300) < ph.delay_bound(0.2, 300) < ph.delay_bound(0.2, 200)
    assert ph.delay_bound(0.3, 10) == float("inf")  # the running mean catches up first
    with pytest.raises(ValueError, match=r"n_before=100 must be >= 200"):
        cusum.delay_bound(0.3, 100)
    with pytest.raises(ValueError, match=r"shift=0\.0 is outside the allowed range \(0, 1\]"):
        ph.delay_bound(0.0, 300)


@pytest.mark.parametrize("name", DETECTORS)
def test_false_alarms_on_stationary_streams_stay_below_the_measured_rate(name):
    make, rate = DETECTORS[name]
    runs, steps = 200, 1000
    total, recorded = stationary_alarms(make, runs, steps, seed=7)
    # At most the 99.9% Poisson quantile of the rate measured on the larger sample (whose longer
    # streams alarm more per observation, so the bound errs high). Checked to fail: a detector
    # that does not reset after an alarm (both), CUSUM without its allowance (Page-Hinkley's
    # 0.01 is too small for this size to tell).
    assert total <= stats.poisson.ppf(0.999, rate * runs * steps / 1000)
    assert recorded == total


def test_an_alarm_resets_only_that_arm_of_that_run():
    det = CUSUM(["a", "b"], threshold=1.0, delta=0.0, min_samples=2)
    state = det.init_batch(2)
    for _ in range(2):  # reference 0 for arm 0 in both runs, 1 for arm 1 of run 1
        det.update_batch(state, np.array([0, 0]), np.array([0.0, 0.0]))
        det.update_batch(state, np.array([1, 1]), np.array([1.0, 1.0]))
    alarms = [det.update_batch(state, np.array([0, 1]), np.array([1.0, 1.0])) for _ in range(2)]
    assert alarms[0].tolist() == [False, False]
    assert alarms[1].tolist() == [True, False]  # 0 -> 1 twice: S+ = 2 > 1 in run 0
    assert state.stats["n"].tolist() == [[0.0, 2.0], [2.0, 4.0]]
    assert state.stats["alarms"].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert state.stats["pos"][0, 0] == 0.0 and state.stats["reference"][0, 0] == 0.0


@pytest.mark.parametrize("name", DETECTORS)
def test_batched_runs_equal_single_detectors(name):
    make = DETECTORS[name][0]
    rng = np.random.default_rng(3)
    steps, change = 1200, 700  # about 350 observations per arm before the change
    arms = rng.integers(2, size=(steps, 4))
    rewards = rng.random((steps, 4)) < np.where(np.arange(steps)[:, None] < change, 0.2, 0.7)
    batch = make(2)
    state = batch.init_batch(4)
    got = np.array([batch.update_batch(state, arms[t], rewards[t].astype(float))
                    for t in range(steps)])
    for r in range(4):
        single = make(2)
        want = [single.update(int(arms[t, r]), float(rewards[t, r])) for t in range(steps)]
        assert got[:, r].tolist() == want
        np.testing.assert_array_equal(single.statistic(), batch.statistic_batch(state)[r])
    assert got[change:].any(axis=0).all()  # the step is detected in every run


@pytest.mark.parametrize("name", DETECTORS)
def test_state_round_trips_through_json(name):
    det = DETECTORS[name][0](["svd", "popularity"])
    rng = np.random.default_rng(5)
    stream = [(int(rng.integers(2)), float(rng.random() < (0.2 if t < 400 else 0.8)))
              for t in range(800)]
    for arm, reward in stream[:500]:
        det.update(arm, reward)
    restored = detector_from_state_dict(json.loads(json.dumps(det.state_dict())))
    assert type(restored) is type(det) and restored.get_params() == det.get_params()
    assert restored.state_dict() == det.state_dict()
    rest = stream[500:]
    assert [det.update(a, r) for a, r in rest] == [restored.update(a, r) for a, r in rest]
    assert restored.alarm_counts() == det.alarm_counts()
    assert sum(det.alarm_counts().values()) >= 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"threshold": 0.0}, ValueError, r"threshold=0\.0 is outside the allowed range \(0, inf\)"),
        ({"threshold": float("nan")}, ValueError, r"threshold=nan must be finite"),
        ({"threshold": "5"}, TypeError, r"threshold must be a real number, got '5'"),
        ({"delta": 1.0}, ValueError, r"delta=1\.0 is outside the allowed range \[0, 1\)"),
        ({"delta": -0.1}, ValueError, r"delta=-0\.1 is outside the allowed range \[0, 1\)"),
        ({"min_samples": 0}, ValueError, r"min_samples=0 must be >= 1"),
        ({"min_samples": 2.5}, TypeError, r"min_samples must be an int, got 2\.5"),
        ({"min_samples": True}, TypeError, r"min_samples must be an int"),
    ],
)
@pytest.mark.parametrize("cls", [PageHinkley, CUSUM])
def test_bad_parameters_raise_naming_value_and_range(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(["a", "b"], **kwargs)


def test_bad_observations_raise_and_leave_the_state_untouched():
    det = PageHinkley(["svd", "popularity"], threshold=25.0)
    det.update("svd", 1.0)
    before = json.dumps(det.state_dict())
    with pytest.raises(bd.UnknownArmError, match=r"did you mean \['popularity'\]"):
        det.update("popularty", 1.0)
    with pytest.raises(ValueError, match=r"reward=1\.5 is outside .*\[0, 1\]"):
        det.update(0, 1.5)
    with pytest.raises(ValueError, match=r"reward=nan"):
        det.update(0, float("nan"))
    with pytest.raises(TypeError, match="reward must be a real number"):
        det.update(0, "1")
    state = det.init_batch(3)
    with pytest.raises(ValueError, match=r"arms contains 2; positions are 0\.\.1"):
        det.update_batch(state, np.array([0, 1, 2]), np.zeros(3))
    with pytest.raises(ValueError, match=r"rewards has shape \(2,\); expected \(3,\)"):
        det.update_batch(state, np.array([0, 1, 1]), np.zeros(2))
    assert json.dumps(det.state_dict()) == before
    assert not state.stats["n"].any()
    with pytest.raises(ValueError, match="not a known detector"):
        detector_from_state_dict({**det.state_dict(), "detector": "ADWIN"})
    with pytest.raises(ValueError, match="not a CUSUM"):
        CUSUM.from_state_dict(det.state_dict())

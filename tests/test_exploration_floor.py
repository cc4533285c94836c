"""Exploration floor (:mod:`bandits.exploration`): every propensity >= floor, and they are true."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import bandits as bd
from bandits.exploration import ExplorationFloor, floor_probabilities, floored_select_batch

ARMS = ["svd", "sequential", "autoencoder", "popularity"]


def confident(policy, runs: int = 1):
    """``policy`` and a state of ``runs`` identical runs that all favour arm 0 strongly."""
    state = policy.init_batch(runs)
    for k, (n, mean) in enumerate([(400, 0.9), (40, 0.2), (40, 0.1), (40, 0.05)]):
        for i in range(n):
            reward = float(i < mean * n)
            policy.update_batch(state, np.full(runs, k), np.full(runs, reward))
            policy.update(k, reward)
    return policy, state


POLICIES = {
    "greedy": lambda: bd.EpsilonGreedy(ARMS, epsilon=0.0, random_state=0),  # exact, zeros
    # quadrature propensities; a coarse grid (error <= pi / 1024) keeps 2,000 runs cheap
    "ts": lambda: bd.ThompsonSampling(ARMS, propensity_grid=256, random_state=0),
    "ucb1": lambda: bd.UCB1(ARMS, random_state=0),
}


@pytest.mark.parametrize("name", POLICIES)
def test_the_floor_holds_for_every_decision_and_propensities_sum_to_one(name):
    floor = 0.02
    policy, _ = confident(POLICIES[name]())
    floored = ExplorationFloor(policy, floor=floor, random_state=1)
    rng = np.random.default_rng(2)
    means = np.array([0.9, 0.2, 0.1, 0.05])
    seen = set()
    for _ in range(300):
        choice = floored.choose()
        seen.add(choice.arm)
        assert choice.probabilities.min() >= floor
        assert choice.propensity >= floor
        assert choice.propensity == choice.probabilities[choice.arm]
        assert choice.probabilities.sum() == pytest.approx(1.0, abs=4 * floored.policy.n_arms
                                                           * (choice.error + 1e-12))
        np.testing.assert_allclose(choice.probabilities, floored.action_probabilities())
        floored.update(choice.arm, float(rng.random() < means[choice.arm]))
    unfloored = policy.action_probabilities()
    assert unfloored.min() < floor  # without the floor some arm falls below it
    assert len(seen) == 4


def test_floor_probabilities_is_the_uniform_mixture():
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(floor_probabilities(p, 0.05), [[0.85, 0.05, 0.05, 0.05],
                                                              [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(floor_probabilities(p, 0.25), 0.25)  # 1 / K: uniform
    np.testing.assert_array_equal(floor_probabilities(p, 0.0), p)


@pytest.mark.parametrize("name", ["greedy", "ts"])
def test_empirical_frequencies_match_the_propensities(name):
    # 2,000 identical runs, one floored choice each. A floor applied as "explore with
    # probability floor" instead of K * floor gives, for the greedy policy, (0.9625, 0.0125 x 3)
    # instead of (0.85, 0.05 x 3): a chi-square statistic near 0.099 * n = 199 at n = 2,000,
    # against a 0.001 critical value of 16.3 (n = 400 would already fail it; 2,000 leaves the
    # Thompson sampler's flatter distribution the same margin).
    n, floor = 2000, 0.05
    policy, state = confident(POLICIES[name](), runs=n)
    arms, propensities = floored_select_batch(policy, state, np.random.default_rng(11), floor)
    q = floor_probabilities(policy.probabilities_batch(state)[0], floor)
    np.testing.assert_allclose(propensities, q[arms])
    assert propensities.min() >= floor
    counts = np.bincount(arms, minlength=len(ARMS))
    assert stats.chisquare(counts, n * q).pvalue > 0.001


def test_single_choices_follow_the_same_law():
    n, floor = 2000, 0.05
    policy, _ = confident(POLICIES["greedy"]())
    floored = ExplorationFloor(policy, floor=floor, random_state=4)
    arms = np.array([floored.choose().arm for _ in range(n)])
    q = floored.action_probabilities()
    np.testing.assert_allclose(q, [0.85, 0.05, 0.05, 0.05])
    assert stats.chisquare(np.bincount(arms, minlength=4), n * q).pvalue > 0.001


def test_ips_on_a_floored_log_is_unbiased():
    # A greedy logging policy that never plays arms 1 and 2 leaves IPS no support for them;
    # with the floor it has, and IPS with the logged propensities recovers the true values.
    means = np.array([0.2, 0.5, 0.8])
    n, floor = 20_000, 0.1
    policy = bd.EpsilonGreedy(3, epsilon=0.0, random_state=0)
    state = policy.init_batch(n)
    policy.update_batch(state, np.zeros(n, dtype=np.int64), np.ones(n))  # arm 0 looks best
    policy.update_batch(state, np.ones(n, dtype=np.int64), np.zeros(n))
    policy.update_batch(state, np.full(n, 2), np.zeros(n))
    rng = np.random.default_rng(21)
    arms, propensities = floored_select_batch(policy, state, rng, floor)
    rewards = (rng.random(n) < means[arms]).astype(float)
    targets = {"always arm 2": np.tile([0.0, 0.0, 1.0], (n, 1)),
               "uniform": np.full((n, 3), 1 / 3)}
    for name, target in targets.items():
        est = bd.ope.estimate("ips", rewards, arms, propensities, target, n_bootstrap=200,
                              random_state=0)
        weights = target[np.arange(n), arms] / propensities
        se = np.std(weights * rewards) / np.sqrt(n)
        truth = float(target[0] @ means)
        assert abs(est.value - truth) < 4 * se, name
    # the log's own propensities are exact: (0.8, 0.1, 0.1)
    np.testing.assert_allclose(np.bincount(arms) / n, [0.8, 0.1, 0.1], atol=0.01)


@pytest.mark.parametrize(("floor", "error", "match"), [
    (0.26, ValueError, r"floor=0\.26 is outside the allowed range \[0, 0\.25\]"),
    (-0.01, ValueError, r"floor=-0\.01 is outside the allowed range \[0, 0\.25\]"),
    (float("nan"), ValueError, r"floor=nan must be finite"),
    ("0.1", TypeError, r"floor must be a real number, got '0\.1'"),
])
def test_bad_floors_raise_naming_value_and_range(floor, error, match):
    with pytest.raises(error, match=match):
        ExplorationFloor(bd.RandomPolicy(ARMS), floor=floor)
    with pytest.raises(error, match=match):
        floor_probabilities(np.full(4, 0.25), floor)


def test_only_policies_can_be_floored():
    with pytest.raises(TypeError, match="policy must be a bandits policy, got list"):
        ExplorationFloor(ARMS, floor=0.1)  # type: ignore[arg-type]


def test_contextual_policies_are_floored_per_context():
    policy = bd.LinUCB(["a", "b", "c"], n_features=2, alpha=0.1, random_state=0)
    x = np.array([1.0, 0.5])
    for _ in range(50):  # arm 0 pays in this context, the others never do
        for k in range(3):
            policy.update(k, float(k == 0), x)
    assert policy.action_probabilities(x).tolist() == [1.0, 0.0, 0.0]
    floored = ExplorationFloor(policy, floor=0.1, random_state=0)
    choices = [floored.choose(x) for _ in range(400)]
    np.testing.assert_allclose(choices[0].probabilities, [0.8, 0.1, 0.1])
    arms = np.array([c.arm for c in choices])
    assert stats.chisquare(np.bincount(arms, minlength=3), 400 * np.array([0.8, 0.1, 0.1])
                           ).pvalue > 0.001
    with pytest.raises(ValueError, match="context"):
        floored.choose(None)

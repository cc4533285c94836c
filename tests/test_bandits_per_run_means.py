"""simulate_bernoulli / simulate_gaussian with one problem per run (means of shape (R, K))."""

from __future__ import annotations

import numpy as np
import pytest

import bandits as bd

MEANS = np.array([[0.5, 0.4, 0.4], [0.5, 0.48, 0.48], [0.2, 0.6, 0.1]])


@pytest.mark.parametrize("factory", [lambda: bd.UCB1(3), lambda: bd.KLUCB(3),
                                     lambda: bd.ThompsonSampling(3)])
def test_each_run_equals_a_simulation_of_its_own_problem(factory):
    both = bd.simulate_bernoulli(factory(), MEANS, 300, 3, seed=9, rng_mode="per_run")
    for r in range(3):
        alone = bd.simulate_bernoulli(factory(), MEANS[r], 300, 3, seed=9, rng_mode="per_run")
        np.testing.assert_array_equal(both.arms[r], alone.arms[r])
        np.testing.assert_allclose(both.cumulative_regret[r], alone.cumulative_regret[r])
        gaps = MEANS[r].max() - MEANS[r]
        np.testing.assert_allclose(both.pseudo_regret[r], gaps[both.arms[r]])


def test_gaussian_per_run_means_and_checkpoints():
    pol = bd.GaussianThompsonSampling(3, noise_variance=1.0)
    both = bd.simulate_gaussian(pol, MEANS, 0.5, 200, 3, seed=2, rng_mode="per_run",
                                checkpoints=[50, 200])
    alone = bd.simulate_gaussian(pol, MEANS[2], 0.5, 200, 3, seed=2, rng_mode="per_run",
                                 checkpoints=[50, 200])
    np.testing.assert_allclose(both.cumulative_reward[2], alone.cumulative_reward[2])
    np.testing.assert_array_equal(both.pulls[2], alone.pulls[2])


def test_per_run_means_must_have_one_row_per_run():
    with pytest.raises(ValueError, match="expected"):
        bd.simulate_bernoulli(bd.UCB1(3), MEANS, 10, runs=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bd.simulate_bernoulli(bd.UCB1(3), MEANS + 0.5, 10, runs=3)

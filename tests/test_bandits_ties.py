"""LinTS and LinUCB break exact ties uniformly at random, and their propensities say so.

LinTS at a zero context (every arm's posterior a point mass at 0) played the first arm every
time and reported ``[1, 0, 0]``; ties are now broken as the context-free policies break them
(uniformly: LinTS by its normal draws, LinUCB by ``bandits.base.argmax_random_ties``) and
the propensities share them the same way.
"""

from __future__ import annotations

import numpy as np
import pytest

import bandits as bd

N_PICKS = 1000  # 4 sd of a share of 1/3 over 1,000 picks: 0.06


def tie_of_two(policy: bd.BatchedPolicy) -> np.ndarray:
    """A context where arms 0 and 1 tie exactly above arm 2: arm 2 learned a negative reward
    and the context is so small that x^T A^-1 x underflows to 0 (point masses for LinTS).
    """
    policy.update(2, -1.0, np.array([1.0, 0.0]))
    return np.array([1e-170, 0.0])


@pytest.mark.parametrize("cls", [bd.LinTS, bd.LinUCB])
@pytest.mark.parametrize(("where", "expected"), [("zero", [1 / 3] * 3),
                                                 ("two", [0.5, 0.5, 0.0])])
def test_ties_are_broken_uniformly_and_the_propensities_match_the_picks(cls, where, expected):
    policy = cls(3, n_features=2, random_state=7)
    x = np.zeros(2) if where == "zero" else tie_of_two(policy)
    p = policy.action_probabilities(x)
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-15)
    picks = np.bincount([policy.select(x) for _ in range(N_PICKS)], minlength=3) / N_PICKS
    assert (np.abs(picks - p) <= 4 * np.sqrt(p * (1 - p) / N_PICKS)).all(), (picks, p)


def test_batched_lints_breaks_ties_like_single_runs():
    # per-run generators: run r draws what a single policy with rngs[r] draws, ties included
    policy = bd.LinTS(3, n_features=2)
    state = policy.init_batch(4)
    x = np.zeros((4, 2))
    batched = policy.select_batch(state, bd.spawn_generators(3, 4), x)
    singles = [bd.LinTS(3, n_features=2, random_state=g).select(x[0])
               for g in bd.spawn_generators(3, 4)]
    assert batched.tolist() == singles


def test_gaussian_thompson_sampling_at_point_masses_plays_what_it_reports():
    """Found by review: with its propensities sharing ties, GaussianThompsonSampling at point
    masses reported 1/3 each and played arm 0 every time (one tie rule, ``sample_argmax``)."""
    policy = bd.GaussianThompsonSampling(3, noise_variance=1e-30, prior_strength=1e300,
                                         random_state=5)
    p = policy.action_probabilities()
    np.testing.assert_allclose(p, [1 / 3] * 3, rtol=1e-12)
    picks = np.bincount([policy.select() for _ in range(N_PICKS)], minlength=3) / N_PICKS
    assert (np.abs(picks - p) <= 4 * np.sqrt(p * (1 - p) / N_PICKS)).all(), picks

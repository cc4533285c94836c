"""Extreme but finite input: propensities stay finite and follow the picks, or it is refused.

Found by an attack on ``bandits/``: LinTS's propensities were ``[nan nan nan]`` at a zero context
(every arm's posterior scale 0) and wherever ``x^T A^-1 x`` rounded to 0.
"""

from __future__ import annotations

import numpy as np

import bandits as bd


def test_lints_at_a_zero_context_logs_the_arm_it_plays():
    # x = 0: every arm's draw is the point mass x.theta = 0, and the argmax plays the first arm.
    policy = bd.LinTS(3, n_features=2, random_state=0)
    x = np.zeros(2)
    np.testing.assert_array_equal(policy.action_probabilities(x), [1.0, 0.0, 0.0])
    assert {policy.select(x) for _ in range(50)} == {0}


def test_lints_propensities_are_finite_when_some_posterior_scales_round_to_zero():
    # Contexts of 1e8 with ridge 1: x^T A^-1 x of arms 0 and 2 rounds to 0 (point masses at
    # 0), arm 1 keeps a scale of 1.4e8 around 0, so arm 1 wins half the time and otherwise the
    # point mass of arm 0 (first among the ties) does.
    policy = bd.LinTS(3, n_features=2, random_state=0)
    for i, x in enumerate([[1e8, 1e8], [1e8, -1e8], [1e8, 1e8], [1e8, 1e8]]):
        policy.update(i % 3, 1.0, np.array(x))
    x = np.array([1e8, 1e8])
    p, err = policy.action_probabilities_with_error(x)
    # within the grid's bound (on the raw estimates, before they are renormalised)
    assert (np.abs(p - [0.5, 0.5, 0.0]) <= err.sum()).all(), (p, err)
    assert err.max() < 1e-3
    picks = np.bincount([policy.select(x) for _ in range(2000)], minlength=3) / 2000
    np.testing.assert_allclose(picks, p, atol=0.035)  # 3 sd of 2,000 draws

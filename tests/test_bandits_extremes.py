"""Extreme but finite input: propensities stay finite and follow the picks, or it is refused.

Found by an attack on ``bandits/``: LinTS's propensities were ``[nan nan nan]`` at a zero context
(every arm's posterior scale 0) and wherever ``x^T A^-1 x`` rounded to 0.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats

import bandits as bd


def test_lints_at_a_zero_context_logs_the_arm_it_plays():
    # x = 0: every arm's draw is the point mass x.theta = 0; the tie is broken uniformly at
    # random (it played the first arm every time; tests/test_bandits_ties.py has the counts).
    policy = bd.LinTS(3, n_features=2, random_state=0)
    x = np.zeros(2)
    np.testing.assert_allclose(policy.action_probabilities(x), [1 / 3] * 3, rtol=1e-12)
    assert {policy.select(x) for _ in range(50)} == {0, 1, 2}


def test_lints_propensities_are_finite_when_some_posterior_scales_round_to_zero():
    # Contexts of 1e8 with ridge 1: x^T A^-1 x of arms 0 and 2 rounds to 0 (point masses at
    # 0), arm 1 keeps a scale of 1.4e8 around 0, so arm 1 wins half the time and otherwise the
    # point masses of arms 0 and 2 tie, broken uniformly at random.
    policy = bd.LinTS(3, n_features=2, random_state=0)
    for i, x in enumerate([[1e8, 1e8], [1e8, -1e8], [1e8, 1e8], [1e8, 1e8]]):
        policy.update(i % 3, 1.0, np.array(x))
    x = np.array([1e8, 1e8])
    p, err = policy.action_probabilities_with_error(x)
    # within the grid's bound (on the raw estimates, before they are renormalised)
    assert (np.abs(p - [0.25, 0.5, 0.25]) <= err.sum()).all(), (p, err)
    assert err.max() < 1e-3
    picks = np.bincount([policy.select(x) for _ in range(2000)], minlength=3) / 2000
    np.testing.assert_allclose(picks, p, atol=0.035)  # 3 sd of 2,000 draws


@pytest.mark.parametrize("make", [
    lambda: bd.LinTS(3, n_features=2, random_state=0),
    lambda: bd.LinUCB(3, n_features=2, random_state=0),
], ids=["lints", "linucb"])
def test_a_context_feature_beyond_the_cap_is_refused_and_leaves_the_state(make):
    # A finite context of 1e200 made the propensities [nan nan nan] (found by attack).
    policy = make()
    before = json.dumps(policy.state_dict())
    x = np.array([1e200, 0.5])
    msg = r"context contains 1e\+200, outside the allowed range \[-1e\+50, 1e\+50\]"
    for call in (lambda: policy.action_probabilities(x), lambda: policy.select(x),
                 lambda: policy.update(0, 1.0, x)):
        with pytest.raises(ValueError, match=msg):
            call()
    assert json.dumps(policy.state_dict()) == before
    edge = np.array([1e50, -1e50])  # the cap itself is allowed and stays finite
    policy.update(1, 1.0, edge)
    assert np.isfinite(policy.action_probabilities(edge)).all()


@pytest.mark.parametrize("cls", [bd.LinTS, bd.LinUCB])
def test_a_ridge_below_the_floor_is_refused(cls):
    # ridge=1e-300: A^-1 = I / ridge overflowed x^T A^-1 x, propensities NaN (found by attack).
    with pytest.raises(ValueError, match=r"ridge=1e-300 is outside the allowed range \[1e-50, "):
        cls(3, n_features=2, ridge=1e-300)
    policy = cls(3, n_features=2, ridge=1e-50, random_state=0)
    x = np.array([1e50, 1e50])
    for k in range(3):
        policy.update(k, 1e15, x)
    assert np.isfinite(policy.action_probabilities(x)).all()


@pytest.mark.parametrize("make", [
    lambda: bd.EpsilonGreedy(3, random_state=0),
    lambda: bd.GaussianThompsonSampling(3, random_state=0),
    lambda: bd.GaussianThompsonSampling(3, noise_variance=None, random_state=0),
    lambda: bd.LinTS(3, n_features=2, random_state=0),
    lambda: bd.LinUCB(3, n_features=2, random_state=0),
], ids=["eg", "gts", "gts-ng", "lints", "linucb"])
def test_a_reward_whose_sums_could_overflow_is_refused(make):
    # Two rewards of 1e308 put inf in EpsilonGreedy's sums: propensities [0.5, 0, 0.5] and a
    # state_dict that was not strict JSON (found by attack).
    policy = make()
    x = np.array([1.0, 0.5]) if policy.contextual else None
    for bad in (1e308, -1e16):
        with pytest.raises(ValueError, match=re.escape(
                f"reward={bad!r} is outside the policy's reward support [-1e+15, 1e+15]")):
            policy.update(0, bad, x)
    for _ in range(2):
        policy.update(0, 1e15, x)  # the cap itself is allowed
    json.dumps(policy.state_dict(), allow_nan=False)
    assert np.isfinite(policy.action_probabilities(x)).all()


def test_gaussian_priors_outside_where_picks_follow_propensities_are_refused():
    # Found by attack: prior_shape 1e-300 (Gamma draws underflow to 0, Student-t draws tie at
    # +-inf) picked 0.62 / 0.25 / 0.13 against the 1/3 each reported; prior_mean 1e300 made
    # every draw equal (loc + scale z == loc) and every pick arm 0.
    G = bd.GaussianThompsonSampling
    with pytest.raises(ValueError, match=r"prior_shape=0\.001 is outside the allowed range "
                                         r"\[0\.1, inf\)"):
        G(3, noise_variance=None, prior_shape=1e-3)
    with pytest.raises(ValueError, match=r"prior_mean=1e\+300 is outside the allowed range "
                                         r"\[-1e\+15, 1e\+15\]"):
        G(3, prior_mean=1e300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_picks_follow_the_propensities_at_the_smallest_prior_shape(dtype):
    policy = bd.GaussianThompsonSampling(3, noise_variance=None, prior_shape=0.1)
    R = 20_000
    arms = policy.select_batch(policy.init_batch(R, dtype=dtype), np.random.default_rng(4))
    counts = np.bincount(arms, minlength=3)
    probs = policy.action_probabilities()
    assert stats.chisquare(counts, probs * R).pvalue > 1e-3, (counts / R, probs)

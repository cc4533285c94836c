"""``BatchedPolicy.discount_arms``: what a refitted arm's statistics keep (the posterior across
model versions, :mod:`serving.versions`), for every servable kind of statistics.
"""

from __future__ import annotations

import numpy as np
import pytest

import bandits as bd

ARMS = ["svd", "sequential", "popularity"]


def beta_policy(cls=bd.ThompsonSampling, **params):
    policy = cls(ARMS, prior_alpha=2.0, prior_beta=3.0, random_state=0, **params)
    rng = np.random.default_rng(0)
    for _ in range(40):
        policy.update(int(rng.integers(3)), float(rng.random() < 0.4))
    return policy


@pytest.mark.parametrize("cls", [bd.ThompsonSampling, bd.DiscountedThompsonSampling])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_beta_posterior_keeps_gamma_of_its_evidence_on_the_named_arms(cls, gamma):
    policy = beta_policy(cls)
    s, f = (policy.state_.stats[k][0].copy() for k in ("successes", "failures"))
    policy.discount_arms(["svd", "popularity"], gamma)
    alpha = 2.0 + policy.state_.stats["successes"][0]
    beta = 3.0 + policy.state_.stats["failures"][0]
    # (alpha, beta) -> prior + gamma * (alpha - prior_alpha, beta - prior_beta), arms 0 and 2.
    np.testing.assert_allclose(alpha, [2.0 + gamma * s[0], 2.0 + s[1], 2.0 + gamma * s[2]])
    np.testing.assert_allclose(beta, [3.0 + gamma * f[0], 3.0 + f[1], 3.0 + gamma * f[2]])


def test_reset_gives_the_fresh_policy_probabilities_for_the_reset_arms():
    policy = beta_policy()
    policy.discount_arms(ARMS, 0.0)
    fresh = bd.ThompsonSampling(ARMS, prior_alpha=2.0, prior_beta=3.0, random_state=0)
    np.testing.assert_array_equal(policy.state_.stats["successes"],
                                  fresh.state_.stats["successes"])
    np.testing.assert_allclose(policy.action_probabilities(), fresh.action_probabilities())


@pytest.mark.parametrize("cls", [bd.LinTS, bd.LinUCB])
@pytest.mark.parametrize("gamma", [0.0, 0.25])
def test_ridge_model_shrinks_a_towards_ridge_identity_and_b_by_gamma(cls, gamma):
    ridge, d = 2.0, 4
    policy = cls(ARMS, n_features=d, ridge=ridge, random_state=0)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(30, d))
    rewards = (rng.random(30) < 0.5).astype(float)
    for x, r in zip(xs, rewards, strict=True):
        policy.update("svd", float(r), x)
    policy.update("sequential", 1.0, xs[0])
    seq_before = {k: v[0, 1].copy() for k, v in policy.state_.stats.items()}
    policy.discount_arms(["svd", "popularity"], gamma)  # popularity: no evidence, untouched
    stats = policy.state_.stats
    A = ridge * np.eye(d) + xs.T @ xs
    want_A = ridge * np.eye(d) + gamma * (A - ridge * np.eye(d))
    np.testing.assert_allclose(np.linalg.inv(stats["A_inv"][0, 0]), want_A, rtol=1e-9)
    np.testing.assert_allclose(stats["b"][0, 0], gamma * (rewards @ xs), atol=1e-12)
    assert stats["pulls"][0, 0] == pytest.approx(30 * gamma)
    np.testing.assert_array_equal(stats["A_inv"][0, 2], np.eye(d) / ridge)
    for key, value in seq_before.items():
        np.testing.assert_array_equal(stats[key][0, 1], value)


def test_sliding_window_reset_forgets_the_arm_and_its_later_evictions():
    policy = bd.SlidingWindowThompsonSampling(["a", "b"], window=3, random_state=0)
    for arm, reward in [("a", 1.0), ("b", 1.0), ("a", 0.0)]:
        policy.update(arm, reward)
    policy.discount_arms(["a"], 0.0)
    stats = policy.state_.stats
    assert stats["successes"][0].tolist() == [0.0, 1.0] and stats["failures"][0].tolist() == [0, 0]
    for arm, reward in [("b", 0.0), ("b", 1.0), ("a", 1.0)]:  # evicts a's old slots: nothing
        policy.update(arm, reward)
    assert stats["successes"][0].tolist() == [1.0, 1.0]
    assert stats["failures"][0].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"gamma=0\.5: a sliding window keeps whole"):
        policy.discount_arms(["a"], 0.5)


def test_bad_input_names_the_value_and_changes_nothing():
    policy = beta_policy()
    before = policy.state_dict()
    with pytest.raises(ValueError, match=r"gamma=1.5 is outside the allowed range \[0, 1\]"):
        policy.discount_arms(["svd"], 1.5)
    with pytest.raises(TypeError, match="gamma must be a real number"):
        policy.discount_arms(["svd"], "half")
    with pytest.raises(ValueError, match="svdd"):
        policy.discount_arms(["svdd"], 0.5)
    with pytest.raises(ValueError, match="names an arm twice"):
        policy.discount_arms(["svd", 0], 0.5)
    assert policy.state_dict() == before

"""The request path's faster arithmetic gives the numbers of the code it replaced (issue 19).

Each replaced expression is kept here as the reference: bit for bit where the same operations
are made (the Gaussian CDF in one buffer, the session adjustment's spread), to 1e-12 where only
the order of a sum changed (LinTS's ``x^T A^{-1} x`` through BLAS).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from bandits.base import other_arms, probability_of_max
from bandits.gaussian import gaussian_probability_of_max, normal_quantiles
from bandits.linear import LinTS, linear_predict
from serving.session import _std, session_adjust


def _old_linear_predict(A_inv, b, contexts):
    Ax = np.einsum("rkij,rj->rki", A_inv, contexts)
    return np.einsum("rki,rki->rk", Ax, b), np.maximum(np.einsum("rki,ri->rk", Ax, contexts), 0)


@pytest.mark.parametrize("runs,arms,d", [(1, 5, 100), (3, 4, 7)])
def test_linear_predict_equals_the_einsum_it_replaced(runs, arms, d):
    rng = np.random.default_rng(3)
    policy = LinTS(arms, n_features=d, random_state=0)
    state = policy.init_batch(runs)
    for _ in range(200):  # Sherman-Morrison steps, as the service folds outcomes
        x = np.round(rng.random((runs, d)) * (rng.random((runs, d)) < 0.3), 4)
        x[:, 0] = 1.0
        policy.update_batch(state, rng.integers(arms, size=runs), rng.random(runs), x)
    contexts = rng.random((runs, d))
    mean, var = linear_predict(state.stats["A_inv"], state.stats["b"], contexts)
    old_mean, old_var = _old_linear_predict(state.stats["A_inv"], state.stats["b"], contexts)
    assert mean.shape == var.shape == (runs, arms)
    np.testing.assert_allclose(mean, old_mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(var, old_var, rtol=0, atol=1e-12)
    assert (var > 0).all()


def test_lints_probabilities_equal_the_old_computation_to_1e_12():
    """The pmf a decision logs: the old einsum and CDF code against the new, same contexts."""
    rng = np.random.default_rng(5)
    policy = LinTS(5, n_features=20, propensity_grid=256, random_state=0)
    for _ in range(300):
        x = (rng.random(20) < 0.3).astype(float)
        x[0] = 1.0
        policy.update(int(rng.integers(5)), float(rng.random() < 0.3), x)
    z = normal_quantiles(256)
    for _ in range(20):
        x = np.round(rng.random(20), 4)
        mean, var = _old_linear_predict(policy.state_.stats["A_inv"], policy.state_.stats["b"],
                                        x[None])
        loc, scale = mean, np.sqrt(var)

        def ppf(rows, u, loc=loc, scale=scale):
            return loc[rows, :, None] + scale[rows, :, None] * z

        def cdf(rows, xq, others, loc=loc, scale=scale):
            return special.ndtr((xq[:, :, None, :] - loc[rows][:, others, None])
                                / scale[rows][:, others, None])

        old, _ = probability_of_max(ppf, cdf, 1, 5, 256)
        np.testing.assert_allclose(policy.action_probabilities(x), old[0], rtol=0, atol=1e-12)


def test_gaussian_cdf_in_one_buffer_is_bit_identical():
    rng = np.random.default_rng(8)
    loc, scale = rng.normal(0, 0.3, (4, 6)), rng.uniform(0.01, 1.0, (4, 6))
    z = normal_quantiles(64)

    def ppf(rows, u):
        return loc[rows, :, None] + scale[rows, :, None] * z

    def cdf(rows, xq, others):
        return special.ndtr((xq[:, :, None, :] - loc[rows][:, others, None])
                            / scale[rows][:, others, None])

    new, new_bound = gaussian_probability_of_max(loc, scale, None, 64)
    old, old_bound = probability_of_max(ppf, cdf, 4, 6, 64)
    np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(new_bound, old_bound)


def test_other_arms_rows_and_read_only():
    np.testing.assert_array_equal(other_arms(4), [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    assert other_arms(1).shape == (1, 0)
    with pytest.raises(ValueError):
        other_arms(3)[0, 0] = 5


def test_session_spread_is_numpys_std_bit_for_bit():
    rng = np.random.default_rng(11)
    for _ in range(2000):
        n = int(rng.integers(1, 3000))
        values = rng.normal(rng.normal() * 10, rng.exponential(3), n) * 10.0 ** rng.integers(-8, 9)
        assert _std(values) == float(values.std())


def test_session_adjust_equals_the_old_formula_bit_for_bit():
    rng = np.random.default_rng(12)
    n, g = 300, 7
    unit = rng.random((n, g))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    for _ in range(50):
        scores = rng.normal(size=n)
        scores[rng.integers(n, size=20)] = -np.inf
        liked, disliked = rng.integers(n, size=3), rng.integers(n, size=2)
        finite = np.isfinite(scores)
        old = scores + 0.7 * float(scores[finite].std()) * (
            unit @ (unit[liked].sum(axis=0) - unit[disliked].sum(axis=0)))
        np.testing.assert_array_equal(session_adjust(scores, liked, disliked, unit, 0.7), old)

"""The request path's faster arithmetic gives the numbers of the code it replaced (issue 19).

Each replaced expression is kept here as the reference: bit for bit where the same operations
are made (the Gaussian CDF in one buffer, the session adjustment's spread), to 1e-12 where only
the order of a sum changed (LinTS's ``x^T A^{-1} x`` through BLAS). LinTS's probabilities take
a new rule (tanh-sinh, :func:`bandits.gaussian.normal_probability_of_max`): checked against a
high-resolution reference to 1e-6 (1e-8 in its first tier), closer than the grid it replaces.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from bandits.base import other_arms, probability_of_max
from bandits.gaussian import (
    gaussian_probability_of_max,
    normal_probability_of_max,
    normal_quantiles,
)
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


def _problem(rng, n_arms, ratio):
    """Posterior means and scales of ``n_arms`` arms whose scales span exactly ``ratio``."""
    loc = rng.normal(0.0, [0.01, 0.1, 0.3, 1.0][rng.integers(4)], (1, n_arms))
    scale = 0.1 * np.exp(rng.uniform(0.0, np.log(ratio), (1, n_arms)))
    scale[0, 0], scale[0, -1] = 0.1, 0.1 * ratio
    return loc, scale


@pytest.mark.parametrize("ratio,atol", [(1.0, 1e-8), (1.5, 1e-8), (3.0, 1e-7), (10.0, 1e-6)])
def test_normal_probability_of_max_is_within_its_tolerance_of_a_fine_grid(ratio, atol):
    """The tanh-sinh tiers against 2**15 grid intervals (themselves ~1e-9 from the truth): the
    service's 256 intervals err by up to 7e-5 on such problems, 33 to 129 nodes by < 1e-6."""
    rng = np.random.default_rng(int(ratio * 10))
    worst_grid = 0.0
    for trial in range(12):
        loc, scale = _problem(rng, 2 + trial % 5, ratio)
        ref = gaussian_probability_of_max(loc, scale, None, 1 << 15)[0]
        p, bound = normal_probability_of_max(loc, scale, 256)
        assert p.shape == (1, loc.shape[1]) and abs(p.sum() - 1.0) < 1e-12
        np.testing.assert_allclose(p, ref, rtol=0, atol=atol)
        # The bound is guaranteed (up to the reference's own ~1e-9 error and normalisation).
        assert (np.abs(p - ref) <= bound + 1e-8).all()
        worst_grid = max(worst_grid, np.abs(gaussian_probability_of_max(
            loc, scale, None, 256)[0] - ref).max())
    assert worst_grid > 10 * atol  # the old rule would fail this test


def test_ill_conditioned_runs_use_the_grid_and_every_run_is_computed_alone():
    rng = np.random.default_rng(4)
    problems = [_problem(rng, 5, ratio) for ratio in (1.5, 30.0, 6.0, 2.0, 200.0)]
    loc = np.vstack([p[0] for p in problems])
    scale = np.vstack([p[1] for p in problems])
    p, bound = normal_probability_of_max(loc, scale, 256)
    grid, grid_bound = gaussian_probability_of_max(loc[[1, 4]], scale[[1, 4]], None, 256)
    np.testing.assert_array_equal(p[[1, 4]], grid)  # beyond ratio 10: the grid, bit for bit
    np.testing.assert_array_equal(bound[[1, 4]], grid_bound)
    for r in range(5):
        alone, alone_bound = normal_probability_of_max(loc[r:r + 1], scale[r:r + 1], 256)
        np.testing.assert_array_equal(p[r], alone[0])
        np.testing.assert_array_equal(bound[r], alone_bound[0])
    one, one_bound = normal_probability_of_max(np.zeros((1, 1)), np.ones((1, 1)), 256)
    assert one.tolist() == [[1.0]] and one_bound[0, 0] < 1e-9


def test_lints_probabilities_match_a_direct_integral_to_1e_7():
    """What the service logs and OPE replays (LinTS.action_probabilities, one function),
    against P(k max) = int phi(z) prod_j Phi((m_k + s_k z - m_j) / s_j) dz by adaptive
    quadrature (the 256-interval grid it replaces: 2e-5 here, tests/test_bandits.py)."""
    from scipy import integrate
    rng = np.random.default_rng(5)
    policy = LinTS(5, n_features=30, propensity_grid=256, random_state=0)
    for _ in range(400):
        policy.update(int(rng.integers(5)), float(rng.random() < 0.3), rng.random(30))
    x = rng.random(30)
    p = policy.action_probabilities(x)
    A, b = policy.state_.stats["A_inv"][0], policy.state_.stats["b"][0]
    m = np.array([x @ A[k] @ b[k] for k in range(5)])
    s = np.sqrt([x @ A[k] @ x for k in range(5)])
    exact = [integrate.quad(lambda z, k=k: np.exp(-z * z / 2) / np.sqrt(2 * np.pi) * np.prod(
        [special.ndtr((m[k] + s[k] * z - m[j]) / s[j]) for j in range(5) if j != k]),
        -12, 12, epsabs=1e-13, limit=200)[0] for k in range(5)]
    assert 0.05 < p.max() < 0.95 and s.max() / s.min() < 3.0  # competing arms, tanh-sinh
    np.testing.assert_allclose(p, exact, atol=1e-7, rtol=0)


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


def _old_top(ranking, k, excluded):
    head = ranking.order[:k + excluded.size]
    if excluded.size:
        hidden = np.zeros(ranking.scores.size, dtype=bool)
        hidden[excluded] = True
        head = head[~hidden[head]]
    head = head[:k]
    if head.size < k and not ranking.complete:
        return None
    return head, ranking.scores[head]


def test_ranking_top_answers_as_before_with_its_early_exit():
    from serving.armset import Ranking, rank_rows, unranked
    rng = np.random.default_rng(13)
    for _ in range(300):
        scores = rng.normal(size=40)
        scores[rng.integers(40, size=5)] = -np.inf
        depth = int(rng.integers(1, 45))
        ranking = [unranked(scores), rank_rows(scores[None, :], depth)[0],
                   Ranking(scores, rank_rows(scores[None, :], 40)[0].order, True)][
                       int(rng.integers(3))]
        k, excluded = int(rng.integers(1, 12)), rng.integers(40, size=int(rng.integers(0, 6)))
        new, old = ranking.top(k, excluded), _old_top(ranking, k, excluded)
        assert (new is None) == (old is None)
        if new is not None:
            np.testing.assert_array_equal(new[0], old[0])
            np.testing.assert_array_equal(new[1], old[1])

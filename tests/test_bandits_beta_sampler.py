"""The Beta posterior sampler of Thompson Sampling draws the exact Beta law, on both of its paths.

``bandits.base.standard_gamma`` draws float32 arrays of at least ``FAST_GAMMA_MIN_SIZE`` entries by
a vectorised Marsaglia-Tsang round (plus numpy for the rejected entries) and everything else by
numpy. The policy's sampler, :func:`bandits.thompson.gamma_pair_draws`, is checked on each path by
Kolmogorov-Smirnov tests against the Beta law (scipy) at many (alpha, beta), small (< 1: the prior
can be) and large, and the same test at the same size is shown to reject a sampler whose shape is
5% off. So is :func:`bandits.thompson.beta_odds_draws`'s path for many ``alpha == 1`` entries
(``B = 1 - U^(1/beta)``, no Gamma draw).

The tests look at the logit of the Beta draw, ``log G_a - log G_b``, rather than at
``G_a / (G_a + G_b)``: the KS statistic is the same for any increasing transform, but a Beta draw
within 2^-53 of 1 rounds to 1 even in float64 (1.3% of Beta(0.1, 0.1) draws), which a KS test
of 400,000 draws flags for numpy's own float64 sampler too. The logit keeps every draw distinct.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
from scipy import special, stats

import bandits as bd
from bandits import thompson
from bandits.base import FAST_GAMMA_MIN_SIZE, GAMMA_BLOCK, Draws, row_argmax, standard_gamma
from bandits.thompson import ALPHA_ONE_MIN_SHARE, beta_odds_draws, gamma_pair_draws

# (alpha, beta): below 1 (priors), at 1 (the uniform prior, a Gamma(1) side), click-like counts,
# unbalanced and large counts.
PAIRS = [(0.1, 0.1), (0.1, 0.5), (0.5, 0.5), (0.5, 3.0), (0.3, 40.0), (1.0, 1.0), (1.0, 40.0),
         (3.0, 1.0), (2.5, 7.5), (1.5, 0.7), (12.0, 88.0), (30.0, 200.0), (400.0, 9600.0),
         (2e4, 6e4), (1e5, 1e5), (5e5, 5e6)]
N_FAST = 12_000  # draws per pair on the fast path: 16 x 12,000 entries >> FAST_GAMMA_MIN_SIZE
N_FLOAT64 = 3_000  # per pair on numpy's float64 path
P_MIN = 1e-3  # each KS test; with the seeds fixed the outcome is deterministic


def _beta_logit_cdf(a: float, b: float) -> Callable[[np.ndarray], np.ndarray]:
    """CDF of logit(X), X ~ Beta(a, b), accurate in both tails (upper tail via betaincc)."""
    def cdf(t: np.ndarray) -> np.ndarray:
        return np.where(t < 0, special.betainc(a, b, special.expit(t)),
                        special.betaincc(b, a, special.expit(-t)))
    return cdf


def _logit_draws(alpha: np.ndarray, beta: np.ndarray, seed: int) -> np.ndarray:
    ga, gb = gamma_pair_draws(alpha, beta, Draws(np.random.default_rng(seed), alpha.shape[0]))
    assert ga.dtype == gb.dtype == alpha.dtype and ga.shape == gb.shape == alpha.shape
    assert (ga >= 0).all() and (gb >= 0).all()
    with np.errstate(divide="ignore"):  # a float32 Gamma(0.1) draw underflows to 0 now and then
        return np.log(ga.astype(np.float64)) - np.log(gb.astype(np.float64))


def _ks_pvalues(logits: np.ndarray, pairs: list[tuple[float, float]]) -> np.ndarray:
    return np.array([stats.kstest(logits[:, j], _beta_logit_cdf(a, b)).pvalue
                     for j, (a, b) in enumerate(pairs)])


def _shapes(pairs: list[tuple[float, float]], n: int, dtype: type
            ) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([p[0] for p in pairs], dtype=dtype)
    b = np.array([p[1] for p in pairs], dtype=dtype)
    return np.tile(a, (n, 1)), np.tile(b, (n, 1))


def test_fast_float32_path_draws_the_beta_law_at_many_shapes():
    alpha, beta = _shapes(PAIRS, N_FAST, np.float32)
    assert alpha.size >= FAST_GAMMA_MIN_SIZE  # the vectorised sampler runs
    p = _ks_pvalues(_logit_draws(alpha, beta, 11), PAIRS)
    assert (p > P_MIN).all(), dict(zip(PAIRS, p.round(5), strict=True))


def test_the_same_ks_test_rejects_a_sampler_whose_shape_is_5_percent_off():
    # What the test above would see from a broken sampler (e.g. d = a - 1/3 mistyped): the same
    # path and size, alpha inflated by 5%. Over 10 other seeds every pair with both shapes >= 1
    # gave p < 0.005 (the largest: 2.1e-3 at (1, 1)) and those from (2.5, 7.5) up below 1e-8;
    # at the small shapes 5% is closer to the noise of 12,000 draws (largest p 0.054).
    alpha, beta = _shapes(PAIRS, N_FAST, np.float32)
    p = _ks_pvalues(_logit_draws(alpha * np.float32(1.05), beta, 11), PAIRS)
    big = np.array([min(a, b) >= 1 for a, b in PAIRS])
    assert (p[big] < 0.01).all(), dict(zip(PAIRS, p.round(5), strict=True))
    assert (p < P_MIN).mean() >= 0.75, dict(zip(PAIRS, p.round(5), strict=True))


# Six of ten pairs at alpha = 1 (>= ALPHA_ONE_MIN_SHARE): those take B = 1 - U^(1/beta), the
# other four two Gamma draws, in the same call.
ONE_PAIRS = [(1.0, 0.1), (1.0, 0.5), (1.0, 1.0), (1.0, 3.0), (1.0, 40.0), (1.0, 5e5),
             (0.5, 0.5), (2.5, 7.5), (12.0, 88.0), (0.3, 40.0)]


def _logit_odds(alpha: np.ndarray, beta: np.ndarray, seed: int,
                monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    calls = []
    real = thompson._odds_with_alpha_one
    monkeypatch.setattr(thompson, "_odds_with_alpha_one",
                        lambda *args: calls.append(1) or real(*args))
    odds = beta_odds_draws(alpha, beta, Draws(np.random.default_rng(seed), alpha.shape[0]), {})
    assert calls == [1] and odds.dtype == np.float32 and (odds >= 0).all()
    with np.errstate(divide="ignore"):
        return np.log(odds.astype(np.float64))


def test_the_alpha_one_path_draws_the_beta_law(monkeypatch):
    alpha, beta = _shapes(ONE_PAIRS, N_FAST, np.float32)
    assert (alpha == 1).mean() >= ALPHA_ONE_MIN_SHARE
    p = _ks_pvalues(_logit_odds(alpha, beta, 18, monkeypatch), ONE_PAIRS)
    assert (p > P_MIN).all(), dict(zip(ONE_PAIRS, p.round(5), strict=True))


def test_the_same_ks_test_rejects_the_alpha_one_path_with_beta_5_percent_off(monkeypatch):
    # e.g. a mistyped exponent U^(1/(1.05 beta)): at beta >= 1 the test above fails (seeds
    # 100-109: the largest p of those four pairs was 0.011 over the ten seeds, 1.4e-3 the median)
    alpha, beta = _shapes(ONE_PAIRS, N_FAST, np.float32)
    off = np.where(alpha == 1, beta * np.float32(1.05), beta).astype(np.float32)
    p = _ks_pvalues(_logit_odds(alpha, off, 18, monkeypatch), ONE_PAIRS)
    hit = np.array([a == 1 and b >= 1 for a, b in ONE_PAIRS])
    assert (p[hit] < 0.02).all(), dict(zip(ONE_PAIRS, p.round(5), strict=True))


def test_numpy_path_small_float32_arrays_and_float64_draw_the_beta_law():
    pairs = PAIRS[::2]
    n32 = (FAST_GAMMA_MIN_SIZE - 1) // len(pairs)  # the largest float32 batch numpy still draws
    for n, dtype in ((n32, np.float32), (N_FLOAT64, np.float64)):
        alpha, beta = _shapes(pairs, n, dtype)
        if dtype == np.float32:
            assert alpha.size < FAST_GAMMA_MIN_SIZE
        p = _ks_pvalues(_logit_draws(alpha, beta, 12), pairs)
        assert (p > P_MIN).all(), (dtype, dict(zip(pairs, p.round(5), strict=True)))


def test_gamma_draws_below_shape_one_and_huge_shapes():
    # Gamma(a) = Gamma(a + 1) U^(1/a) for a < 1; the float64 full test for the huge shapes
    rng = np.random.default_rng(13)
    for a in (0.2, 0.7, 1.0, 4.0, 1e6):
        g = standard_gamma(rng, np.full(40_000, a, dtype=np.float32))
        assert g.dtype == np.float32
        assert stats.kstest(g.astype(np.float64), stats.gamma(a).cdf).pvalue > P_MIN, a


def test_gamma_out_buffer_and_non_contiguous_input():
    rng = np.random.default_rng(14)
    shape = np.full((3, 5000), 2.5, dtype=np.float32)
    out = np.empty_like(shape)
    assert standard_gamma(rng, shape, out=out) is out
    g = standard_gamma(rng, shape.T)  # a transposed view
    assert g.shape == (5000, 3)
    assert stats.kstest(np.concatenate([out.ravel(), g.ravel()]).astype(np.float64),
                        stats.gamma(2.5).cdf).pvalue > P_MIN
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        standard_gamma(rng, shape.T, out=np.empty_like(shape).T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("prior", [([3.0, 5.0, 1.5, 0.5], [7.0, 9.0, 2.0, 0.5]),
                                   ([1.0, 1.0, 1.0, 2.0], [1.0, 5.0, 30.0, 9.0])],
                         ids=["two-gammas", "alpha-one"])
def test_thompson_choices_follow_the_exact_probability_of_being_best(dtype, prior):
    # End to end: R runs in the same posterior state pick arm k with P(arm k's sample is the
    # largest), computed by quadrature; chi-square over the arms. The second prior has three
    # arms at alpha = 1: in float32 they take beta_odds_draws's one-uniform path.
    ts = bd.ThompsonSampling(["a", "b", "c", "d"], prior_alpha=prior[0], prior_beta=prior[1])
    R = 40_000
    state = ts.init_batch(R, dtype=dtype)
    arms = ts.select_batch(state, np.random.default_rng(15))
    probs = ts.action_probabilities()  # the single-run state has the same posterior
    counts = np.bincount(arms, minlength=4)
    assert stats.chisquare(counts, probs * R).pvalue > P_MIN, (counts / R, probs)


def test_row_argmax_matches_numpy_including_ties_and_infinities():
    rng = np.random.default_rng(16)
    for K in (1, 2, 3, 5, 8, 9):
        for R in (10, 5000):
            scores = rng.integers(0, 4, size=(R, K)).astype(np.float32)  # many ties
            scores[rng.random((R, K)) < 0.05] = np.inf
            np.testing.assert_array_equal(row_argmax(scores), scores.argmax(axis=1))
            assert row_argmax(scores).dtype == np.intp


def test_the_squeeze_never_accepts_what_the_full_test_refuses():
    # The sampler's squeeze, x^4 / 108 < (1 - U) d min(1, w), must imply the full test
    # log U < h = x^2 / 2 + d (1 - v + log v) with w = 1 + x / sqrt(9 d), v = w^3: it does when
    # h >= -x^4 / (108 d min(1, w)) (then U < 1 + that bound <= e^h). Checked in float64 on a
    # dense grid of d (a = 1 to 10^6) and x up to where w = 0; the margin must be positive
    # (it is 0 only at x = 0).
    d = np.geomspace(2.0 / 3.0, 1e6, 60)[:, None]
    c = 1.0 / np.sqrt(9.0 * d)
    frac = np.concatenate([np.linspace(-0.999, -0.01, 300), np.linspace(0.01, 40.0, 300)])
    y = np.broadcast_to(frac, (d.size, frac.size))  # y = c x spans (-1, 40)
    x = y / c
    w = 1.0 + y
    h = 0.5 * x**2 + d * (1.0 - w**3 + 3.0 * np.log(w))
    bound = -(x**4) / (108.0 * d * np.minimum(1.0, w))
    assert (h - bound >= -1e-9 * np.abs(bound)).all()
    # and the bound is not vacuous: for large d and moderate x it is within a few % of h
    near = (d > 100) & (np.abs(y) < 0.01)
    assert (np.abs(bound - h)[near] <= 0.05 * np.abs(h)[near]).all()


def test_the_vectorised_sampler_is_thread_safe_and_deterministic():
    # Its work buffers are per thread: two threads drawing at once give exactly what each
    # generator gives alone. (With one shared set of buffers this failed in 10 runs of 10.)
    import threading

    shape = np.random.default_rng(17).uniform(0.3, 50.0, 2 * GAMMA_BLOCK).astype(np.float32)
    calls = 20

    def draws(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.stack([standard_gamma(rng, shape) for _ in range(calls)])

    alone = {s: draws(s) for s in (1, 2)}
    together: dict[int, np.ndarray] = {}
    start = threading.Barrier(2)

    def run(seed: int) -> None:
        start.wait()
        together[seed] = draws(seed)

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (1, 2):
        np.testing.assert_array_equal(together[s], alone[s])


BETA_POLICIES = [bd.ThompsonSampling, bd.DiscountedThompsonSampling,
                 bd.SlidingWindowThompsonSampling,
                 lambda arms, **kw: bd.MultileaveThompsonSampling(arms, m=2, slate_size=2, **kw)]


@pytest.mark.parametrize("make", BETA_POLICIES, ids=["ts", "dts", "swts", "multileave"])
@pytest.mark.parametrize("value", [1e-3, 0.09, 2e9, 1e200, 1e308])
def test_a_beta_prior_outside_the_range_where_picks_follow_propensities_is_refused(make, value):
    # Found by attack: at prior 1e-3 the picks were 0.45 / 0.30 / 0.25 against the reported 1/3
    # each (Gamma draws underflow to 0 and tie), at 1e200 always arm 0, at 1e308 the
    # propensities were NaN. The range's measurements: thompson.BETA_PRIOR_MIN / _MAX.
    allowed = r"outside the allowed range \[0\.1, 1e\+09\]"
    shown = re.escape(repr(value))
    with pytest.raises(ValueError, match=rf"prior_alpha={shown} is {allowed}"):
        make(3, prior_alpha=value)
    with pytest.raises(ValueError, match=rf"prior_beta\[2\]={shown} is {allowed}"):
        make(3, prior_beta=[1.0, 1.0, value])


def test_a_new_arm_with_a_prior_outside_the_range_is_refused():
    ts = bd.ThompsonSampling(["a", "b"], random_state=0)
    with pytest.raises(ValueError, match=r"prior_alpha\[2\]=0\.001 is outside the allowed range"):
        ts.add_arm("c", prior_alpha=1e-3)
    assert ts.arms == ["a", "b"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("prior", [([0.1, 0.1, 0.3], [0.1, 0.3, 0.1]),
                                   ([1e9, 1e9 - 4.7e4, 1e9], [1e9, 1e9, 1e9 - 3.2e4])],
                         ids=["smallest", "largest"])
def test_picks_follow_the_propensities_at_the_ends_of_the_prior_range(dtype, prior):
    # Inside the range the empirical picks of 20,000 seeded runs agree with the quadrature's
    # propensities (chi-square over the arms), in a simulation's float32 as in float64.
    ts = bd.ThompsonSampling(3, prior_alpha=prior[0], prior_beta=prior[1])
    R = 20_000
    arms = ts.select_batch(ts.init_batch(R, dtype=dtype), np.random.default_rng(3))
    probs = ts.action_probabilities()
    assert np.isfinite(probs).all() and probs.min() > 0.01, probs
    counts = np.bincount(arms, minlength=3)
    assert stats.chisquare(counts, probs * R).pvalue > P_MIN, (counts / R, probs)

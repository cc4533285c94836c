"""Gaussian Thompson Sampling for continuous rewards (e.g. ratings), with conjugate priors.

Each arm's mean reward ``mu_k`` gets a conjugate prior; ``select`` samples every ``mu_k`` from its
posterior and plays the largest. Sufficient statistics per arm: ``pulls`` (n), ``reward_sum``
(S) and ``reward_sq_sum`` (SS).

Known noise variance (``noise_variance=sigma2``)
    ``mu ~ N(prior_mean, sigma2 / prior_strength)``; the posterior is
    ``N(m_n, sigma2 / kappa_n)`` with ``kappa_n = prior_strength + n`` and
    ``m_n = (prior_strength * prior_mean + S) / kappa_n``.
Unknown noise variance (``noise_variance=None``): Normal-Gamma prior
    precision ``lambda ~ Gamma(prior_shape, rate=prior_rate)``,
    ``mu | lambda ~ N(prior_mean, 1 / (prior_strength * lambda))``. Posterior:
    ``kappa_n`` and ``m_n`` as above, ``alpha_n = prior_shape + n / 2``,
    ``beta_n = prior_rate + (SS - S**2 / n) / 2 + prior_strength * n * (S / n - prior_mean)**2
    / (2 * kappa_n)``; the marginal of ``mu`` is Student-t with ``2 alpha_n`` degrees of freedom,
    location ``m_n`` and scale ``sqrt(beta_n / (alpha_n kappa_n))``.

Propensities use the quadrature of :func:`bandits.base.probability_of_max` over these (normal or
Student-t) marginals, with the same ``pi / (4 * propensity_grid)`` error bound.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
from scipy import special

from bandits.base import (
    MIN_GAMMA_SHAPE,
    BatchedPolicy,
    BatchState,
    Draws,
    RandomState,
    add_to_pulled,
    probability_of_max,
    quadrature_grid,
    row_max,
)
from bandits.errors import MAX_ABS_REWARD, check_propensity_grid, check_real


@functools.lru_cache(maxsize=16)
def normal_quantiles(n_grid: int) -> np.ndarray:
    """Standard normal quantiles of :func:`bandits.base.quadrature_grid`'s points, shape
    ``(n_grid + 1,)`` (read-only, cached: computing them took a third of a single-context
    LinTS probability call).
    """
    z: np.ndarray = special.ndtri(quadrature_grid(n_grid)[0])  # scipy has no stubs
    z.flags.writeable = False
    return z


#: The double-exponential rule's tiers for normal posteriors (:func:`normal_probability_of_max`):
#: ``(largest scale ratio, step h)``; a run whose arms' scales differ by more than the last ratio
#: goes to the cosine grid. Absolute error against a 2**16- or 2**17-interval grid (itself
#: ~2e-9 off), 150-400 random problems per tier with 2 to 8 arms and the ratio at its bound:
#: <= 4e-9 at ratio 1.5 with h = 0.2 (33 nodes), <= 1.3e-8 at ratio 3 with h = 0.12 (53),
#: <= 3.6e-7 at ratio 10 with h = 0.05 (129); the 256-interval grid the service used errs by up
#: to 7e-5 on the same problems (tests/test_realtime_fast_paths.py).
TANH_SINH_TIERS = ((1.5, 0.2), (3.0, 0.12), (10.0, 0.05))
#: The rule's range ``|t| <= TANH_SINH_T``: the nodes reach ``u`` ~ 2e-17 from 0 and 1.
TANH_SINH_T = 3.2


#: The tiers' largest scale ratios, ascending.
TIER_RATIOS = tuple(ratio for ratio, _ in TANH_SINH_TIERS)


@functools.lru_cache(maxsize=8)
def tanh_sinh_nodes(h: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tanh-sinh (double-exponential) rule on ``(0, 1)`` with step ``h``: nodes
    ``u = (1 + tanh(pi/2 sinh t)) / 2`` for ``t = 0, +-h, ...`` up to :data:`TANH_SINH_T`, their
    weights, and the standard normal quantiles at the nodes (read-only, computed once per ``h``).

    The rule is exponentially accurate for integrands analytic inside ``(0, 1)`` whatever their
    power-law behaviour at the ends (Takahasi and Mori 1974), which is that of
    :func:`bandits.base.probability_of_max`'s ``g``.

    Returns
    -------
    u, du, weights, z : ndarray
        Shape ``(2 m + 1,)`` (``du = diff(u)``: ``(2 m,)``); ``z`` from whichever tail is nearer
        (``1 - u`` is exact there), so the far nodes keep their quantiles.
    """
    m = int(np.floor(TANH_SINH_T / h + 1e-9))
    t = h * np.arange(-m, m + 1)
    s = 0.5 * np.pi * np.sinh(t)
    u = special.expit(2.0 * s)
    z = np.where(t < 0, special.ndtri(u), -special.ndtri(special.expit(-2.0 * s)))
    weights = h * 0.5 * np.pi * np.cosh(t) / (2.0 * np.cosh(s) ** 2)
    du = np.diff(u)
    for a in (u, du, weights, z):
        a.flags.writeable = False
    return u, du, weights, z


def normal_probability_of_max(loc: np.ndarray, scale: np.ndarray, n_grid: int
                              ) -> tuple[np.ndarray, np.ndarray]:
    """P(arm k's normal draw is the largest), (R, K), with a guaranteed error bound (R, K):
    :func:`gaussian_probability_of_max` for normal posteriors at a fraction of the cost.

    A run whose arms' scales are within a factor of 1.5 (3, 10) of each other is integrated by
    the tanh-sinh rule with 33 (53, 129) nodes (:data:`TANH_SINH_TIERS`: <= 1e-6 absolute error
    against a high-resolution reference, 1e-8 in the first tiers), the others by the cosine
    grid of ``n_grid`` intervals. LinTS with five arms on one context: 33 nodes cost ~8x fewer
    CDF values than the service's 256 intervals. Every run is computed alone or in a block of
    runs of its tier, so a run's probabilities do not depend on the others in the call.

    Parameters
    ----------
    loc, scale : ndarray, shape ``(R, K)``
        Every arm's posterior mean and standard deviation (``scale > 0``).
    n_grid : int
        Intervals of the grid the ill-conditioned runs use.

    Returns
    -------
    probabilities, error_bound : ndarray, shape ``(R, K)``
        As :func:`bandits.base.probability_of_max` (the bound of the tanh-sinh runs is the
        bracket on their nodes: guaranteed, looser than the grid's).
    """
    if scale.shape[0] == 1:  # one run (a request): its tier in Python floats (~8 us less)
        low, high = float(scale.min()), float(scale.max())
        ratio = high / low if low > 0 else math.inf
        level = (bisect.bisect_left(TIER_RATIOS, ratio) if math.isfinite(ratio)
                 else len(TANH_SINH_TIERS))
        return _probability_of_max_tier(loc, scale, level, n_grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = scale.max(axis=1) / scale.min(axis=1)
    tier = np.searchsorted(TIER_RATIOS, ratio, side="left")
    tier[~np.isfinite(ratio)] = len(TANH_SINH_TIERS)  # a zero or non-finite scale: the grid
    probs, bound = np.empty_like(loc, dtype=np.float64), np.empty_like(loc, dtype=np.float64)
    for level in np.unique(tier).tolist():
        rows = tier == level
        probs[rows], bound[rows] = _probability_of_max_tier(loc[rows], scale[rows], level,
                                                            n_grid)
    return probs, bound


def _probability_of_max_tier(loc: np.ndarray, scale: np.ndarray, tier: int, n_grid: int
                             ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`normal_probability_of_max` for runs of one tier (``len(TANH_SINH_TIERS)``: the
    grid).
    """
    if tier >= len(TANH_SINH_TIERS):
        return gaussian_probability_of_max(loc, scale, None, n_grid)
    u, du, weights, z = tanh_sinh_nodes(TANH_SINH_TIERS[tier][1])
    R, K = loc.shape
    return probability_of_max(_normal_ppf(loc, scale, z), _normal_cdf(loc, scale), R, K, n_grid,
                              (u, du, weights))


def _normal_ppf(loc: np.ndarray, scale: np.ndarray, z: np.ndarray
                ) -> Callable[[slice, np.ndarray], np.ndarray]:
    """The ``ppf`` of :func:`bandits.base.probability_of_max` for normal marginals, at the
    standard normal quantiles ``z`` of its nodes. An arm of scale 0 (a point mass: LinTS at a
    zero context, or where ``x^T A^-1 x`` underflows or rounds below 0) is at ``loc`` for every
    node (``0 * inf`` at the grid's ends was NaN).
    """
    zero = scale == 0
    point_masses = bool(zero.any())

    def ppf(rows: slice, nodes: np.ndarray) -> np.ndarray:
        x = loc[rows, :, None] + scale[rows, :, None] * z
        if point_masses:
            x = np.where(zero[rows, :, None], loc[rows, :, None], x)
        return cast(np.ndarray, x)
    return ppf


def _normal_cdf(loc: np.ndarray, scale: np.ndarray
                ) -> Callable[[slice, np.ndarray, np.ndarray], np.ndarray]:
    """The ``cdf`` of :func:`bandits.base.probability_of_max` for normal marginals."""
    point_masses = bool((scale == 0).any())

    def cdf(rows: slice, x: np.ndarray, others: np.ndarray) -> np.ndarray:
        # The same operations as ndtr((x - loc) / scale), in one buffer: the temporaries were
        # ~10% of a LinTS request's probabilities.
        t = np.subtract(x[:, :, None, :], loc[rows][:, others, None])
        if not point_masses:
            np.divide(t, scale[rows][:, others, None], out=t)
            return cast(np.ndarray, special.ndtr(t, out=t))
        # An arm of scale 0 is a step at its loc (+-inf here). At the step itself (0 / 0: a tie
        # with arm k's draw) the tie is broken uniformly at random, as the sampler does
        # (bandits.base.argmax_random_ties): arm k wins a tie with m other arms with
        # probability 1 / (m + 1), so each of the m tied factors of the product is
        # (m + 1)^(-1 / m).
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(t, scale[rows][:, others, None], out=t)
        tie = np.isnan(t)
        out = special.ndtr(t, out=t)
        if tie.any():
            m = np.broadcast_to(tie.sum(axis=2, keepdims=True), tie.shape)[tie]
            out[tie] = (m + 1.0) ** (-1.0 / m)
        return cast(np.ndarray, out)
    return cdf


def gaussian_posterior(pulls: np.ndarray, reward_sum: np.ndarray, reward_sq_sum: np.ndarray,
                       prior_mean: float, prior_strength: float, noise_variance: float | None,
                       prior_shape: float, prior_rate: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Posterior of every arm's mean: location, scale and Student-t degrees of freedom.

    Returns ``(loc, scale, df)`` of shape (R, K); ``df`` is None for the known-variance
    (normal) posterior.
    """
    kappa = prior_strength + pulls
    loc = (prior_strength * prior_mean + reward_sum) / kappa
    if noise_variance is not None:
        return loc, np.sqrt(noise_variance / kappa), None
    n = np.maximum(pulls, 1)
    mean = reward_sum / n
    within = np.maximum(reward_sq_sum - reward_sum * mean, 0.0)
    shape = prior_shape + pulls / 2.0
    rate = prior_rate + 0.5 * within + prior_strength * pulls * (mean - prior_mean) ** 2 / (
        2.0 * kappa)
    return loc, np.sqrt(rate / (shape * kappa)), 2.0 * shape


def gaussian_thompson_choose(loc: np.ndarray, scale: np.ndarray, df: np.ndarray | None,
                             draws: Draws) -> np.ndarray:
    """Argmax of one posterior sample per arm, (R, K) -> (R,).

    Student-t draws are ``z / sqrt(G / a)`` with ``G ~ Gamma(a)`` and ``a = df / 2``.
    """
    z = draws.standard_normal((loc.shape[1],))
    if df is not None:
        a = df / 2.0
        with np.errstate(divide="ignore"):  # a float32 Gamma(0.1) draw can round to 0 (3e-5):
            z = z / np.sqrt(draws.standard_gamma(a) / a)  # the t draw is +-inf, still a draw
    return sample_argmax(loc + scale * z, z, scale)


def sample_argmax(samples: np.ndarray, z: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Row-wise argmax of posterior ``samples`` (R, K), a tie going to the tied arm of the
    largest draw ``z`` (R, K) the samples were made of.

    Samples tie only where scales are 0 (point masses); the draws being independent, that
    breaks a tie uniformly at random, as the propensities' quadrature shares it
    (:func:`_normal_cdf`), without drawing more (``argmax_random_ties``' K uniforms a step
    would change every seeded run for a case of probability zero elsewhere). Found by review:
    GaussianThompsonSampling at point masses reported 1/3 each and played arm 0 every time.
    Without a scale of 0 (``scale``: the samples' spreads) the plain argmax: the tie rule's
    pass cost 3x the argmax per step (1.11 against 0.37 ms for 20,000 runs of 3 arms).
    """
    if not (scale == 0).any():
        return cast(np.ndarray, samples.argmax(axis=1))
    return cast(np.ndarray, np.where(samples >= row_max(samples), z, -np.inf).argmax(axis=1))


def gaussian_probability_of_max(loc: np.ndarray, scale: np.ndarray, df: np.ndarray | None,
                                n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """P(arm k's sample is the largest), (R, K), with its error bound (R, K)."""
    R, K = loc.shape
    if df is None:
        ppf = _normal_ppf(loc, scale, normal_quantiles(n_grid))  # z: same every arm and call
        cdf = _normal_cdf(loc, scale)
    else:
        def ppf(rows: slice, u: np.ndarray) -> np.ndarray:
            return cast(np.ndarray, loc[rows, :, None] + scale[rows, :, None]
                        * special.stdtrit(df[rows, :, None], u))

        def cdf(rows: slice, x: np.ndarray, others: np.ndarray) -> np.ndarray:
            return cast(np.ndarray, special.stdtr(
                df[rows][:, others, None],
                (x[:, :, None, :] - loc[rows][:, others, None])
                / scale[rows][:, others, None]))
    with np.errstate(invalid="ignore"):
        return probability_of_max(ppf, cdf, R, K, n_grid)


class GaussianThompsonSampling(BatchedPolicy):
    """Thompson Sampling for real-valued rewards with a Normal (or Normal-Gamma) prior.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    prior_mean : float, default 0.0
        Prior mean of every arm's mean reward, within ``[-1e15, 1e15]`` like the rewards
        (``MAX_ABS_REWARD``; at 1e300 the draws no longer varied and every pick was arm 0).
    prior_strength : float, default 1.0
        kappa_0 > 0: the prior counts as this many observations.
    noise_variance : float or None, default 1.0
        Known reward variance (> 0); None learns it with a Normal-Gamma prior.
    prior_shape, prior_rate : float, default 1.0
        Gamma prior on the noise precision (used only when ``noise_variance`` is None):
        ``prior_shape >= MIN_GAMMA_SHAPE`` (0.1, where the picks follow the propensities),
        ``prior_rate > 0``.
    batch_size : int, default 1
        Delayed updates.
    propensity_grid : int, default 2048
        Quadrature intervals for :meth:`action_probabilities` (error <= pi / (4 * grid)).
    random_state : int, SeedSequence, Generator or None
        Source of the posterior samples.
    """

    per_arm_stats = ("pulls", "reward_sum", "reward_sq_sum")
    count_stats = ("pulls",)
    sum_stats = (("reward_sum", 1), ("reward_sq_sum", 2))
    propensity_method = "quadrature"

    def __init__(self, arms: Sequence[str] | int, *, prior_mean: float = 0.0,
                 prior_strength: float = 1.0, noise_variance: float | None = 1.0,
                 prior_shape: float = 1.0, prior_rate: float = 1.0, batch_size: int = 1,
                 propensity_grid: int = 2048, random_state: RandomState = None) -> None:
        self.prior_mean = prior_mean
        self.prior_strength = prior_strength
        self.noise_variance = noise_variance
        self.prior_shape = prior_shape
        self.prior_rate = prior_rate
        self.propensity_grid = propensity_grid
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _check_params(self) -> None:
        check_real(self.prior_mean, "prior_mean", low=-MAX_ABS_REWARD, high=MAX_ABS_REWARD)
        check_real(self.prior_strength, "prior_strength", low=0.0, low_open=True)
        if self.noise_variance is not None:
            check_real(self.noise_variance, "noise_variance", low=0.0, low_open=True)
        check_real(self.prior_shape, "prior_shape", low=MIN_GAMMA_SHAPE)
        check_real(self.prior_rate, "prior_rate", low=0.0, low_open=True)
        check_propensity_grid(self.propensity_grid)

    def _propensity_grid(self) -> int | None:
        return int(self.propensity_grid)

    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        return {name: np.zeros((n_runs, n_arms), dtype) for name in self.per_arm_stats}

    def posterior_batch(self, state: BatchState
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Posterior ``(loc, scale, df)`` of every run's arm means, (R, K) each (df None if the
        noise variance is known).
        """
        s = state.stats
        nv = None if self.noise_variance is None else float(self.noise_variance)
        return gaussian_posterior(s["pulls"], s["reward_sum"], s["reward_sq_sum"],
                                  float(self.prior_mean), float(self.prior_strength), nv,
                                  float(self.prior_shape), float(self.prior_rate))

    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        return gaussian_thompson_choose(*self.posterior_batch(state), draws)

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        add_to_pulled(stats["pulls"], arms, 1.0)
        add_to_pulled(stats["reward_sum"], arms, rewards)
        add_to_pulled(stats["reward_sq_sum"], arms, rewards * rewards)

    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        return gaussian_probability_of_max(*self.posterior_batch(state), self.propensity_grid)

    def posterior(self) -> dict[str, dict[str, float]]:
        """Per-arm posterior of the mean reward: ``{arm: {"loc", "scale", "df", "pulls"}}``
        (``df`` is ``inf`` for the known-variance normal posterior).
        """
        loc, scale, df = self.posterior_batch(self.state_)
        pulls = self.state_.stats["pulls"][0]
        return {arm: {"loc": float(loc[0, k]), "scale": float(scale[0, k]),
                      "df": float("inf") if df is None else float(df[0, k]),
                      "pulls": float(pulls[k])} for k, arm in enumerate(self.arms)}

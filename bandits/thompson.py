"""Beta-Bernoulli Thompson Sampling (Thompson 1933; Chapelle & Li 2011; Agrawal & Goyal 2012).

Each arm's click rate has a Beta(alpha_k, beta_k) posterior, alpha_k = prior_alpha_k + successes_k
and beta_k = prior_beta_k + failures_k. ``select`` draws one sample per arm and plays the largest.

Fractional rewards r in [0, 1] are folded in directly (successes += r, failures += 1 - r), the
"fractional Beta update": for 0/1 rewards it is the exact conjugate update; for fractional ones it
matches the mean of Agrawal & Goyal's Bernoulli trick without its extra randomness.

The pure functions here (:func:`beta_thompson_choose` and its samplers :func:`beta_odds_draws`
and :func:`gamma_pair_draws`, :func:`beta_learn`, :func:`beta_probability_of_max`) are shared by
the single and the batched paths and by the non-stationary variants (:mod:`bandits.nonstationary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special

from bandits.base import (
    FAST_GAMMA_MIN_SIZE,
    GAMMA_BLOCK,
    MIN_GAMMA_SHAPE,
    BatchedPolicy,
    BatchState,
    Draws,
    RandomState,
    add_to_pulled,
    probability_of_max,
    row_argmax,
    row_starts,
    standard_gamma,
    uniforms_float32,
)
from bandits.errors import check_per_arm, check_propensity_grid


def gamma_pair_draws(alpha: np.ndarray, beta: np.ndarray, draws: Draws,
                     scratch: dict[str, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Independent Gamma(alpha, 1) and Gamma(beta, 1) draws, each shaped like ``alpha`` (R, K).

    ``G_a / (G_a + G_b)`` is then exactly Beta(alpha, beta) (what numpy's ``beta`` does
    internally); the draws come from :meth:`Draws.standard_gamma`, exact in float32 and
    float64. With ``scratch`` (a state's work buffers) the outputs reuse buffers and are
    overwritten by the next call.
    """
    out_a = out_b = None
    if scratch is not None and draws.n_runs > 1:
        if scratch.get("gamma_a") is None or scratch["gamma_a"].shape != alpha.shape \
                or scratch["gamma_a"].dtype != alpha.dtype:
            scratch["gamma_a"] = np.empty(alpha.shape, dtype=alpha.dtype)  # C order: the
            scratch["gamma_b"] = np.empty(alpha.shape, dtype=alpha.dtype)  # sampler needs it
        out_a, out_b = scratch["gamma_a"], scratch["gamma_b"]
    return draws.standard_gamma(alpha, out=out_a), draws.standard_gamma(beta, out=out_b)


#: Share of ``alpha == 1`` entries (no success yet under the uniform prior) from which
#: :func:`beta_odds_draws` draws those entries' Beta(1, beta) by one uniform each instead of two
#: Gamma draws. The uniform is drawn for every entry (cheaper than picking the entries out) and
#: the other entries are gathered, drawn by two Gamma calls and scattered back, so it pays only
#: when enough entries skip their Gamma pair. CPU time of one step's odds at 200,000 runs x 3
#: arms (the throughput benchmark's state after 10-60 steps), medians of 25 calls each way,
#: alternated in one process, load 8: share 0.69 5.74 ms against 10.02 ms, 0.51 7.21 / 9.27,
#: 0.40 8.02 / 8.78, 0.32 8.44 / 8.39 (even), 0.23 9.18 / 8.13.
ALPHA_ONE_MIN_SHARE = 1 / 3


def beta_odds_draws(alpha: np.ndarray, beta: np.ndarray, draws: Draws,
                    scratch: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """One draw of the odds ``B / (1 - B)``, B ~ Beta(alpha, beta), per entry; (R, K) -> (R, K).

    The odds are ``G_a / G_b`` with independent Gamma(alpha) and Gamma(beta) draws
    (:func:`gamma_pair_draws`). With a shared Generator, float32 shapes of at least
    ``FAST_GAMMA_MIN_SIZE`` entries and at least :data:`ALPHA_ONE_MIN_SHARE` of them at
    ``alpha == 1``, those entries take ``B = 1 - U^(1/beta)`` (the Beta(1, beta) law: its CDF is
    ``1 - (1 - x)^beta``), whose odds are ``U^(-1/beta) - 1 = expm1(-log(U) / beta)``, from
    one uniform (:func:`bandits.base.uniforms_float32`, on the grid of step 2^-23, so the
    exponential ``-log U`` is cut at 15.9, a tail of 1.2e-7; Box-Muller's normals in the Gamma
    sampler are cut at 5.65 sigma, 1.6e-8). Which path an entry takes depends on the other
    runs' shapes, so it is only used with a shared Generator (a per-run Generator draws each
    run's entries as a single run would).

    Returns
    -------
    ndarray, same shape and dtype as ``alpha``
        The odds; a work buffer of ``scratch`` when given (overwritten by the next call).
    """
    rng = draws.shared
    if (rng is not None and alpha.dtype == np.float32 and beta.dtype == np.float32
            and alpha.size >= FAST_GAMMA_MIN_SIZE):
        work = _work_buffers(scratch, alpha.size, ("one",))
        fa = np.ascontiguousarray(alpha).reshape(-1)
        one = np.equal(fa, np.float32(1.0), out=work["one"])
        if np.count_nonzero(one) >= ALPHA_ONE_MIN_SHARE * fa.size:
            work = _work_buffers(work, fa.size, ("odds", "rest_a", "rest_b", "draw_a", "draw_b"))
            odds = _odds_with_alpha_one(rng, fa, np.ascontiguousarray(beta).reshape(-1), work)
            return odds.reshape(alpha.shape)
    ga, gb = gamma_pair_draws(alpha, beta, draws, scratch)
    with np.errstate(divide="ignore"):  # a float32 Gamma(1) draw can round to 0: odds 0
        ga /= gb  # (or G_b to 0: odds inf, Beta = 1)
    return ga


def _work_buffers(scratch: dict[str, np.ndarray] | None, n: int, names: tuple[str, ...]
                  ) -> dict[str, np.ndarray]:
    """Flat work buffers ``names`` of :func:`beta_odds_draws` for ``n`` entries (``"one"`` bool,
    the others float32), kept in ``scratch`` (a state's work buffers) when given and made only
    when first needed: fresh arrays of a few MB each step cost page faults (1,400-1,600 per
    step measured at 200,000 x 3, which made the step 2-6 ms slower).
    """
    work = scratch if scratch is not None else {}
    for name in names:
        if work.get(name) is None or work[name].size != n:
            work[name] = np.empty(n, dtype=bool if name == "one" else np.float32)
    return work


def _odds_with_alpha_one(rng: np.random.Generator, alpha: np.ndarray, beta: np.ndarray,
                         work: dict[str, np.ndarray]) -> np.ndarray:
    """The odds of :func:`beta_odds_draws` for flat float32 shapes when many have alpha == 1
    (``work["one"]``): ``expm1(-log(U) / beta)`` for every entry, then ``G_a / G_b`` written
    over the others. Returns ``work["odds"]``.
    """
    n = alpha.size
    odds = work["odds"]
    for start in range(0, n, GAMMA_BLOCK):  # blocks: the bits' buffer is reused, not faulted in
        block = odds[start:start + GAMMA_BLOCK]
        np.subtract(np.float32(2.0), uniforms_float32(rng, block.size), out=block)  # (0, 1]
    np.log(odds, out=odds)
    odds /= beta
    np.negative(odds, out=odds)  # -log(U) / beta >= 0
    with np.errstate(over="ignore"):  # beta < 1: beyond 88.7 the odds are inf, Beta = 1 in float32
        np.expm1(odds, out=odds)
    rest = np.flatnonzero(np.logical_not(work["one"], out=work["one"]))
    k = rest.size
    if k:
        shape_a, shape_b = work["rest_a"][:k], work["rest_b"][:k]
        np.take(alpha, rest, out=shape_a)
        np.take(beta, rest, out=shape_b)
        ga = standard_gamma(rng, shape_a, out=work["draw_a"][:k])
        gb = standard_gamma(rng, shape_b, out=work["draw_b"][:k])
        with np.errstate(divide="ignore"):  # as in beta_odds_draws
            ga /= gb
        odds[rest] = ga
    return odds


def beta_thompson_choose(alpha: np.ndarray, beta: np.ndarray, draws: Draws,
                         scratch: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Row-wise argmax of one Beta(alpha, beta) sample per arm; shapes (R, K) -> (R,).

    The odds ``B / (1 - B)`` (:func:`beta_odds_draws`) increase with B, so their argmax is the
    argmax of the Beta samples and the division into B is saved. Ties have probability zero.
    """
    return row_argmax(beta_odds_draws(alpha, beta, draws, scratch))


def beta_learn(successes: np.ndarray, failures: np.ndarray, arms: np.ndarray,
               rewards: np.ndarray) -> None:
    """Add one reward per run to the pulled arm's counts, in place; (R, K), (R,), (R,)."""
    if successes.flags.c_contiguous and failures.flags.c_contiguous:
        idx = row_starts(*successes.shape) + arms  # one index for both scatters (hot path)
        # np.add.at on the flat view: 0.23 ms per 200,000 float32 entries against 0.38 ms for
        # ``flat[idx] += r`` (numpy 2.4), but 10 ms with values of another dtype: cast first
        r = np.asarray(rewards, dtype=successes.dtype)
        np.add.at(successes.reshape(-1), idx, r)
        np.add.at(failures.reshape(-1), idx, 1 - r)
    else:
        add_to_pulled(successes, arms, rewards)
        add_to_pulled(failures, arms, 1.0 - rewards)


def beta_probability_of_max(alpha: np.ndarray, beta: np.ndarray, n_grid: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """P(arm k's Beta sample is the largest), (R, K), with its error bound (R, K).

    Quadrature in each arm's quantile space (:func:`bandits.base.probability_of_max`); the bound
    is at most ``pi / (4 n_grid)`` per entry.
    """
    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    R, K = a.shape
    return probability_of_max(
        lambda rows, u: special.betaincinv(a[rows, :, None], b[rows, :, None], u),
        lambda rows, x, others: special.betainc(a[rows][:, others, None],
                                                b[rows][:, others, None], x[:, :, None, :]),
        R, K, n_grid,
    )


#: Smallest Beta prior parameter (``prior_alpha``, ``prior_beta``) a policy accepts. Below it
#: the Gamma draws behind a Beta sample underflow to 0 (P(Gamma(a) < tiny) ~ tiny^a: 0.47 at
#: a = 1e-3 in float64, 0.36 at a = 0.01 in float32), the samples tie at odds 0 or inf and the
#: argmax favours the first arm, so the picks disagree with the propensities: 20,000 seeded
#: picks of three arms at the same prior, against the 1/3 each the quadrature reports: 0.44 /
#: 0.32 / 0.25 at 1e-3, 0.342 / 0.336 / 0.323 at 3e-3 (float64); 0.565 / 0.256 / 0.179 at 0.01
#: and 0.343 / 0.331 / 0.326 at 0.03 (float32, a simulation's batches). From 0.1 up they agree
#: within sampling error in both (also after updates). Jeffreys' 0.5 and the uniform 1 are in.
BETA_PRIOR_MIN = MIN_GAMMA_SHAPE
#: Largest Beta prior parameter a policy accepts. In a simulation's float32 the Gamma draws
#: behind a Beta sample have a relative sd of ``a^-1/2`` on a grid of relative step 6e-8, so
#: at large parameters the picks drift from the propensities: three arms about one posterior
#: sd apart, chi-square of 20,000 seeded picks, p = 0.88 at 1e10, 0.05 at 5e10, 2e-8 at 3e11,
#: 2e-7 at 1e12 (float64 still agrees at 1e12). In float64 the propensities' quadrature
#: (``scipy.special.betaincinv``/``betainc``) goes next: error against the normal limit 7e-7 at
#: 1e12, 7e-5 at 1e14, 5e-4 at 1e15 (beyond the quadrature's own bound), NaN from 1e18; from
#: ~1e30 the float64 draws stop varying and every pick is the first arm (1e200). 1e9 keeps a
#: factor of 10 below the first drift for a simulation's counts on top of the prior.
BETA_PRIOR_MAX = 1e9


def check_beta_prior(value: Any, name: str, n_arms: int) -> np.ndarray:
    """A Beta prior parameter, one value or one per arm, in ``[BETA_PRIOR_MIN, BETA_PRIOR_MAX]``.

    The one check of every Beta-posterior policy's ``prior_alpha`` and ``prior_beta`` (see
    :data:`BETA_PRIOR_MIN` and :data:`BETA_PRIOR_MAX` for why the range).

    Parameters
    ----------
    value : float or sequence of float
        The prior parameter as given.
    name : str
        Its name, for the messages.
    n_arms : int
        Number of arms.

    Returns
    -------
    ndarray of float64, shape ``(n_arms,)``

    Raises
    ------
    TypeError, ValueError
        Not a number or a list of one per arm, or a value outside the range (the message names
        the value and the range).
    """
    return check_per_arm(value, name, n_arms, low=BETA_PRIOR_MIN, low_open=False,
                         high=BETA_PRIOR_MAX)


class _BetaPolicy(BatchedPolicy):
    """Shared parts of the Beta-posterior policies (priors per arm, posterior, propensities)."""

    reward_low = 0.0
    reward_high = 1.0
    beta_posterior = True
    per_arm_stats = ("successes", "failures")
    count_stats = ("successes", "failures")
    propensity_method = "quadrature"

    prior_alpha: float | Sequence[float]
    prior_beta: float | Sequence[float]
    propensity_grid: int

    def _check_params(self) -> None:
        check_propensity_grid(self.propensity_grid)

    def _propensity_grid(self) -> int | None:
        return int(self.propensity_grid)

    def _arm_param_names(self) -> tuple[str, ...]:
        return ("prior_alpha", "prior_beta")

    def _check_arm_params(self, values: dict[str, Any], n_arms: int) -> dict[str, np.ndarray]:
        return {name: check_beta_prior(values[name], name, n_arms)
                for name in ("prior_alpha", "prior_beta")}

    def _default_arm_params(self) -> dict[str, float]:
        # A list prior has no obvious value for a new arm: fall back to the uniform Beta(1, 1).
        def scalar(v: Any) -> float:
            return 1.0 if isinstance(v, Sequence | np.ndarray) else float(v)
        return {"prior_alpha": scalar(self.prior_alpha), "prior_beta": scalar(self.prior_beta)}

    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        return {"successes": np.zeros((n_runs, n_arms), dtype),
                "failures": np.zeros((n_runs, n_arms), dtype)}

    def posterior_batch(self, state: BatchState, *, scratch: bool = False
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Beta posterior parameters ``(alpha, beta)`` of every run and arm, each (R, K).

        With ``scratch=True`` the arrays are work buffers of ``state`` (overwritten next step).
        """
        s, f = state.stats["successes"], state.stats["failures"]
        if not scratch:
            return s + self.arm_params_["prior_alpha"], f + self.arm_params_["prior_beta"]
        buf = state.scratch
        if buf.get("alpha") is None or buf["alpha"].shape != s.shape:
            buf["alpha"], buf["beta"] = np.empty_like(s), np.empty_like(f)
        for name, stat, out in (("prior_alpha", s, buf["alpha"]), ("prior_beta", f, buf["beta"])):
            prior = self.arm_params_[name]
            # same-dtype operands (a float64 prior into float32 statistics takes a slow casting
            # loop), and a scalar when the prior is shared: adding a (K,) row broadcasts with an
            # inner loop of length K per run, several times slower for small K
            if (prior == prior[0]).all():
                np.add(stat, stat.dtype.type(prior[0]), out=out)
            else:
                np.add(stat, prior.astype(stat.dtype), out=out)
        return buf["alpha"], buf["beta"]

    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        a, b = self.posterior_batch(state, scratch=True)
        return beta_thompson_choose(a, b, draws, state.scratch)

    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.posterior_batch(state)
        return beta_probability_of_max(a, b, self.propensity_grid)

    def posterior(self) -> dict[str, dict[str, float]]:
        """Per-arm posterior of the single-run state, for display and the service's /policy.

        Returns
        -------
        dict
            ``{arm: {"alpha", "beta", "mean", "successes", "failures", "pulls"}}`` (floats;
            ``pulls`` counts observations, discounted/windowed for the non-stationary variants).
        """
        a, b = (x[0] for x in self.posterior_batch(self.state_))
        s, f = self.state_.stats["successes"][0], self.state_.stats["failures"][0]
        return {
            arm: {"alpha": float(a[k]), "beta": float(b[k]), "mean": float(a[k] / (a[k] + b[k])),
                  "successes": float(s[k]), "failures": float(f[k]), "pulls": float(s[k] + f[k])}
            for k, arm in enumerate(self.arms)
        }


class ThompsonSampling(_BetaPolicy):
    """Beta-Bernoulli Thompson Sampling for rewards in [0, 1] (clicks).

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    prior_alpha, prior_beta : float or list of float, default 1.0
        Beta prior, one value for all arms or one per arm, in ``[BETA_PRIOR_MIN,
        BETA_PRIOR_MAX]`` = ``[0.1, 1e9]`` (where the picks follow the propensities). Beta(1, 1)
        is uniform.
    batch_size : int, default 1
        Delayed updates: the posterior is refreshed every ``batch_size`` observations.
    propensity_grid : int, default 2048
        Quadrature intervals for :meth:`action_probabilities`; each propensity's error is at
        most ``pi / (4 * propensity_grid)`` (usually orders of magnitude less).
    random_state : int, SeedSequence, Generator or None
        Source of the posterior samples.

    Attributes
    ----------
    state_.stats["successes"], state_.stats["failures"] : ndarray, shape (1, K)
        Sums of ``r`` and of ``1 - r`` per arm (click and no-click counts for 0/1 rewards).
    arm_params_ : dict
        ``prior_alpha`` and ``prior_beta`` per arm, shape (K,).

    Examples
    --------
    >>> ts = ThompsonSampling(["SVD", "Sequential", "Autoencoder"], random_state=0)
    >>> arm = ts.select()
    >>> ts.update(arm, 1.0)
    >>> round(float(ts.action_probabilities().sum()), 6)
    1.0
    """

    def __init__(self, arms: Sequence[str] | int, *, prior_alpha: float | Sequence[float] = 1.0,
                 prior_beta: float | Sequence[float] = 1.0, batch_size: int = 1,
                 propensity_grid: int = 2048, random_state: RandomState = None) -> None:
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.propensity_grid = propensity_grid
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        beta_learn(stats["successes"], stats["failures"], arms, rewards)

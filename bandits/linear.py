"""Contextual policies with one ridge-regression model per arm: LinUCB and linear TS.

Per arm k: ``A_k = ridge * I + sum x x^T`` and ``b_k = sum r x`` over its observations; the
estimate is ``theta_k = A_k^{-1} b_k``. The inverse is kept directly (``A_inv``) and updated by
Sherman-Morrison, O(d^2) per observation. For a context x:

* LinUCB (Li et al. 2010, disjoint model): ``x.theta_k + alpha * sqrt(x^T A_k^{-1} x)``,
  largest index wins (ties at random); propensities exact.
* LinTS (Agrawal & Goyal 2013): ``theta ~ N(theta_k, scale^2 A_k^{-1})``. Only ``x.theta``
  matters, and it is exactly ``N(x.theta_k, scale^2 x^T A_k^{-1} x)``, so one normal draw per
  arm replaces a d-dimensional one. Propensities by quadrature
  (:func:`bandits.gaussian.normal_probability_of_max`: the tanh-sinh rule, error <= 1e-6, when
  the arms' scales at the context are within a factor of 10; else the grid, error
  <= pi / (4 * grid)).

Both are batched over runs as well as arms: statistics have shape (R, K, d, d) and (R, K, d) and
contexts (R, d). Rewards may be any real in ``[-1e15, 1e15]`` (``MAX_ABS_REWARD``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from bandits.base import (
    MAX_ABS_CONTEXT,
    SUM_ROUNDING,
    BatchedPolicy,
    BatchState,
    Draws,
    RandomState,
    argmax_random_ties,
    argmax_set_probabilities,
)
from bandits.errors import check_int, check_propensity_grid, check_real, check_stat, reward_bounds
from bandits.gaussian import normal_probability_of_max, sample_argmax


def linear_predict(A_inv: np.ndarray, b: np.ndarray, contexts: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted reward ``x.theta_k`` and ``x^T A_k^{-1} x`` for every run and arm, (R, K)."""
    # One matrix-vector product per arm gives both: A_k^{-1} is symmetric (the ridge start and
    # every Sherman-Morrison step keep it so exactly), so x.theta_k = (A_k^{-1} x).b_k. The
    # three-operand einsum and the theta product it replaces cost 4x more (d = 100, K = 5:
    # 340 against 80 us); the sums differ in order only (~1e-16). The products go through
    # matmul (BLAS) rather than einsum: 5 against 21 us for one context (d = 100, K = 5), the
    # same sums in another order (<= 1e-15 apart, tests/test_bandits_linear_predict.py).
    Ax = np.matmul(A_inv, contexts[:, None, :, None])[..., 0]
    mean = np.einsum("rki,rki->rk", Ax, b)
    var = np.einsum("rki,ri->rk", Ax, contexts)
    return mean, np.maximum(var, 0.0)


def linear_learn(A_inv: np.ndarray, b: np.ndarray, pulls: np.ndarray, arms: np.ndarray,
                 rewards: np.ndarray, contexts: np.ndarray) -> None:
    """Sherman-Morrison update of the pulled arm's model in every run, in place."""
    rows = np.arange(arms.shape[0])
    Ai = A_inv[rows, arms]
    Ax = np.einsum("rij,rj->ri", Ai, contexts)
    denom = 1.0 + np.einsum("ri,ri->r", contexts, Ax)
    A_inv[rows, arms] = Ai - Ax[:, :, None] * Ax[:, None, :] / denom[:, None, None]
    b[rows, arms] += rewards[:, None] * contexts
    pulls[rows, arms] += 1


#: Smallest ridge penalty of LinUCB and LinTS: the models start at ``A^-1 = I / ridge``, so
#: ``ridge=1e-300`` overflowed ``x^T A^-1 x`` and gave NaN propensities (found by attack). With
#: contexts bounded by :data:`bandits.base.MAX_ABS_CONTEXT` (1e50) ``d |x|^2 / ridge`` stays
#: below ``d * 1e150``.
MIN_RIDGE = 1e-50
#: Rounding a restored ``A_inv`` may show, relative to the prior's ``1 / ridge``: asymmetry
#: (the discount inverts A again) and eigenvalues just outside ``[0, 1 / ridge]``.
RESTORE_TOLERANCE = 1e-9


class _LinearPolicy(BatchedPolicy):
    contextual = True
    per_arm_stats = ("A_inv", "b", "pulls")
    count_stats = ("pulls",)

    size_params = ("n_features", "batch_size")

    n_features: int
    ridge: float

    def _check_params(self) -> None:
        check_int(self.n_features, "n_features", low=1)
        check_real(self.ridge, "ridge", low=MIN_RIDGE)

    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        d = self.n_features
        # No d x d identity first: the statistics of zero runs must allocate nothing
        # (BatchedPolicy.state_bytes sizes the state from them before it is built).
        A_inv = np.zeros((n_runs, n_arms, d, d), dtype)
        diagonal = np.arange(d)
        A_inv[..., diagonal, diagonal] = np.ones(1, dtype) / float(self.ridge)
        return {"A_inv": A_inv,
                "b": np.zeros((n_runs, n_arms, d), dtype),
                "pulls": np.zeros((n_runs, n_arms), dtype)}

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        linear_learn(stats["A_inv"], stats["b"], stats["pulls"], arms, rewards,
                     contexts)  # type: ignore[arg-type]

    def _check_stats(self, stats: dict[str, np.ndarray]) -> None:
        # b sums pulls rewards times contexts, each inside its own range; A^-1 is symmetric
        # (the ridge start and every Sherman-Morrison step keep it so). Not checked: that it
        # lies between 0 and I / ridge, as (ridge I + sum x x^T)^-1 does in exact arithmetic:
        # with features of 1e8 (accepted, inaccurate: see LinUCB) 30 updates reached an
        # eigenvalue of -0.76 (found by review), and a state the policy's own updates reach
        # must load.
        super()._check_stats(stats)
        _, top_reward = reward_bounds(self.reward_low, self.reward_high)
        bound = (stats["pulls"][:, None] * top_reward * MAX_ABS_CONTEXT
                 * (1.0 + SUM_ROUNDING))
        check_stat(stats["b"], "state['stats']['b']", stats["b"].shape, low=-bound, high=bound,
                   why=f"a sum of 'pulls' rewards within +-{top_reward:g} times features "
                       f"within +-{MAX_ABS_CONTEXT:g}")
        a_inv = stats["A_inv"]
        top = 1.0 / float(self.ridge)
        check_stat(a_inv - a_inv.transpose(0, 2, 1), "state['stats']['A_inv'] - its transpose",
                   a_inv.shape, low=-RESTORE_TOLERANCE * top, high=RESTORE_TOLERANCE * top,
                   why="A_inv is symmetric")

    def _discount_stats(self, stats: dict[str, np.ndarray], positions: np.ndarray,
                        gamma: float) -> None:
        # The statistics hold the prior: A = ridge * I + sum x x^T is kept as its inverse, so
        # the data part is shrunk on A itself (A -> ridge I + gamma (A - ridge I)), then
        # inverted again; gamma = 0 gives back exactly the prior's I / ridge.
        # An arm without evidence is at the prior already: left bit for bit as it is.
        positions = positions[(stats["pulls"][:, positions] > 0).any(axis=0)]
        d = self.n_features
        eye = np.eye(d)
        if gamma == 0.0:
            stats["A_inv"][:, positions] = eye / float(self.ridge)
        else:
            A = np.linalg.inv(stats["A_inv"][:, positions])
            shrunk = float(self.ridge) * eye + gamma * (A - float(self.ridge) * eye)
            stats["A_inv"][:, positions] = np.linalg.inv(shrunk)
        stats["b"][:, positions] *= gamma
        stats["pulls"][:, positions] *= gamma

    def coefficients(self) -> np.ndarray:
        """Ridge estimate ``theta_k`` of every arm, shape (K, d)."""
        s = self.state_.stats
        return cast(np.ndarray, np.einsum("kij,kj->ki", s["A_inv"][0], s["b"][0]))


class LinUCB(_LinearPolicy):
    """LinUCB with disjoint linear models.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    n_features : int
        Context dimension d; each arm's model holds ``d * (d + 1)`` numbers, the arms' together
        at most ``MAX_STATE_BYTES`` (2 GiB; :meth:`~bandits.base.BatchedPolicy.check_state_size`).
    alpha : float, default 1.0
        Width of the confidence bonus (>= 0).
    ridge : float, default 1.0
        Ridge penalty (>= ``MIN_RIDGE`` = 1e-50), the prior precision of every coefficient.
        Context features must lie within ``[-MAX_ABS_CONTEXT, MAX_ABS_CONTEXT]`` (1e50) and
        rewards within ``[-MAX_ABS_REWARD, MAX_ABS_REWARD]`` (1e15). That bound keeps the
        statistics finite, not accurate: ``A^-1`` is kept by Sherman-Morrison steps, whose
        error grows with ``|x|^2 / ridge``. Against exact rational arithmetic (d = 3, 30
        observations, ridge 1) ``x.theta`` and ``x^T A^-1 x`` were off by 8e-11 at features
        of 1e3, 4e-9 at 1e4, 3e-7 at 1e5, 3e-5 at 1e6, and by 50-450% from 1e8 on (features
        of 1 and 1e8 mixed gave NaN propensities in 15 of 20 seeded runs): scale features to
        about 1, as the service's are.
    batch_size : int, default 1
        Delayed updates.
    random_state : int, SeedSequence, Generator or None
        Breaks ties.
    """

    def __init__(self, arms: Sequence[str] | int, *, n_features: int, alpha: float = 1.0,
                 ridge: float = 1.0, batch_size: int = 1,
                 random_state: RandomState = None) -> None:
        self.n_features = n_features
        self.alpha = alpha
        self.ridge = ridge
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _check_params(self) -> None:
        super()._check_params()
        check_real(self.alpha, "alpha", low=0.0)

    def _scores(self, state: BatchState, contexts: np.ndarray) -> np.ndarray:
        mean, var = linear_predict(state.stats["A_inv"], state.stats["b"], contexts)
        return cast(np.ndarray, mean + float(self.alpha) * np.sqrt(var))

    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        return argmax_random_ties(self._scores(state, contexts), draws)  # type: ignore[arg-type]

    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        p = argmax_set_probabilities(self._scores(state, contexts))  # type: ignore[arg-type]
        return p, np.zeros_like(p)


class LinTS(_LinearPolicy):
    """Linear Thompson Sampling with disjoint Gaussian models.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    n_features : int
        Context dimension d; each arm's model holds ``d * (d + 1)`` numbers, the arms' together
        at most ``MAX_STATE_BYTES`` (2 GiB; :meth:`~bandits.base.BatchedPolicy.check_state_size`).
    scale : float, default 1.0
        Posterior inflation v (> 0): ``theta ~ N(theta_hat, v^2 A^{-1})``.
    ridge : float, default 1.0
        Ridge penalty (>= ``MIN_RIDGE`` = 1e-50); contexts and rewards bounded as for LinUCB.
    batch_size : int, default 1
        Delayed updates.
    propensity_grid : int, default 2048
        Quadrature intervals for :meth:`action_probabilities` (error <= pi / (4 * grid)) at a
        context where the arms' posterior scales differ by more than a factor of 10; within
        it the tanh-sinh rule (error <= 1e-6; :func:`~bandits.gaussian.normal_probability_of_max`).
    random_state : int, SeedSequence, Generator or None
        Source of the posterior samples.
    """

    propensity_method = "quadrature"

    def __init__(self, arms: Sequence[str] | int, *, n_features: int, scale: float = 1.0,
                 ridge: float = 1.0, batch_size: int = 1, propensity_grid: int = 2048,
                 random_state: RandomState = None) -> None:
        self.n_features = n_features
        self.scale = scale
        self.ridge = ridge
        self.propensity_grid = propensity_grid
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _check_params(self) -> None:
        super()._check_params()
        check_real(self.scale, "scale", low=0.0, low_open=True)
        check_propensity_grid(self.propensity_grid)

    # No _propensity_grid: a context's arms whose scales are within 10x of each other are
    # integrated on 33 to 129 tanh-sinh nodes, others (and point masses, a scale of 0) on the
    # grid, so whether the quadrature fits depends on the context: checked at each call.

    def _posterior(self, state: BatchState, contexts: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        mean, var = linear_predict(state.stats["A_inv"], state.stats["b"], contexts)
        return mean, float(self.scale) * np.sqrt(var)

    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        mean, sd = self._posterior(state, contexts)  # type: ignore[arg-type]
        normal = draws.standard_normal((self.n_arms,))
        return sample_argmax(mean + sd * normal, normal, sd)  # ties: uniform over the tied

    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        mean, sd = self._posterior(state, contexts)  # type: ignore[arg-type]
        # x.theta is exactly normal under the posterior.
        return normal_probability_of_max(mean, sd, self.propensity_grid)

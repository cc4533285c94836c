"""Index policies: UCB1 (Auer, Cesa-Bianchi & Fischer 2002) and KL-UCB (Garivier & Cappé 2011).

Both play the arm with the largest upper confidence index (ties, e.g. several arms never pulled,
broken uniformly at random), so their propensities are exact: uniform over the arms sharing the
largest index. Rewards must lie in [0, 1].

* UCB1: ``mean_k + sqrt(exploration * log(t) / n_k)`` with ``exploration = 2`` in the paper.
* KL-UCB: ``max{q in [mean_k, 1] : n_k * kl(mean_k, q) <= log(t) + c * log(log(t))}`` with the
  Bernoulli divergence ``kl``; solved by :func:`kl_ucb_upper` to a tolerance ``tol`` in q.

``t`` is the number of observations learned so far. An arm never pulled has index ``+inf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import xlogy

from bandits._means import empirical_means, init_mean_stats, mean_learn
from bandits.base import (
    BatchedPolicy,
    BatchState,
    Draws,
    RandomState,
    argmax_random_ties,
    argmax_set_probabilities,
)
from bandits.errors import check_real


def bernoulli_kl(p: np.ndarray | float, q: np.ndarray | float) -> np.ndarray:
    """KL divergence between Bernoulli(p) and Bernoulli(q), elementwise (``inf`` where q hits 0/1
    and p does not)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return xlogy(p, p) - xlogy(p, q) + xlogy(1 - p, 1 - p) - xlogy(1 - p, 1 - q)


def kl_ucb_upper(means: np.ndarray, budget: np.ndarray, *, tol: float = 1e-6,
                 max_iter: int = 100) -> np.ndarray:
    """Largest q in [p, 1] with kl(p, q) <= d, vectorised over any shape.

    Newton's method on the convex, increasing ``q -> kl(p, q) - d`` started above the root at
    the smaller of two closed-form upper bounds (Pinsker's ``p + sqrt(d / 2)`` and
    ``1 - (1 - p) exp(-(d - p log p) / (1 - p))``, which is tight near q = 1). From above Newton
    decreases monotonically to the root, so the result is never below it; iteration stops once
    every step is below ``tol`` (the remaining error is then far below ``tol``: convergence is
    quadratic).

    Parameters
    ----------
    means : ndarray
        p in [0, 1].
    budget : ndarray
        d >= 0, broadcastable to ``means``.
    tol : float, default 1e-6
        Stopping tolerance on q.
    max_iter : int, default 100
        Safety cap on the iterations.

    Returns
    -------
    ndarray
        The index q, same shape as the broadcast inputs.
    """
    p, d = np.broadcast_arrays(np.asarray(means, dtype=np.float64),
                               np.asarray(budget, dtype=np.float64))
    shape = p.shape
    p = np.clip(p.reshape(-1), 0.0, 1.0)
    d = np.maximum(d.reshape(-1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pinsker = p + np.sqrt(d / 2.0)
        near_one = 1.0 - (1.0 - p) * np.exp(-(d - xlogy(p, p)) / np.where(p < 1, 1.0 - p, 1.0))
        q = np.where(p >= 1.0, 1.0, np.clip(np.minimum(pinsker, near_one), p, 1.0))
        active = (p < 1.0) & (d > 0) & (q > p) & (q < 1.0)
        # Whole-array iterations (converged entries take ~zero steps) beat fancy indexing on the
        # small (runs, arms) arrays of a simulation step; the negative entropy is loop-invariant.
        neg_entropy = xlogy(p, p) + xlogy(1.0 - p, 1.0 - p) - d
        qa = np.where(active, q, 0.5)
        for _ in range(max_iter):
            f = neg_entropy - p * np.log(qa) - (1.0 - p) * np.log1p(-qa)
            step = f * (qa * (1.0 - qa)) / (qa - p)
            step = np.where(active & np.isfinite(step), step, 0.0)
            qa = np.maximum(qa - step, p)
            if not (np.abs(step) > tol).any():
                break
        q = np.where(active, qa, q)
    return q.reshape(shape)
    return q


def ucb1_indices(pulls: np.ndarray, reward_sum: np.ndarray, exploration: float) -> np.ndarray:
    """UCB1 index per run and arm, (R, K) from (R, K) statistics."""
    t = pulls.sum(axis=1, keepdims=True)
    means = empirical_means(pulls, reward_sum)
    with np.errstate(divide="ignore", invalid="ignore"):
        bonus = np.sqrt(exploration * np.log(np.maximum(t, 1)) / pulls)
    return np.where(pulls > 0, means + bonus, np.inf)


def kl_ucb_indices(pulls: np.ndarray, reward_sum: np.ndarray, c: float, tol: float, *,
                   only_argmax: bool = False) -> np.ndarray:
    """KL-UCB index per run and arm, (R, K) from (R, K) statistics.

    With ``only_argmax=True`` the exact index is computed only for arms that can hold the row's
    maximum: arms whose upper bound (Pinsker, ``p + sqrt(d / 2)``) is below the largest lower
    bound in the row (from ``kl <= chi^2``, the root of ``(q - p)^2 = d q (1 - q)``) get that
    upper bound instead. The row-wise argmax (and its tie set) is unchanged, which is all
    selection needs, at a fraction of the cost; the other entries are then not the indices.
    """
    t = np.maximum(pulls.sum(axis=1, keepdims=True), 1).astype(np.float64)
    log_t = np.log(t)
    explore = log_t + c * np.log(np.maximum(log_t, 1.0))
    seen = pulls > 0
    n = np.where(seen, pulls, 1)
    means = np.where(seen, reward_sum / n, 0.0)
    d = np.broadcast_to(explore / n, means.shape)
    if not only_argmax:
        return np.where(seen, kl_ucb_upper(means, d, tol=tol), np.inf)
    upper = np.minimum(means + np.sqrt(d / 2.0), 1.0)
    b = 2.0 * means + d
    lower = (b + np.sqrt(np.maximum(b * b - 4.0 * (1.0 + d) * means**2, 0.0))) / (2.0 * (1.0 + d))
    lower = np.where(seen, lower, np.inf)
    candidate = upper >= lower.max(axis=1, keepdims=True)
    out = np.where(seen, upper, np.inf)
    idx = np.flatnonzero(candidate & seen)
    out.reshape(-1)[idx] = kl_ucb_upper(means.reshape(-1)[idx], d.reshape(-1)[idx], tol=tol)
    return out


class _IndexPolicy(BatchedPolicy):
    reward_low = 0.0
    reward_high = 1.0
    per_arm_stats = ("pulls", "reward_sum")

    def _indices(self, stats: dict[str, np.ndarray], *, only_argmax: bool = False
                 ) -> np.ndarray:
        raise NotImplementedError

    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        return init_mean_stats(n_runs, n_arms, dtype)

    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        return argmax_random_ties(self._indices(state.stats, only_argmax=True), draws)

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        mean_learn(stats["pulls"], stats["reward_sum"], arms, rewards)

    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        p = argmax_set_probabilities(self._indices(state.stats))
        return p, np.zeros_like(p)

    def indices(self) -> np.ndarray:
        """Current index of every arm, shape (K,) (``inf`` for arms never pulled)."""
        return self._indices(self.state_.stats)[0]


class UCB1(_IndexPolicy):
    """UCB1 for rewards in [0, 1].

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    exploration : float, default 2.0
        The constant in ``sqrt(exploration * log(t) / n)`` (> 0); 2 is Auer et al.'s UCB1.
    batch_size : int, default 1
        Delayed updates.
    random_state : int, SeedSequence, Generator or None
        Breaks ties between equal indices.
    """

    def __init__(self, arms: Sequence[str] | int, *, exploration: float = 2.0,
                 batch_size: int = 1, random_state: RandomState = None) -> None:
        self.exploration = exploration
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _check_params(self) -> None:
        check_real(self.exploration, "exploration", low=0.0, low_open=True)

    def _indices(self, stats: dict[str, np.ndarray], *, only_argmax: bool = False
                 ) -> np.ndarray:
        return ucb1_indices(stats["pulls"], stats["reward_sum"], float(self.exploration))


class KLUCB(_IndexPolicy):
    """KL-UCB with the Bernoulli divergence, for rewards in [0, 1].

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    c : float, default 0.0
        Weight of ``log(log(t))`` in the exploration budget (Garivier & Cappé: 0 in practice,
        3 in the proof).
    tol : float, default 1e-6
        Tolerance of the numerical solution of each index (see :func:`kl_ucb_upper`).
    batch_size : int, default 1
        Delayed updates.
    random_state : int, SeedSequence, Generator or None
        Breaks ties between equal indices.
    """

    def __init__(self, arms: Sequence[str] | int, *, c: float = 0.0, tol: float = 1e-6,
                 batch_size: int = 1, random_state: RandomState = None) -> None:
        self.c = c
        self.tol = tol
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _check_params(self) -> None:
        check_real(self.c, "c", low=0.0)
        check_real(self.tol, "tol", low=0.0, high=0.1, low_open=True)

    def _indices(self, stats: dict[str, np.ndarray], *, only_argmax: bool = False
                 ) -> np.ndarray:
        return kl_ucb_indices(stats["pulls"], stats["reward_sum"], float(self.c),
                              float(self.tol), only_argmax=only_argmax)

"""Index policies: UCB1 (Auer, Cesa-Bianchi & Fischer 2002) and KL-UCB (Garivier & Cappé 2011).

Both play the arm with the largest upper confidence index (ties, e.g. several arms never pulled,
broken uniformly at random), so their propensities are exact: uniform over the arms sharing the
largest index. Rewards must lie in [0, 1].

* UCB1: ``mean_k + sqrt(exploration * log(t) / n_k)`` with ``exploration = 2`` in the paper.
* KL-UCB: ``max{q in [mean_k, 1] : n_k * kl(mean_k, q) <= log(t) + c * log(log(t))}`` with the
  Bernoulli divergence ``kl``; :func:`kl_ucb_upper` returns the smallest multiple of ``tol`` at
  or above it (verified, never below the exact index, the same value on every code path). A
  policy's state keeps a cache (its scratch buffers, never persisted) so that a step re-solves
  only the pulled arms and the few whose root crossed a grid point (warm-started Newton), with
  identical results.

``t`` is the number of observations learned so far. An arm never pulled has index ``+inf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from scipy.special import xlogy

from bandits._means import init_mean_stats, mean_learn
from bandits.base import (
    BatchedPolicy,
    BatchState,
    Draws,
    RandomState,
    argmax_random_ties,
    argmax_set_probabilities,
    row_sums,
)
from bandits.errors import check_probabilities, check_real


def bernoulli_kl(p: np.ndarray | float, q: np.ndarray | float) -> np.ndarray:
    """KL divergence between Bernoulli(p) and Bernoulli(q), elementwise (``inf`` where q hits 0/1
    and p does not).

    Raises
    ------
    TypeError
        ``p`` or ``q`` not real numbers.
    ValueError
        An entry of ``p`` or ``q`` NaN or outside ``[0, 1]``, not a Bernoulli mean (it gave
        NaN: found by attack).
    """
    p = check_probabilities(p, "p")  # a Bernoulli mean
    q = check_probabilities(q, "q")
    with np.errstate(divide="ignore", invalid="ignore"):
        return cast(np.ndarray,
                    xlogy(p, p) - xlogy(p, q) + xlogy(1 - p, 1 - p) - xlogy(1 - p, 1 - q))


def _neg_entropy(p: np.ndarray) -> np.ndarray:
    """``p log p + (1 - p) log(1 - p)``, the part of ``kl(p, q)`` that does not depend on q."""
    return cast(np.ndarray, xlogy(p, p) + xlogy(1.0 - p, 1.0 - p))


def _kl_from(p: np.ndarray, neg_entropy: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``kl(p, q)`` for q in (0, 1] given ``_neg_entropy(p)``."""
    return cast(np.ndarray, neg_entropy - p * np.log(q) - (1.0 - p) * np.log1p(-q))


def _kl_ucb_solve(p: np.ndarray, d: np.ndarray, tol: float, max_iter: int,
                  start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core of :func:`kl_ucb_upper` on flat float64 arrays (p in [0, 1], d >= 0).

    Callers hold ``np.errstate(divide="ignore", invalid="ignore", over="ignore")`` (the
    ``q = 1`` and ``p in {0, 1}`` edges).

    Returns
    -------
    index : ndarray
        The smallest multiple of ``tol`` at or above the root (capped at 1); the closed forms
        ``p`` where ``d = 0`` and 1 where ``p = 1``.
    kl_at_index : ndarray
        ``kl(p, index)`` where the index was verified on the grid, ``+inf`` where ``p = 1``
        and ``-inf`` elsewhere (see :func:`_kl_ucb_cached`).
    iterate : ndarray
        Newton's last iterate (a hair above the root): the best warm start for a later call.
    """
    # Closed-form upper bounds: Pinsker's p + sqrt(d / 2), and where that reaches 1,
    # 1 - (1 - p) exp(-(d - p log p) / (1 - p)) (tight near q = 1).
    upper = p + np.sqrt(0.5 * d)
    edge = np.flatnonzero((upper >= 1.0) | (d <= 0.0))
    if edge.size == 0:  # the usual case once every arm has a few pulls
        idx = None
        pa, ua, da = p, upper, d
    else:
        pb, db = p[edge], d[edge]
        near_one = 1.0 - (1.0 - pb) * np.exp(-(db - xlogy(pb, pb))
                                             / np.where(pb < 1, 1.0 - pb, 1.0))
        upper[edge] = np.where(db > 0, np.minimum(near_one, 1.0), pb)
        idx = np.flatnonzero((d > 0) & (upper < 1.0))  # implies p < upper < 1
        pa, ua, da = p[idx], upper[idx], d[idx]
        q = upper.copy()
        kl_q = np.where(p >= 1.0, np.inf, -np.inf)
        raw = upper.copy()
        if idx.size == 0:
            return q, kl_q, raw
    negent = _neg_entropy(pa)
    ne = negent - da
    omp = 1.0 - pa
    # kl(p, .) - d is convex and increasing on [p, 1): a Newton step from ANY point of (p, 1)
    # lands at or above the root (from below it overshoots), and from above it decreases
    # monotonically to the root. So a warm start (e.g. the last step's iterate: the root moves
    # little between steps) only needs to lie in (p, 1); capping the first step by the
    # closed-form bound keeps a far-off guess from overshooting past 1.
    if start is None:
        qa = ua
    else:
        s = start if idx is None else start[idx]
        qa = np.where((s > pa) & (s < ua), s, ua)
    for i in range(max_iter):
        step = (ne - pa * np.log(qa) - omp * np.log1p(-qa)) * (qa * (1.0 - qa)) / (qa - pa)
        qa = qa - step
        if i == 0:
            qa = np.minimum(np.maximum(qa, pa), ua)
        if not (np.abs(step) > tol).any():
            break
    # A NaN (cannot happen for q in (p, 1)) falls back to the closed-form bound.
    qa = np.fmin(np.maximum(qa, pa), ua)
    # Round up to the grid m * tol, then verify: step down while kl(p, (m - 1) tol) >= d.
    # The result, the smallest grid point whose kl reaches d, depends on (p, d) only, not on
    # the start or on how many iterations ran: equal inputs give equal indices on every path.
    m = np.ceil(qa / tol)
    below = (m - 1.0) * tol
    down = np.flatnonzero((below > pa) & (_kl_from(pa, negent, below) >= da))
    for _ in range(max_iter):
        if down.size == 0:
            break
        m[down] -= 1.0
        below[down] = (m[down] - 1.0) * tol
        down = down[(below[down] > pa[down])
                    & (_kl_from(pa[down], negent[down], below[down]) >= da[down])]
    index = np.minimum(m * tol, 1.0)
    kl_index = _kl_from(pa, negent, index)
    if idx is None:
        return index, kl_index, qa
    q[idx], kl_q[idx], raw[idx] = index, kl_index, qa
    return q, kl_q, raw


_CACHE_KEYS = ("kl_ucb_mean", "kl_ucb_budget", "kl_ucb_index", "kl_ucb_kl", "kl_ucb_iterate")


def _kl_ucb_cached(means: np.ndarray, budget: np.ndarray, tol: float,
                   cache: dict[str, Any]) -> np.ndarray:
    """:func:`kl_ucb_upper` of C-contiguous ``means`` and ``budget``, re-solving only what moved.

    The cache holds, per entry, the mean ``p`` and budget ``d`` last solved, the index ``q``,
    ``kl(p, q)`` and Newton's last iterate. The root grows with the budget, so for an entry
    whose mean is unchanged and whose budget has not decreased the root is still above the grid
    point below ``q`` (verified when ``q`` was solved), and ``q`` is still the index while
    ``d <= kl(p, q)``. In a simulation step that holds for every arm but the pulled one and the
    few whose root just crossed a grid point; those are solved warm from the cached iterates.
    The result is the same as without the cache.
    """
    size = means.size
    if cache.get("kl_ucb_index") is None or cache["kl_ucb_index"].size != size \
            or cache["kl_ucb_tol"] != tol:
        cache["kl_ucb_tol"] = np.float64(tol)
        for key in _CACHE_KEYS:
            cache[key] = np.full(size, np.inf if key == "kl_ucb_budget" else np.nan)
    mean_c, budget_c, q_c, kl_c, iter_c = (cache[k] for k in _CACHE_KEYS)
    p, d = means.reshape(-1), budget.reshape(-1)
    moved = np.flatnonzero(~((p == mean_c) & (d >= budget_c) & (d <= kl_c)))
    budget_c[...] = d
    if moved.size:
        pm = p[moved]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q_c[moved], kl_c[moved], iter_c[moved] = _kl_ucb_solve(pm, d[moved], tol, 100,
                                                                    iter_c[moved])
        mean_c[moved] = pm
    return cast(np.ndarray, q_c.reshape(means.shape))


def kl_ucb_upper(means: np.ndarray, budget: np.ndarray, *, tol: float = 1e-6,
                 max_iter: int = 100, start: np.ndarray | None = None) -> np.ndarray:
    """Largest q in [p, 1] with kl(p, q) <= d, to ``tol`` from above, vectorised over any shape.

    The result is the smallest multiple of ``tol`` at or above the root, so it is never below
    the true index and less than ``tol`` above it; that is verified by the sign of
    ``kl(p, q') - d`` at the multiple ``q'`` just below. It depends on ``(p, d)`` only (not on
    ``start``), so equal inputs give equal indices whatever path computed them.

    The root is found by Newton's method on the convex, increasing ``q -> kl(p, q) - d``,
    started at ``start`` where given and inside ``(p, 1)`` (a warm start such as the previous
    step's root: one Newton step from any such point lands above the root) and otherwise at the
    smaller of two closed-form upper bounds (Pinsker's ``p + sqrt(d / 2)`` and
    ``1 - (1 - p) exp(-(d - p log p) / (1 - p))``, which is tight near q = 1). From above Newton
    decreases monotonically to the root; each entry stops once its step is below ``tol``.

    Parameters
    ----------
    means : ndarray
        p in [0, 1].
    budget : ndarray
        d >= 0, broadcastable to ``means``.
    tol : float, default 1e-6
        Grid of the result (> 0): the index is less than ``tol`` above the root.
    max_iter : int, default 100
        Safety cap on the Newton iterations and on the verification steps.
    start : ndarray, optional
        Starting guesses, broadcastable to the inputs (unusable ones are ignored).

    Returns
    -------
    ndarray
        The index q, same shape as the broadcast inputs (``p`` where ``d = 0``, 1 where
        ``p = 1``).
    """
    p, d = np.broadcast_arrays(np.asarray(means, dtype=np.float64),
                               np.asarray(budget, dtype=np.float64))
    shape = p.shape
    p = np.clip(p.reshape(-1), 0.0, 1.0)
    d = np.maximum(d.reshape(-1), 0.0)
    s = None if start is None else np.broadcast_to(
        np.asarray(start, dtype=np.float64), shape).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _kl_ucb_solve(p, d, float(tol), max_iter, s)[0].reshape(shape)


def ucb1_indices(pulls: np.ndarray, reward_sum: np.ndarray, exploration: float) -> np.ndarray:
    """UCB1 index per run and arm, (R, K) from (R, K) statistics."""
    t = row_sums(pulls)
    n = np.maximum(pulls, 1)  # unpulled arms get inf below; no division by zero
    bonus = np.sqrt((exploration * np.log(np.maximum(t, 1)))[:, None] / n)
    return np.where(pulls > 0, reward_sum / n + bonus, np.inf)


def kl_ucb_indices(pulls: np.ndarray, reward_sum: np.ndarray, c: float, tol: float, *,
                   only_argmax: bool = False, cache: dict[str, Any] | None = None
                   ) -> np.ndarray:
    """KL-UCB index per run and arm, (R, K) from (R, K) statistics.

    With ``cache`` (a dict kept between calls, e.g. a state's scratch buffers) only the entries
    whose index may have moved are re-solved, warm (see :func:`_kl_ucb_cached`); every entry is
    the exact index and ``only_argmax`` has no effect. The values do not depend on the cache.

    Without a cache and with ``only_argmax=True`` the exact index is computed only for arms that
    can hold the row's maximum: arms whose upper bound (Pinsker, ``p + sqrt(d / 2)``) is below
    the largest lower bound in the row (from ``kl <= chi^2``, the root of
    ``(q - p)^2 = d q (1 - q)``) get that upper bound instead. The row-wise argmax (and its tie
    set) is unchanged, which is all selection needs; the other entries are then not the indices.
    """
    log_t = np.log(np.maximum(row_sums(pulls), 1.0, dtype=np.float64))[:, None]
    explore = log_t + c * np.log(np.maximum(log_t, 1.0)) if c else log_t
    seen = pulls > 0
    inv_n = 1.0 / np.maximum(pulls, 1.0, dtype=np.float64)
    means = np.minimum(reward_sum * inv_n, 1.0)  # rewards in [0, 1]; unseen arms: sums are 0
    d = explore * inv_n
    if cache is not None:
        return np.where(seen, _kl_ucb_cached(means, d, float(tol), cache), np.inf)
    if not only_argmax:
        return np.where(seen, kl_ucb_upper(means, d, tol=tol), np.inf)
    upper = np.minimum(means + np.sqrt(d / 2.0), 1.0)
    b = 2.0 * means + d
    lower = (b + np.sqrt(np.maximum(b * b - 4.0 * (1.0 + d) * means**2, 0.0))) / (2.0 * (1.0 + d))
    lower = np.where(seen, lower, np.inf)
    # the margin absorbs rounding: at p = 1 the lower bound evaluates to 1 + 1 ulp, above a
    # Pinsker bound capped at 1, which would wrongly rule out every arm whose bound reached 1
    candidate = upper >= lower.max(axis=1, keepdims=True) - 1e-9
    out = np.where(seen, upper, np.inf)
    idx = np.flatnonzero(candidate & seen)
    out.reshape(-1)[idx] = kl_ucb_upper(means.reshape(-1)[idx], d.reshape(-1)[idx], tol=tol)
    return out


class _IndexPolicy(BatchedPolicy):
    reward_low = 0.0
    reward_high = 1.0
    per_arm_stats = ("pulls", "reward_sum")
    count_stats = ("pulls",)
    sum_stats = (("reward_sum", 1),)

    def _indices(self, stats: dict[str, np.ndarray], *, only_argmax: bool = False,
                 cache: dict[str, Any] | None = None) -> np.ndarray:
        raise NotImplementedError

    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        return init_mean_stats(n_runs, n_arms, dtype)

    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        return argmax_random_ties(
            self._indices(state.stats, only_argmax=True, cache=state.scratch), draws)

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        mean_learn(stats["pulls"], stats["reward_sum"], arms, rewards)

    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        p = argmax_set_probabilities(self._indices(state.stats, cache=state.scratch))
        return p, np.zeros_like(p)

    def indices(self) -> np.ndarray:
        """Current index of every arm, shape (K,) (``inf`` for arms never pulled)."""
        return cast(np.ndarray, self._indices(self.state_.stats)[0])


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

    def _indices(self, stats: dict[str, np.ndarray], *, only_argmax: bool = False,
                 cache: dict[str, Any] | None = None) -> np.ndarray:
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
        Resolution of each index: the smallest multiple of ``tol`` at or above the exact index
        (see :func:`kl_ucb_upper`).
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

    def _indices(self, stats: dict[str, np.ndarray], *, only_argmax: bool = False,
                 cache: dict[str, Any] | None = None) -> np.ndarray:
        return kl_ucb_indices(stats["pulls"], stats["reward_sum"], float(self.c),
                              float(self.tol), only_argmax=only_argmax, cache=cache)

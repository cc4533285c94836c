"""Epsilon-greedy, fixed or decaying (Sutton & Barto; the decaying schedule of Auer et al. 2002).

With probability ``epsilon_t`` the policy plays an arm uniformly at random, otherwise the arm with
the best mean reward so far (arms never pulled first; ties uniformly at random). Propensities are
exact: ``epsilon_t / K + (1 - epsilon_t) / |best|`` for the best arms, ``epsilon_t / K`` for the
others.

``epsilon_t = epsilon`` when ``decay`` is None, otherwise ``min(epsilon, decay / t)`` where ``t``
is the number of observations learned plus one. Auer et al.'s epsilon_n-greedy is
``epsilon=1, decay=c * K / d**2`` (d a lower bound on the gap to the best arm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from bandits._means import empirical_means, init_mean_stats, mean_learn
from bandits.base import (
    BatchedPolicy,
    BatchState,
    Draws,
    RandomState,
    argmax_random_ties,
    argmax_set_probabilities,
    row_sums,
)
from bandits.errors import check_real


def epsilon_schedule(pulls: np.ndarray, epsilon: float, decay: float | None) -> np.ndarray:
    """Exploration probability of every run, shape (R, 1), from the pull counts (R, K)."""
    if decay is None:
        return np.full((pulls.shape[0], 1), epsilon)
    t = row_sums(pulls)[:, None] + 1.0
    return np.minimum(epsilon, decay / t)


def epsilon_greedy_choose(pulls: np.ndarray, reward_sum: np.ndarray, epsilon: float,
                          decay: float | None, draws: Draws) -> np.ndarray:
    """One arm per run, (R,). Draws (R,) uniforms, (R,) integers and (R, K) tie-breakers."""
    eps = epsilon_schedule(pulls, epsilon, decay)[:, 0]
    explore = draws.random() < eps
    random_arm = draws.integers(pulls.shape[1])
    greedy = argmax_random_ties(empirical_means(pulls, reward_sum), draws)
    return np.where(explore, random_arm, greedy)


def epsilon_greedy_probabilities(pulls: np.ndarray, reward_sum: np.ndarray, epsilon: float,
                                 decay: float | None) -> np.ndarray:
    """Exact propensities (R, K) of :func:`epsilon_greedy_choose`."""
    eps = epsilon_schedule(pulls, epsilon, decay)
    greedy = argmax_set_probabilities(empirical_means(pulls, reward_sum))
    return cast(np.ndarray, eps / pulls.shape[1] + (1.0 - eps) * greedy)


class EpsilonGreedy(BatchedPolicy):
    """Epsilon-greedy on empirical mean rewards (any reward in ``[-1e15, 1e15]``).

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    epsilon : float, default 0.1
        Exploration probability in [0, 1] (the cap of the decaying schedule).
    decay : float or None, default None
        If given (> 0), ``epsilon_t = min(epsilon, decay / t)``.
    batch_size : int, default 1
        Delayed updates.
    random_state : int, SeedSequence, Generator or None
        Source of exploration and tie-breaking draws.
    """

    per_arm_stats = ("pulls", "reward_sum")
    count_stats = ("pulls",)
    sum_stats = (("reward_sum", 1),)

    def __init__(self, arms: Sequence[str] | int, *, epsilon: float = 0.1,
                 decay: float | None = None, batch_size: int = 1,
                 random_state: RandomState = None) -> None:
        self.epsilon = epsilon
        self.decay = decay
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _check_params(self) -> None:
        check_real(self.epsilon, "epsilon", low=0.0, high=1.0)
        if self.decay is not None:
            check_real(self.decay, "decay", low=0.0, low_open=True)

    def _decay(self) -> float | None:
        return None if self.decay is None else float(self.decay)

    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        return init_mean_stats(n_runs, n_arms, dtype)

    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        s = state.stats
        return epsilon_greedy_choose(s["pulls"], s["reward_sum"], float(self.epsilon),
                                     self._decay(), draws)

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        mean_learn(stats["pulls"], stats["reward_sum"], arms, rewards)

    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        s = state.stats
        p = epsilon_greedy_probabilities(s["pulls"], s["reward_sum"], float(self.epsilon),
                                         self._decay())
        return p, np.zeros_like(p)

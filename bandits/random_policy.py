"""The uniformly random policy: the baseline every learner must beat, and a logging policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bandits._means import init_mean_stats, mean_learn
from bandits.base import BatchedPolicy, BatchState, Draws, RandomState


class RandomPolicy(BatchedPolicy):
    """Plays every arm with probability 1 / K; keeps pull counts and reward sums for reporting.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    batch_size : int, default 1
        Delayed updates (only the reported statistics are delayed).
    random_state : int, SeedSequence, Generator or None
        Source of the draws.
    """

    per_arm_stats = ("pulls", "reward_sum")
    count_stats = ("pulls",)
    sum_stats = (("reward_sum", 1),)

    def __init__(self, arms: Sequence[str] | int, *, batch_size: int = 1,
                 random_state: RandomState = None) -> None:
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        return init_mean_stats(n_runs, n_arms, dtype)

    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        return draws.integers(self.n_arms)

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        mean_learn(stats["pulls"], stats["reward_sum"], arms, rewards)

    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        p = np.full((state.n_runs, self.n_arms), 1.0 / self.n_arms)
        return p, np.zeros_like(p)

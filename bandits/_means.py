"""Running means per arm, shared by the frequentist policies (UCB1, KL-UCB, epsilon-greedy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bandits.base import add_to_pulled, row_starts


def init_mean_stats(n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
    """``pulls`` and ``reward_sum`` per run and arm, zeros of shape (R, K)."""
    return {"pulls": np.zeros((n_runs, n_arms), dtype),
            "reward_sum": np.zeros((n_runs, n_arms), dtype)}


def mean_learn(pulls: np.ndarray, reward_sum: np.ndarray, arms: np.ndarray,
               rewards: np.ndarray) -> None:
    """Count one pull and add its reward for each run, in place; (R, K), (R,), (R,)."""
    if pulls.flags.c_contiguous and reward_sum.flags.c_contiguous:
        idx = row_starts(*pulls.shape) + arms  # one index for both scatters (hot path)
        pulls.reshape(-1)[idx] += 1.0
        reward_sum.reshape(-1)[idx] += rewards
    else:
        add_to_pulled(pulls, arms, 1.0)
        add_to_pulled(reward_sum, arms, rewards)


def empirical_means(pulls: np.ndarray, reward_sum: np.ndarray) -> np.ndarray:
    """Mean reward per arm, (R, K); ``+inf`` for arms never pulled so they are tried first."""
    return np.where(pulls > 0, reward_sum / np.maximum(pulls, 1), np.inf)

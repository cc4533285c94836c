"""Thompson Sampling for click rates that drift: discounted and sliding-window variants.

* :class:`DiscountedThompsonSampling` (Raj & Kalyani 2017): before each observation every arm's
  success and failure counts are multiplied by ``discount`` (gamma), so an observation ``n`` steps
  old weighs ``gamma**n``; the effective memory is about ``1 / (1 - gamma)`` observations.
* :class:`SlidingWindowThompsonSampling`: the counts are those of the last ``window``
  observations (all arms together), kept in a ring buffer.

Both keep the Beta posterior Beta(prior_alpha + successes, prior_beta + failures) and share
sampling, propensities and persistence with :class:`bandits.ThompsonSampling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bandits.base import RandomState
from bandits.errors import check_int, check_real, check_rewards, check_stat
from bandits.thompson import _BetaPolicy, beta_learn


def discounted_beta_learn(successes: np.ndarray, failures: np.ndarray, arms: np.ndarray,
                          rewards: np.ndarray, discount: float) -> None:
    """Decay every count by ``discount``, then add the observation; in place, (R, K)."""
    successes *= discount
    failures *= discount
    beta_learn(successes, failures, arms, rewards)


def window_beta_learn(stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray
                      ) -> None:
    """Evict the observation leaving the window, add the new one; in place.

    ``stats`` holds ``successes``/``failures`` (R, K), ``window_arms`` (R, W) (-1 = empty),
    ``window_rewards`` (R, W) and ``window_position`` (R,).
    """
    s, f = stats["successes"], stats["failures"]
    rows = np.arange(s.shape[0])
    pos = stats["window_position"]
    old_arm = stats["window_arms"][rows, pos]
    old_r = stats["window_rewards"][rows, pos]
    full = old_arm >= 0
    if full.any():
        r_rows, r_arms = rows[full], old_arm[full]
        # clip: fractional rewards can leave -1e-17 after subtraction
        s[r_rows, r_arms] = np.maximum(s[r_rows, r_arms] - old_r[full], 0.0)
        f[r_rows, r_arms] = np.maximum(f[r_rows, r_arms] - (1.0 - old_r[full]), 0.0)
    stats["window_arms"][rows, pos] = arms
    stats["window_rewards"][rows, pos] = rewards
    beta_learn(s, f, arms, rewards)
    stats["window_position"] = (pos + 1) % stats["window_arms"].shape[1]


class DiscountedThompsonSampling(_BetaPolicy):
    """Discounted Beta-Bernoulli Thompson Sampling for non-stationary click rates.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    discount : float, default 0.99
        Per-observation decay gamma in (0, 1]; 1 is plain Thompson Sampling.
    prior_alpha, prior_beta : float or list of float, default 1.0
        Beta prior in ``[0.1, 1e9]`` (as :class:`~bandits.ThompsonSampling`), scalar or per
        arm; the counts decay towards it.
    batch_size : int, default 1
        Delayed updates (the decay is applied per observation when the buffer is refreshed).
    propensity_grid : int, default 2048
        Quadrature intervals for :meth:`action_probabilities` (error <= pi / (4 * grid)).
    random_state : int, SeedSequence, Generator or None
        Source of the posterior samples.
    """

    def __init__(self, arms: Sequence[str] | int, *, discount: float = 0.99,
                 prior_alpha: float | Sequence[float] = 1.0,
                 prior_beta: float | Sequence[float] = 1.0, batch_size: int = 1,
                 propensity_grid: int = 2048, random_state: RandomState = None) -> None:
        self.discount = discount
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.propensity_grid = propensity_grid
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _check_params(self) -> None:
        super()._check_params()
        check_real(self.discount, "discount", low=0.0, high=1.0, low_open=True)

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        discounted_beta_learn(stats["successes"], stats["failures"], arms, rewards,
                              float(self.discount))


class SlidingWindowThompsonSampling(_BetaPolicy):
    """Beta-Bernoulli Thompson Sampling on the last ``window`` observations only.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    window : int, default 1000
        Number of most recent observations (over all arms) the posterior is built from; its
        ring buffer takes 16 bytes a slot, at most ``MAX_STATE_BYTES`` (2 GiB) in all
        (:meth:`~bandits.base.BatchedPolicy.check_state_size`).
    prior_alpha, prior_beta : float or list of float, default 1.0
        Beta prior in ``[0.1, 1e9]`` (as :class:`~bandits.ThompsonSampling`), scalar or per
        arm.
    batch_size : int, default 1
        Delayed updates.
    propensity_grid : int, default 2048
        Quadrature intervals for :meth:`action_probabilities` (error <= pi / (4 * grid)).
    random_state : int, SeedSequence, Generator or None
        Source of the posterior samples.

    Attributes
    ----------
    state_.stats["window_arms"], ["window_rewards"] : ndarray, shape (1, window)
        The ring buffer (arm -1 marks an empty slot); ``window_position`` is the next slot.
    """

    size_params = ("window", "batch_size")

    def __init__(self, arms: Sequence[str] | int, *, window: int = 1000,
                 prior_alpha: float | Sequence[float] = 1.0,
                 prior_beta: float | Sequence[float] = 1.0, batch_size: int = 1,
                 propensity_grid: int = 2048, random_state: RandomState = None) -> None:
        self.window = window
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.propensity_grid = propensity_grid
        super().__init__(arms, batch_size=batch_size, random_state=random_state)

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self.window, "window", low=1)

    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        stats = super()._init_stats(n_runs, n_arms, dtype)
        stats["window_arms"] = np.full((n_runs, self.window), -1, dtype=np.int64)
        stats["window_rewards"] = np.zeros((n_runs, self.window), dtype=np.float64)
        stats["window_position"] = np.zeros(n_runs, dtype=np.int64)
        return stats

    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        window_beta_learn(stats, arms, rewards)

    def _check_stats(self, stats: dict[str, np.ndarray]) -> None:
        super()._check_stats(stats)
        check_stat(stats["window_arms"], "state['stats']['window_arms']",
                   stats["window_arms"].shape, low=-1, high=self.n_arms - 1,
                   why="arm positions, -1 for an empty slot")
        check_rewards(stats["window_rewards"], "state['stats']['window_rewards']",
                      self.reward_low, self.reward_high)
        check_stat(stats["window_position"], "state['stats']['window_position']", (),
                   low=0, high=self.window - 1, why="a slot of the window")

    @classmethod
    def check_discount(cls, gamma: float) -> None:
        """Only 0 or 1: see below."""
        # A window evicts each observation whole when it leaves: a shrunk count would go
        # negative then (clipped, so wrong), hence only forget all (0) or nothing (1).
        if gamma not in (0.0, 1.0):
            raise ValueError(f"gamma={gamma!r}: a sliding window keeps whole observations; "
                             "allowed: 0 (forget the arms' window entries) or 1")

    def _discount_stats(self, stats: dict[str, np.ndarray], positions: np.ndarray,
                        gamma: float) -> None:
        stats["successes"][:, positions] = 0.0
        stats["failures"][:, positions] = 0.0
        # Their slots stay in the ring, emptied, so their eviction later subtracts nothing.
        gone = np.isin(stats["window_arms"], positions)
        stats["window_arms"][gone] = -1
        stats["window_rewards"][gone] = 0.0

    def _on_remove_arm(self, stats: dict[str, np.ndarray], position: int) -> None:
        w = stats["window_arms"]
        stats["window_arms"] = np.where(w == position, -1, np.where(w > position, w - 1, w))

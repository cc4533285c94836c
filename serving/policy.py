"""The bandit policy as the service uses it: built from the store's counts, never stored itself.

The store holds the posterior counts (``arm_state``); a :class:`PolicyModel` turns them into a
:class:`bandits.thompson.ThompsonSampling` through its public ``state_dict``/``from_state_dict``
contract and precomputes the selection probabilities. Arms are drawn from those probabilities
with the service's generator, which is Thompson Sampling's own choice distribution (probability
matching) with the advantage that the propensity logged is exactly the probability used.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from scipy import stats

from bandits.thompson import ThompsonSampling
from serving.store.repository import ArmCounts


@dataclass(frozen=True)
class PolicySnapshot:
    """An immutable view of the policy at one set of counts.

    Attributes
    ----------
    version : int
        Policy version (incremented by every retrain).
    counts : dict of str to ArmCounts
    pmf : ndarray of float64, shape ``(n_arms,)``
        Selection probability of every arm (sums to one).
    cdf : ndarray of float64, shape ``(n_arms,)``
        ``cumsum(pmf)`` with the last entry forced to 1, for sampling.
    policy : ThompsonSampling
        The policy these numbers came from (read-only once built).
    """

    version: int
    counts: dict[str, ArmCounts]
    pmf: np.ndarray
    cdf: np.ndarray
    policy: ThompsonSampling
    pmf_by_arm: dict[str, float] = dataclasses.field(default_factory=dict)
    #: ``pmf_by_arm`` as JSON, serialised once for every decision logged under this snapshot.
    pmf_json: str = "{}"


class PolicyModel:
    """Build Thompson Sampling policies over ``arms`` from stored counts.

    Parameters
    ----------
    arms : list of str
        Arm names in policy order.
    prior_alpha, prior_beta : float
        Beta prior of every arm.
    propensity_grid : int, default 2048
        Quadrature intervals of the selection probabilities (error <= 1 / (2 grid)).
    """

    name = "thompson"

    def __init__(self, arms: Sequence[str], *, prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 propensity_grid: int = 2048) -> None:
        self.arms = list(arms)
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.propensity_grid = propensity_grid

    def fresh(self) -> ThompsonSampling:
        """A policy at the prior."""
        return ThompsonSampling(self.arms, prior_alpha=self.prior_alpha,
                                prior_beta=self.prior_beta,
                                propensity_grid=self.propensity_grid, random_state=0)

    def build(self, counts: Mapping[str, ArmCounts]) -> ThompsonSampling:
        """The policy whose learned statistics are ``counts`` (absent arms at the prior)."""
        state = self.fresh().state_dict()
        zero = ArmCounts()
        state["stats"] = {
            "successes": [float(counts.get(a, zero).successes) for a in self.arms],
            "failures": [float(counts.get(a, zero).failures) for a in self.arms],
        }
        return cast(ThompsonSampling, ThompsonSampling.from_state_dict(state, random_state=0))

    def snapshot(self, counts: Mapping[str, ArmCounts], version: int) -> PolicySnapshot:
        policy = self.build(counts)
        pmf = np.asarray(policy.action_probabilities(), dtype=np.float64)
        pmf = np.clip(pmf, 0.0, None)
        pmf /= pmf.sum()
        cdf = np.cumsum(pmf)
        cdf[-1] = 1.0
        by_arm = dict(zip(self.arms, pmf.tolist(), strict=True))
        return PolicySnapshot(version, dict(counts), pmf, cdf, policy, by_arm,
                              json.dumps(by_arm))

    def replay(self, observations: Iterable[tuple[float, str, float]]) -> ThompsonSampling:
        """A fresh policy fed every ``(time, arm, reward)`` through ``update``, in order.

        Observations of arms the policy does not have (removed from the settings) are skipped.
        """
        policy = self.fresh()
        known = set(self.arms)
        for _, arm, reward in observations:
            if arm in known:
                policy.update(arm, reward)
        return policy

    def describe(self, snapshot: PolicySnapshot, reward_window_s: float) -> dict[str, Any]:
        """What ``GET /policy`` answers: posterior, counts, selection probability per arm."""
        posterior = snapshot.policy.posterior()
        rows = []
        for k, arm in enumerate(self.arms):
            post = posterior[arm]
            count = snapshot.counts.get(arm, ArmCounts())
            n = count.successes + count.failures
            low, high = stats.beta.ppf([0.025, 0.975], post["alpha"], post["beta"])
            rows.append({
                "arm": arm, "alpha": post["alpha"], "beta": post["beta"], "pulls": count.pulls,
                "successes": count.successes, "failures": count.failures,
                "mean_reward": count.successes / n if n else None,
                "posterior_mean": post["mean"], "credible_interval": (float(low), float(high)),
                "selection_probability": float(snapshot.pmf[k]),
            })
        return {"policy": self.name, "policy_version": snapshot.version,
                "reward_window_s": reward_window_s, "arms": rows}

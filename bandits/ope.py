"""Off-policy evaluation on plain arrays: what would a target policy have earned on logged data?

Logged data from a logging policy pi_0 (the service's decision log): for each of n decisions
the chosen arm ``actions[i]``, its observed ``rewards[i]`` and the logged propensity
``logging_propensities[i] = pi_0(actions[i] | x_i)``. The target policy pi_e is given by its
propensities for every arm at every logged decision, ``target_probabilities`` of shape (n, K)
(e.g. ``policy.action_probabilities(x_i)`` stacked). Importance weights are
``w_i = pi_e(actions[i] | x_i) / pi_0(actions[i] | x_i)``.

* IPS (Horvitz-Thompson): ``mean(w * r)``; unbiased when pi_0 > 0 wherever pi_e > 0.
* Self-normalised IPS: ``sum(w * r) / sum(w)``; slightly biased, far lower variance.
* Doubly robust (Dudik et al. 2011): ``mean(sum_a pi_e(a|x) q(x, a) + w (r - q(x, a_i)))``
  with a reward model ``q`` given as an (n, K) array; unbiased if either the propensities or
  the model are right.
* Effective sample size ``(sum w)^2 / sum w^2`` (Kish): how many on-policy samples the weighted
  estimate is worth.
* Percentile bootstrap confidence intervals (resampling decisions), seeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from bandits.base import RandomState, make_generator
from bandits.errors import check_int, check_real

Estimator = Literal["ips", "snips", "dr"]


@dataclass(frozen=True)
class OPEEstimate:
    """One off-policy estimate.

    Attributes
    ----------
    estimator : str
        "ips", "snips" or "dr".
    value : float
        Estimated mean reward per decision of the target policy.
    ci_low, ci_high : float
        Percentile bootstrap interval at ``confidence``.
    confidence : float
        E.g. 0.95.
    effective_sample_size : float
        Kish's ESS of the importance weights.
    n : int
        Number of logged decisions.
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    effective_sample_size: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def _check(rewards: Any, actions: Any, logging_propensities: Any, target_probabilities: Any,
           reward_model: Any = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    r = np.asarray(rewards, dtype=np.float64)
    a = np.asarray(actions)
    p0 = np.asarray(logging_propensities, dtype=np.float64)
    pe = np.asarray(target_probabilities, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"rewards must be a non-empty 1-d array, got shape {r.shape}")
    n = r.size
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"actions must be an int array of shape ({n},), got {a.dtype} {a.shape}")
    if p0.shape != (n,):
        raise ValueError(f"logging_propensities has shape {p0.shape}; expected ({n},)")
    if pe.ndim != 2 or pe.shape[0] != n:
        raise ValueError(f"target_probabilities has shape {pe.shape}; expected ({n}, n_arms)")
    K = pe.shape[1]
    if not np.isfinite(r).all():
        raise ValueError("rewards contains NaN or infinite values")
    if a.min() < 0 or a.max() >= K:
        raise ValueError(f"actions must lie in 0..{K - 1} (the columns of target_probabilities)")
    if not (np.isfinite(p0).all() and (p0 > 0).all() and (p0 <= 1).all()):
        bad = p0[~(np.isfinite(p0) & (p0 > 0) & (p0 <= 1))][0]
        raise ValueError(f"logging_propensities contains {bad!r}; each must lie in (0, 1]")
    if not (np.isfinite(pe).all() and (pe >= 0).all()) or not np.allclose(pe.sum(axis=1), 1.0,
                                                                          atol=1e-6):
        raise ValueError("target_probabilities rows must be non-negative and sum to one")
    q = None
    if reward_model is not None:
        q = np.asarray(reward_model, dtype=np.float64)
        if q.shape != pe.shape:
            raise ValueError(f"reward_model has shape {q.shape}; expected {pe.shape}")
        if not np.isfinite(q).all():
            raise ValueError("reward_model contains NaN or infinite values")
    return r, a, p0, pe, q


def importance_weights(actions: Any, logging_propensities: Any, target_probabilities: Any
                       ) -> np.ndarray:
    """``pi_e(a_i | x_i) / pi_0(a_i | x_i)``, shape (n,)."""
    a = np.asarray(actions)
    pe = np.asarray(target_probabilities, dtype=np.float64)
    return pe[np.arange(a.size), a] / np.asarray(logging_propensities, dtype=np.float64)


def effective_sample_size(weights: Any) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (0 if all weights are 0)."""
    w = np.asarray(weights, dtype=np.float64)
    ss = float((w * w).sum())
    return float(w.sum() ** 2 / ss) if ss > 0 else 0.0


def _values(estimator: str, w: np.ndarray, r: np.ndarray, direct: np.ndarray | None,
            q_logged: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """Estimates for each row of resampling indices ``idx`` (B, n) (vectorised bootstrap)."""
    wi, ri = w[idx], r[idx]
    if estimator == "ips":
        return (wi * ri).mean(axis=-1)
    if estimator == "snips":
        den = wi.sum(axis=-1)
        return np.divide((wi * ri).sum(axis=-1), den, out=np.zeros_like(den), where=den > 0)
    if estimator == "dr":
        return (direct[idx] + wi * (ri - q_logged[idx])).mean(axis=-1)  # type: ignore[index]
    raise ValueError(f"estimator={estimator!r}; allowed: 'ips', 'snips', 'dr'")


def estimate(estimator: Estimator, rewards: Any, actions: Any, logging_propensities: Any,
             target_probabilities: Any, reward_model: Any = None, *, n_bootstrap: int = 1000,
             confidence: float = 0.95, random_state: RandomState = None) -> OPEEstimate:
    """Off-policy estimate of the target policy's mean reward, with a bootstrap interval.

    Parameters
    ----------
    estimator : {"ips", "snips", "dr"}
    rewards : array of float, shape (n,)
    actions : array of int, shape (n,)
        Logged arm positions (columns of ``target_probabilities``).
    logging_propensities : array of float, shape (n,)
        Propensity of the logged arm under the logging policy, in (0, 1].
    target_probabilities : array of float, shape (n, K)
        Target policy's propensities at each logged decision; rows sum to one.
    reward_model : array of float, shape (n, K), optional
        Predicted reward of every arm at each decision; required for "dr".
    n_bootstrap : int, default 1000
        Bootstrap resamples (0 skips the interval: ``ci_low = ci_high = value``).
    confidence : float, default 0.95
        Coverage of the percentile interval.
    random_state : int, SeedSequence, Generator or None
        Seeds the bootstrap.

    Raises
    ------
    ValueError
        Shapes disagree, propensities outside (0, 1], rows not summing to one, NaN, unknown
        estimator, "dr" without a reward model.
    """
    if estimator not in ("ips", "snips", "dr"):
        raise ValueError(f"estimator={estimator!r}; allowed: 'ips', 'snips', 'dr'")
    if estimator == "dr" and reward_model is None:
        raise ValueError("estimator='dr' needs reward_model, an (n, K) array of predictions")
    check_int(n_bootstrap, "n_bootstrap", low=0)
    check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    r, a, p0, pe, q = _check(rewards, actions, logging_propensities, target_probabilities,
                             reward_model)
    n = r.size
    w = importance_weights(a, p0, pe)
    direct = q_logged = None
    if estimator == "dr":
        direct = (pe * q).sum(axis=1)  # type: ignore[operator]
        q_logged = q[np.arange(n), a]  # type: ignore[index]
    value = float(_values(estimator, w, r, direct, q_logged, np.arange(n)[None, :])[0])
    lo = hi = value
    if n_bootstrap:
        rng = make_generator(random_state)
        boots = np.concatenate([
            _values(estimator, w, r, direct, q_logged,
                    rng.integers(n, size=(min(200, n_bootstrap - b), n)))
            for b in range(0, n_bootstrap, 200)  # chunks bound the (B, n) index memory
        ])
        lo, hi = (float(x) for x in np.quantile(boots, [(1 - confidence) / 2,
                                                        (1 + confidence) / 2]))
    return OPEEstimate(estimator, value, lo, hi, float(confidence), effective_sample_size(w), n)


def evaluate(rewards: Any, actions: Any, logging_propensities: Any, target_probabilities: Any,
             reward_model: Any = None, *, n_bootstrap: int = 1000, confidence: float = 0.95,
             random_state: RandomState = None) -> dict[str, OPEEstimate]:
    """IPS, SNIPS and (with a reward model) DR estimates with the same bootstrap seed."""
    names: list[Estimator] = ["ips", "snips"] + (["dr"] if reward_model is not None else [])
    seed = make_generator(random_state).integers(2**63)
    return {name: estimate(name, rewards, actions, logging_propensities, target_probabilities,
                           reward_model, n_bootstrap=n_bootstrap, confidence=confidence,
                           random_state=int(seed)) for name in names}

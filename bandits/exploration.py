"""Exploration floor: every arm keeps a propensity of at least ``floor`` (issue 15).

Off-policy evaluation (:mod:`bandits.ope`) divides by the logging propensity of the arm played,
so an arm the live policy has stopped playing (propensity 0, or 1e-9 under a confident Thompson
sampler) cannot be evaluated afterwards. The floor mixes the policy with the uniform choice::

    q_k = K * floor * (1 / K) + (1 - K * floor) * p_k = floor + (1 - K * floor) * p_k

where ``p`` is the policy's own distribution over its ``K`` arms; ``q_k >= floor`` and ``q`` sums
to one for ``0 <= floor <= 1 / K`` (``floor = 1 / K`` is the uniform policy).

**The construction** (one for every policy, so no policy needs its probabilities computed to be
sampled): with probability ``K * floor`` play an arm drawn uniformly, otherwise the arm the policy
itself selects. The arm played then has law ``q`` exactly, whether the policy's ``p`` is exact
(epsilon-greedy, UCB, random) or only known by numerical quadrature (the Thompson samplers, whose
``select`` samples a posterior draw and never computes ``p``). The logged propensity is
``floor + (1 - K * floor) * p_k`` with ``p`` from ``action_probabilities`` (the quadrature's
guaranteed error bound, scaled by ``1 - K * floor``, is returned beside it).

Single run: :class:`ExplorationFloor` wraps a policy (``choose`` -> :class:`FlooredChoice`);
batched: :func:`floored_select_batch` on a policy's :class:`~bandits.base.BatchState`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import numpy as np

from bandits.base import BatchedPolicy, BatchState, FixedOnceBuilt, RandomState, make_generator
from bandits.errors import check_probabilities, check_real

__all__ = [
    "ExplorationFloor",
    "FlooredChoice",
    "check_floor",
    "floor_probabilities",
    "floored_select_batch",
]


def check_floor(floor: Any, n_arms: int) -> float:
    """``floor`` as a float within ``[0, 1 / n_arms]``.

    Parameters
    ----------
    floor : float
        Minimum propensity of every arm.
    n_arms : int
        Number of arms ``K`` (>= 1).

    Raises
    ------
    TypeError
        ``floor`` is not a real number.
    ValueError
        NaN, infinite or outside ``[0, 1 / n_arms]`` (the message shows the value and the range).
    """
    return check_real(floor, "floor", low=0.0, high=1.0 / n_arms)


def floor_probabilities(probabilities: np.ndarray, floor: float) -> np.ndarray:
    """The floored distribution ``floor + (1 - K * floor) * p``, same shape as ``p``.

    Parameters
    ----------
    probabilities : ndarray of float, shape (..., K)
        The policy's propensities, rows summing to one.
    floor : float
        Within ``[0, 1 / K]``.

    Returns
    -------
    ndarray of float64, shape (..., K)
        Every entry at least ``floor``; rows still sum to one.

    Raises
    ------
    TypeError, ValueError
        ``floor`` outside ``[0, 1 / K]`` (see :func:`check_floor`); ``probabilities`` not
        real numbers, or NaN or outside ``[0, 1]`` (a NaN came out as NaN beside floored
        entries, a negative one as a valid-looking distribution: found by attack).
    """
    # (A quadrature's rounding may leave an entry a few ulps outside: taken as it is.)
    p = check_probabilities(probabilities, "probabilities", slack=1e-9)
    if p.ndim == 0 or p.shape[-1] == 0:  # (a ZeroDivisionError before: attack)
        raise ValueError(f"probabilities has shape {p.shape}; expected (..., K) with K >= 1")
    sums = p.sum(axis=-1)
    if not (np.abs(sums - 1.0) <= 1e-6).all():  # [0.9, 0.9] gave [0.86, 0.86]
        raise ValueError(f"probabilities' rows must sum to one, got a row summing to "
                         f"{float(sums[np.abs(sums - 1.0) > 1e-6].flat[0])!r}")
    k = p.shape[-1]
    f = check_floor(floor, k)
    return cast(np.ndarray, f + (1.0 - k * f) * p)


def floored_select_batch(policy: BatchedPolicy, state: BatchState, rng: np.random.Generator,
                         floor: float, contexts: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """One floored choice per run and the propensity it was made with (see the module docstring).

    Parameters
    ----------
    policy : BatchedPolicy
        Any policy of this package.
    state : BatchState
        Its state of ``R`` runs (not changed).
    rng : numpy.random.Generator
        Source of the exploration coin and the uniform arm; the policy's own choice draws from
        it too.
    floor : float
        Within ``[0, 1 / K]``.
    contexts : array of shape (R, d), optional
        Required by contextual policies.

    Returns
    -------
    arms : ndarray of int64, shape (R,)
        Arm positions played.
    propensities : ndarray of float64, shape (R,)
        ``floor + (1 - K * floor) * p[arm]``, at least ``floor``.

    Raises
    ------
    TypeError, ValueError
        ``floor`` outside ``[0, 1 / K]``; malformed contexts (as the policy raises them).
    """
    arms, q, _ = _floored(policy, state, rng, floor, contexts)
    return arms, q[np.arange(state.n_runs), arms]


def _floored(policy: BatchedPolicy, state: BatchState, rng: np.random.Generator, floor: float,
             contexts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The construction of the module docstring for ``R`` runs: arms ``(R,)``, the floored
    distributions ``(R, K)`` and the bound on their numerical error ``(R, K)``.
    """
    k = policy.n_arms
    f = check_floor(floor, k)
    R = state.n_runs
    # The propensities first: computing them draws nothing, and the policy's choice below does
    # not change its statistics, so both describe the same state.
    p, err = policy.probabilities_batch(state, contexts, return_error=True)
    explore = rng.random(R) < k * f
    uniform = rng.integers(k, size=R)
    own = policy.select_batch(state, rng, contexts)
    arms = np.where(explore, uniform, own).astype(np.int64)
    return arms, floor_probabilities(p, f), (1.0 - k * f) * err


class FlooredChoice(NamedTuple):
    """One decision under an exploration floor.

    Attributes
    ----------
    arm : int
        Position of the arm played.
    propensity : float
        Its probability under the floored policy, at least ``floor``: what the log records.
    probabilities : ndarray of float64, shape (K,)
        The whole floored distribution (for the log's pmf over arms).
    error : float
        Guaranteed bound on the propensity's numerical error (0 for exact policies).
    """

    arm: int
    propensity: float
    probabilities: np.ndarray
    error: float


class ExplorationFloor(FixedOnceBuilt):
    """A policy whose every arm keeps a propensity of at least ``floor``.

    Not a :class:`~bandits.base.Policy` itself (its choice carries the propensity it was made
    with): :meth:`choose` decides, :meth:`update` passes the observation to the wrapped policy,
    which learns from every decision, explored or not. Every draw of a choice, the policy's own
    included, comes from this wrapper's generator (the policy's stays untouched).

    Parameters
    ----------
    policy : BatchedPolicy
        The policy to floor.
    floor : float, default 0.01
        Minimum propensity, within ``[0, 1 / K]``.
    random_state : int, SeedSequence, Generator or None, default None
        Source of the exploration coin, the uniform arm and the policy's own choice.

    Raises
    ------
    TypeError
        ``policy`` is not a policy of this package, ``floor`` not a real number.
    ValueError
        ``floor`` outside ``[0, 1 / K]``, or propensities the policy cannot compute for its
        arms (:meth:`~bandits.base.BatchedPolicy.check_propensity_size`).

    Examples
    --------
    >>> from bandits import ThompsonSampling
    >>> floored = ExplorationFloor(ThompsonSampling(["svd", "popularity"], random_state=0),
    ...                            floor=0.05, random_state=1)
    >>> choice = floored.choose()
    >>> bool(choice.propensity >= 0.05), round(float(choice.probabilities.sum()), 6)
    (True, 1.0)
    """

    def __init__(self, policy: BatchedPolicy, *, floor: float = 0.01,
                 random_state: RandomState = None) -> None:
        if not isinstance(policy, BatchedPolicy):
            raise TypeError(f"policy must be a bandits policy, got {type(policy).__name__}")
        self.policy = policy
        self.floor = floor
        self.random_state = random_state
        check_floor(floor, policy.n_arms)
        # Every choice computes the propensities: refused now, not at each choose() (review).
        policy.check_propensity_size()
        self._rng = make_generator(random_state)
        self._built = True  # its floor and policy are fixed now (FixedOnceBuilt)

    @property
    def arms(self) -> list[str]:
        """The wrapped policy's arm names."""
        return self.policy.arms

    def action_probabilities(self, context: Any = None) -> np.ndarray:
        """The floored distribution over the arms, shape ``(K,)``."""
        return floor_probabilities(self.policy.action_probabilities(context), self.floor)

    def choose(self, context: Any = None) -> FlooredChoice:
        """Play an arm under the floor and return it with its propensity.

        Raises
        ------
        TypeError, ValueError
            ``floor`` no longer within ``[0, 1 / K]`` (arms were added to the policy), or a
            malformed context (as the policy raises it).
        """
        arms, q, err = _floored(self.policy, self.policy.state_, self._rng, self.floor, context)
        arm = int(arms[0])
        return FlooredChoice(arm, float(q[0, arm]), q[0], float(err[0, arm]))

    def update(self, arm: int | str, reward: float, context: Any = None) -> None:
        """Pass one observation to the wrapped policy (see its ``update`` for what it raises)."""
        self.policy.update(arm, reward, context)

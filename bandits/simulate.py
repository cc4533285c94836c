"""Simulate a policy on a stochastic bandit problem, many runs at once, and measure regret.

:func:`simulate_bernoulli` and :func:`simulate_gaussian` advance ``runs`` independent runs of a
policy's batched core in lockstep for ``horizon`` steps, drawing rewards from Bernoulli(means[k])
or N(means[k], sds[k]^2) (``means`` of shape (K,) for one problem, or (R, K) for one problem per
run, e.g. several gaps simulated in one batch). They return a :class:`SimulationResult` with
either every step (chosen arms, rewards, pseudo-regret) or, for long horizons, cumulative figures
at ``checkpoints`` only (plus optional snapshots of the policy's statistics, e.g. Beta posteriors
for density plots).

Seeding: ``seed`` feeds one ``SeedSequence`` which is split into a policy stream and an
environment stream. ``rng_mode="shared"`` (default) uses one Generator for each stream (fast);
``rng_mode="per_run"`` spawns one child per run for each stream (:func:`run_generators`), so run
``r`` is exactly the single-policy run that uses ``run_generators(seed, runs)[0][r]`` for the
policy and ``[1][r]`` for the rewards.

Regret tools: :func:`lai_robbins_constant` (sum over sub-optimal arms of gap / KL) and
:func:`cumulative_pseudo_regret`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np

from bandits.base import (
    BatchedPolicy,
    Draws,
    add_to_pulled,
    registered_policies,
    row_starts,
    seed_sequence,
)
from bandits.errors import check_int
from bandits.ucb import bernoulli_kl

PolicySpec = BatchedPolicy | Callable[[int], BatchedPolicy] | dict[str, Any]


@dataclass
class SimulationResult:
    """What a simulation recorded (shapes: R runs, T steps, C checkpoints, K arms).

    Attributes
    ----------
    means : ndarray, shape (K,) or (R, K)
        Expected reward of every arm (per run when 2-d).
    checkpoints : ndarray of int, shape (C,)
        Steps (1-based: after that many pulls) at which cumulative figures were recorded.
    cumulative_regret : ndarray, shape (R, C)
        Cumulative pseudo-regret ``sum_t (max(means) - means[arm_t])`` (of the run's means).
    cumulative_reward : ndarray, shape (R, C)
        Cumulative observed reward.
    pulls : ndarray of int, shape (R, C, K)
        Pull counts per arm.
    arms, rewards, pseudo_regret : ndarray, shape (R, T), or None
        Every step (only when no ``checkpoints`` were given): chosen arm, observed reward and
        per-step pseudo-regret.
    snapshots : list of dict, or None
        Copies of the policy's batched statistics at each checkpoint (``snapshot=True``).
    policy : BatchedPolicy
        The policy whose batched core was run (its own single-run state is not touched).
    """

    means: np.ndarray
    checkpoints: np.ndarray
    cumulative_regret: np.ndarray
    cumulative_reward: np.ndarray
    pulls: np.ndarray
    policy: BatchedPolicy
    arms: np.ndarray | None = None
    rewards: np.ndarray | None = None
    pseudo_regret: np.ndarray | None = None
    snapshots: list[dict[str, np.ndarray]] | None = field(default=None, repr=False)

    def mean_regret(self) -> np.ndarray:
        """Cumulative pseudo-regret averaged over runs, shape (C,)."""
        return cast(np.ndarray, self.cumulative_regret.mean(axis=0))


def lai_robbins_constant(means: Sequence[float] | np.ndarray) -> float:
    """Lai & Robbins (1985) constant for Bernoulli arms: ``sum_k gap_k / kl(mu_k, mu*)``.

    Any consistent policy's regret is at least ``(constant + o(1)) * log T``.

    Parameters
    ----------
    means : sequence of float, shape ``(K,)``
        Bernoulli mean of each arm, in [0, 1], at least two arms.

    Raises
    ------
    ValueError
        Means outside [0, 1] or fewer than two arms.
    """
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim != 1 or mu.size < 2:
        raise ValueError(f"means must be a 1-d sequence of at least two values, got {mu.shape}")
    if ((mu < 0) | (mu > 1)).any() or not np.isfinite(mu).all():
        raise ValueError(f"means={mu.tolist()} must lie in [0, 1] (Bernoulli arms)")
    best = mu.max()
    sub = mu < best
    return float(((best - mu[sub]) / bernoulli_kl(mu[sub], best)).sum())


def cumulative_pseudo_regret(means: Sequence[float] | np.ndarray, arms: np.ndarray
                             ) -> np.ndarray:
    """Cumulative pseudo-regret along the last axis of ``arms`` (positions), same shape.

    Parameters
    ----------
    means : sequence of float, shape ``(K,)``
        Mean reward of each arm; the regret of a pull is ``max(means) - means[arm]``.
    arms : ndarray of int, any shape
        Arm pulled at each position (last axis: time), each in ``0..K-1``.

    Raises
    ------
    ValueError
        ``means`` not a non-empty 1-d array of finite numbers, ``arms`` not integers, or an arm
        outside ``0..K-1`` (a negative one would silently have counted as an arm from the end).
    """
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim != 1 or mu.size == 0 or not np.isfinite(mu).all():
        raise ValueError(f"means must be a non-empty 1-d array of finite numbers, got "
                         f"{mu.tolist()}")
    idx = np.asarray(arms)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"arms must hold integer arm positions, got dtype {idx.dtype}")
    bad = (idx < 0) | (idx >= mu.size)
    if bad.any():
        raise ValueError(f"arms contains {int(idx[bad].flat[0])}, outside the allowed range "
                         f"0..{mu.size - 1} (positions of the {mu.size} means)")
    return np.cumsum(mu.max() - mu[idx], axis=-1)


def run_generators(seed: int | None, runs: int
                   ) -> tuple[list[np.random.Generator], list[np.random.Generator]]:
    """The per-run policy and environment Generators of ``rng_mode="per_run"``."""
    policy_seq, env_seq = seed_sequence(seed).spawn(2)
    return ([np.random.default_rng(s) for s in policy_seq.spawn(runs)],
            [np.random.default_rng(s) for s in env_seq.spawn(runs)])


def make_policy(spec: PolicySpec, n_arms: int) -> BatchedPolicy:
    """A policy from an instance (returned as is), a factory ``f(n_arms)`` or a spec dict.

    A spec dict names the class and its hyper-parameters: ``{"policy": "ThompsonSampling",
    "prior_alpha": 1.0}`` or ``{"policy": ..., "params": {...}}``; arms are ``arm0..``.

    Raises
    ------
    ValueError
        Unknown policy name or a policy with the wrong number of arms.
    TypeError
        Anything else.
    """
    if isinstance(spec, BatchedPolicy):
        policy = spec
    elif isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("policy", None)
        classes = registered_policies()
        if name not in classes:
            raise ValueError(f"policy={name!r} is not a known policy; known: {sorted(classes)}")
        params = spec.pop("params", spec)
        classes[name].check_param_names(params)
        policy = classes[name](n_arms, **params)
    elif callable(spec):
        policy = spec(n_arms)
    else:
        raise TypeError(f"policy must be a BatchedPolicy, a factory or a spec dict, "
                        f"got {type(spec).__name__}")
    if not isinstance(policy, BatchedPolicy):
        raise TypeError(f"the policy factory returned {type(policy).__name__}, "
                        "not a BatchedPolicy")
    if policy.n_arms != n_arms:
        raise ValueError(f"the policy has {policy.n_arms} arms; the problem has {n_arms}")
    if policy.contextual:
        raise ValueError(f"{type(policy).__name__} is contextual; these simulators are "
                         "context-free")
    return policy


def _per_run(values: np.ndarray, arms: np.ndarray) -> np.ndarray:
    """``values[arms]`` for per-arm values (K,), ``values[r, arms[r]]`` for per-run ones (R, K)."""
    if values.ndim == 1:
        return cast(np.ndarray, values[arms])
    return cast(np.ndarray, values.reshape(-1)[row_starts(*values.shape) + arms])


def _check_means(means: Any, runs: int, name: str = "means") -> np.ndarray:
    runs = check_int(runs, "runs", low=1)
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim not in (1, 2) or mu.shape[-1] < 1 or (mu.ndim == 2 and mu.shape[0] != runs):
        raise ValueError(f"{name} has shape {mu.shape}; expected (K,) or (runs={runs}, K)")
    return np.ascontiguousarray(mu)


def _generators(seed: int | None, runs: int, rng_mode: str) -> tuple[Any, Draws]:
    """The policy's generator(s) and the environment's draws of ``rng_mode``.

    Parameters
    ----------
    seed : int or None
        Root of both streams (OS entropy when None).
    runs : int
    rng_mode : {"shared", "per_run"}
        ``"shared"``: one generator each for the policy and the environment, shared by the
        runs; ``"per_run"``: one per run each (:func:`run_generators`).

    Raises
    ------
    ValueError
        For another ``rng_mode``.
    """
    if rng_mode == "per_run":
        policy_rng, env_rng = run_generators(seed, runs)
        return policy_rng, Draws(env_rng, runs)
    if rng_mode == "shared":
        policy_seq, env_seq = seed_sequence(seed).spawn(2)
        return np.random.default_rng(policy_seq), Draws(np.random.default_rng(env_seq), runs)
    raise ValueError(f"rng_mode={rng_mode!r}; allowed: 'shared', 'per_run'")


def _checkpoint_steps(checkpoints: Sequence[int] | None, horizon: int) -> np.ndarray:
    """Sorted unique 1-based steps to record: ``checkpoints``, or every step when None.

    Raises
    ------
    ValueError
        If ``checkpoints`` is empty or a step lies outside ``1..horizon``.
    """
    if checkpoints is None:
        return np.arange(1, horizon + 1)
    cps = np.unique(np.asarray(checkpoints, dtype=np.int64))
    if cps.size == 0 or cps[0] < 1 or cps[-1] > horizon:
        raise ValueError(f"checkpoints must lie in 1..horizon={horizon}, got "
                         f"{np.asarray(checkpoints).tolist()[:5]}...")
    return cps


def _simulate(policy: PolicySpec, means: np.ndarray, draw_rewards: Callable[..., np.ndarray],
              horizon: int, runs: int, seed: int | None, checkpoints: Sequence[int] | None,
              rng_mode: Literal["shared", "per_run"], dtype: Any, snapshot: bool
              ) -> SimulationResult:
    horizon = check_int(horizon, "horizon", low=1)
    runs = check_int(runs, "runs", low=1)
    K = means.shape[-1]
    pol = make_policy(policy, K)
    prng, env = _generators(seed, runs, rng_mode)
    full = checkpoints is None
    cps = _checkpoint_steps(checkpoints, horizon)
    C = cps.size
    gaps = means.max(axis=-1, keepdims=True) - means
    if gaps.ndim == 1 or gaps.shape[0] != runs:
        gaps = gaps.reshape(-1)
    state = pol.init_batch(runs, dtype=dtype)
    counts = np.zeros((runs, K), dtype=np.int64)
    cum_regret = np.zeros(runs)
    cum_reward = np.zeros(runs)
    out_regret = np.empty((runs, C))
    out_reward = np.empty((runs, C))
    out_pulls = np.empty((runs, C, K), dtype=np.int64)
    arms_log = np.empty((runs, horizon), dtype=np.int16 if K < 2**15 else np.int64) \
        if full else None
    rewards_log = np.empty((runs, horizon), dtype=np.float32) if full else None
    snaps: list[dict[str, np.ndarray]] | None = [] if snapshot else None
    c = 0
    for t in range(horizon):
        arms = pol.select_batch(state, prng)
        rewards = draw_rewards(env, arms).astype(dtype)
        pol.update_batch(state, arms, rewards, validate=False)
        cum_regret += _per_run(gaps, arms)
        cum_reward += rewards
        add_to_pulled(counts, arms, 1)
        if full:
            arms_log[:, t] = arms  # type: ignore[index]
            rewards_log[:, t] = rewards  # type: ignore[index]
        if t + 1 == cps[c]:
            out_regret[:, c] = cum_regret
            out_reward[:, c] = cum_reward
            out_pulls[:, c] = counts
            if snaps is not None:
                snaps.append({k: v.copy() for k, v in state.stats.items()})
            c += 1
            if c == C:
                break
    return SimulationResult(
        means=means, checkpoints=cps, cumulative_regret=out_regret,
        cumulative_reward=out_reward, pulls=out_pulls, policy=pol, arms=arms_log,
        rewards=rewards_log,
        pseudo_regret=None if arms_log is None else (
            gaps[arms_log.astype(np.int64)] if gaps.ndim == 1
            else np.take_along_axis(gaps, arms_log.astype(np.int64), axis=1)),
        snapshots=snaps,
    )


def simulate_bernoulli(policy: PolicySpec, means: Sequence[float] | np.ndarray, horizon: int,
                       runs: int = 1, seed: int | None = None, *,
                       checkpoints: Sequence[int] | None = None,
                       rng_mode: Literal["shared", "per_run"] = "shared",
                       dtype: Any = np.float64, snapshot: bool = False) -> SimulationResult:
    """Run a policy on Bernoulli arms for ``runs`` independent runs of ``horizon`` steps.

    Parameters
    ----------
    policy : BatchedPolicy, callable or dict
        See :func:`make_policy`; its hyper-parameters are used, every run starts at the prior.
    means : array-like, shape (K,) or (runs, K)
        Click rate of every arm, in [0, 1]; one row per run to simulate a different problem in
        each run (all in one batch).
    horizon : int
        Steps T per run.
    runs : int, default 1
        Independent runs R, advanced together.
    seed : int or None
        Seeds both the policy's and the environment's draws (see module docstring).
    checkpoints : sequence of int, optional
        Record cumulative figures only after these steps (1..T) instead of every step; use it
        for long horizons (e.g. ``np.geomspace``).
    rng_mode : {"shared", "per_run"}, default "shared"
        One Generator per stream, or one per run and stream (exact match with single runs).
    dtype : float32 or float64, default float64
        Float type of the policy's batched statistics.
    snapshot : bool, default False
        Keep a copy of the policy's statistics at every checkpoint.

    Returns
    -------
    SimulationResult

    Raises
    ------
    ValueError
        Means outside [0, 1], bad horizon/runs/checkpoints, wrong number of arms.
    """
    mu = _check_means(means, runs)
    if not np.isfinite(mu).all() or (mu < 0).any() or (mu > 1).any():
        raise ValueError(f"means={np.asarray(means).tolist()} must lie in [0, 1]")

    def draw(env: Draws, arms: np.ndarray) -> np.ndarray:
        return env.random() < _per_run(mu, arms)

    return _simulate(policy, mu, draw, horizon, runs, seed, checkpoints, rng_mode, dtype,
                     snapshot)


def simulate_gaussian(policy: PolicySpec, means: Sequence[float] | np.ndarray,
                      sds: Sequence[float] | np.ndarray | float, horizon: int, runs: int = 1,
                      seed: int | None = None, *, checkpoints: Sequence[int] | None = None,
                      rng_mode: Literal["shared", "per_run"] = "shared",
                      dtype: Any = np.float64, snapshot: bool = False) -> SimulationResult:
    """Like :func:`simulate_bernoulli` with rewards ``N(means[k], sds[k]**2)``.

    Parameters
    ----------
    policy, horizon, runs, seed, checkpoints, rng_mode, dtype, snapshot
        As in :func:`simulate_bernoulli` (``runs`` default 1, ``seed`` None,
        ``rng_mode`` ``"shared"``, ``dtype`` float64, ``snapshot`` False).
    means : sequence of float, shape ``(K,)`` or ``(runs, K)``
        Mean reward of each arm (finite).
    sds : float or sequence of float, broadcastable to ``means``
        Standard deviation of each arm's rewards (positive, finite).

    Raises
    ------
    ValueError
        Non-finite means, non-positive standard deviations, or the errors of the Bernoulli one.
    """
    mu = _check_means(means, runs)
    sd = np.ascontiguousarray(np.broadcast_to(np.asarray(sds, dtype=np.float64), mu.shape))
    if not np.isfinite(mu).all():
        raise ValueError(f"means={np.asarray(means).tolist()} must be finite")
    if not (np.isfinite(sd).all() and (sd > 0).all()):
        raise ValueError(f"sds={np.asarray(sds).tolist()} must be positive and finite")

    def draw(env: Draws, arms: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, _per_run(mu, arms) + _per_run(sd, arms) * env.standard_normal())

    return _simulate(policy, mu, draw, horizon, runs, seed, checkpoints, rng_mode, dtype,
                     snapshot)

"""Change detectors on each arm's reward stream: Page-Hinkley and two-sided CUSUM.

A detector watches one stream per arm (the rewards observed when that arm was played, rewards in
``[0, 1]``: a click, or the rule book's reward of a decision) and raises an *alarm* when the
stream's mean has moved. Like the policies it is batched over ``R`` independent runs: the
statistics are ``(R, K)`` arrays and one call advances every run by one observation::

    detector = PageHinkley(["svd", "popularity"])
    state = detector.init_batch(n_runs)                   # every run, every arm: fresh
    alarms = detector.update_batch(state, arms, rewards)  # (R,) bool: which runs alarmed now

and the single-run form (the service) works on ``detector.state_``: ``detector.update(arm,
reward)`` returns whether this observation raised an alarm; ``state_dict()`` /
``detector_from_state_dict`` round-trip it through plain JSON.

Both detectors share the parameters

``threshold`` (``lambda`` / ``h``)
    Alarm when the accumulated evidence of a shift exceeds it; larger means fewer false alarms
    and later detection.
``delta`` (Page-Hinkley's ``delta``, CUSUM's allowance ``k``)
    The part of each observation's deviation that is forgiven: shifts of the mean smaller than
    ``delta`` accumulate no evidence (in expectation).
``min_samples``
    Observations of an arm (since its last reset) before it may alarm; CUSUM estimates its
    reference mean from exactly these first observations.

**Reset rule.** When an arm alarms in a run, that arm's detector in that run restarts from
scratch (no observation, zero sums) at the next observation, and its alarm count goes up by one;
the other arms and runs are untouched. After a true change the restarted detector therefore
learns the new level (CUSUM takes it as its new reference after ``min_samples`` observations),
so one change raises one alarm, not one per observation.

Detection delay after a step change of size ``shift`` (``|mu_1 - mu_0|``), in observations of
the arm, for shifts larger than ``delta``: see :meth:`CUSUM.delay_bound` and
:meth:`PageHinkley.delay_bound`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from bandits.base import FixedOnceBuilt, build_from_state, init_param_names, read_stats
from bandits.errors import (
    MAX_COUNT,
    arm_index,
    check_arm_names,
    check_int,
    check_real,
    check_reward_value,
    check_rewards,
    check_state_layout,
    check_state_type,
)

__all__ = [
    "CUSUM",
    "ChangeDetector",
    "DetectorState",
    "PageHinkley",
    "detector_from_state_dict",
]

STATE_FORMAT = 1
_DETECTORS: dict[str, type[ChangeDetector]] = {}


@dataclass
class DetectorState:
    """Statistics of ``R`` runs x ``K`` arms (see :meth:`ChangeDetector.init_batch`).

    Attributes
    ----------
    stats : dict of str to ndarray
        Every array has shape ``(R, K)``: ``n`` (observations since the arm's last reset),
        ``alarms`` (alarms so far) and the detector's own sums.
    """

    stats: dict[str, np.ndarray]

    @property
    def n_runs(self) -> int:
        """Number of runs ``R``."""
        return cast(int, self.stats["n"].shape[0])

    def copy(self) -> DetectorState:
        """Deep copy of the arrays."""
        return DetectorState({k: v.copy() for k, v in self.stats.items()})


class ChangeDetector(FixedOnceBuilt, ABC):
    """Per-arm change detector over ``R`` runs; the base of :class:`PageHinkley` and :class:`CUSUM`.

    Parameters
    ----------
    arms : list of str or int
        Arm names (unique, non-empty), or a number of arms named ``arm0``, ``arm1``, ...
    threshold : float
        Alarm level, > 0 (see the module docstring).
    delta : float, default 0.0
        Per-observation allowance, within ``[0, 1)``.
    min_samples : int, default 30
        Observations of an arm before it may alarm, >= 1.

    Attributes
    ----------
    arms : list of str
        Arm names in position order.
    state_ : DetectorState
        The one-run state behind :meth:`update`.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or outside its range (the message names it, shows the value
        and the allowed range).
    """

    #: Names of the statistics beyond ``n`` and ``alarms``, all zero after a reset.
    sums: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _DETECTORS[cls.__name__] = cls

    def __init__(self, arms: Sequence[str] | int, *, threshold: float, delta: float = 0.0,
                 min_samples: int = 30) -> None:
        self.threshold = threshold
        self.delta = delta
        self.min_samples = min_samples
        self.arms = check_arm_names(arms)
        check_real(threshold, "threshold", low=0.0, low_open=True)
        check_real(delta, "delta", low=0.0, high=1.0, high_open=True)
        check_int(min_samples, "min_samples", low=1)
        self.state_ = self.init_batch(1)
        self._built = True  # its parameters are fixed now (FixedOnceBuilt)

    @property
    def n_arms(self) -> int:
        """Number of arms ``K``."""
        return len(self.arms)

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as plain Python numbers."""
        return {"threshold": float(self.threshold), "delta": float(self.delta),
                "min_samples": int(self.min_samples)}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}(arms={self.arms!r}, {params})"

    # ----------------------------------------------------------------- batched core
    def init_batch(self, n_runs: int) -> DetectorState:
        """A state of ``n_runs`` runs in which no arm has been observed yet.

        Raises
        ------
        TypeError, ValueError
            ``n_runs`` not an int >= 1.
        """
        check_int(n_runs, "n_runs", low=1)
        shape = (n_runs, self.n_arms)
        stats = {"n": np.zeros(shape), "alarms": np.zeros(shape)}
        stats.update({name: np.zeros(shape) for name in self.sums})
        return DetectorState(stats)

    def update_batch(self, state: DetectorState, arms: Any, rewards: Any) -> np.ndarray:
        """Fold one observation per run into its arm's detector; return which runs alarmed.

        Parameters
        ----------
        state : DetectorState
            Updated in place; the arms that alarmed are reset (see the module docstring).
        arms : array of int, shape (R,)
            Arm position observed in each run.
        rewards : array of float, shape (R,)
            Observed rewards, within ``[0, 1]``.

        Returns
        -------
        ndarray of bool, shape (R,)
            True for the runs whose arm alarmed at this observation.

        Raises
        ------
        TypeError
            Rewards that are not real numbers (strings, complex numbers, booleans).
        ValueError
            Wrong shapes, arm positions out of range, rewards outside ``[0, 1]`` or NaN; the state
            is left unchanged.
        """
        R = self._check_state(state)
        a = np.asarray(arms)
        if a.shape != (R,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"arms must be an int array of shape ({R},), got {a.dtype} {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= self.n_arms):
            bad = a[(a < 0) | (a >= self.n_arms)][0]
            raise ValueError(f"arms contains {int(bad)}; positions are 0..{self.n_arms - 1}")
        x = check_rewards(rewards, "reward", 0.0, 1.0)
        if x.shape != (R,):
            raise ValueError(f"rewards has shape {x.shape}; expected ({R},)")
        rows = np.arange(R)
        # Gather the observed arm's statistics, step them as (R,) vectors, scatter them back:
        # one observation per run, so no two writes hit the same cell.
        cells = {name: s[rows, a] for name, s in state.stats.items()}
        cells["n"] += 1.0
        alarm = self._step(cells, x) & (cells["n"] >= self.min_samples)
        cells["alarms"] += alarm
        for name in ("n", *self.sums):
            cells[name][alarm] = 0.0
        for name, s in state.stats.items():
            s[rows, a] = cells[name]
        return cast(np.ndarray, alarm)

    def _check_state(self, state: Any) -> int:
        """The runs of ``state``, refused unless it is one of this detector's
        (:func:`~bandits.errors.check_state_layout`).
        """
        check_state_type(state, DetectorState, type(self).__name__)
        return check_state_layout(state.stats, {name: (self.n_arms,) for name in
                                                ("n", "alarms", *self.sums)},
                                  f"{type(self).__name__} with {self.n_arms} arms")

    def statistic_batch(self, state: DetectorState) -> np.ndarray:
        """The current evidence of a shift of every run and arm, shape ``(R, K)``.

        An arm alarms when this exceeds ``threshold`` (once it has ``min_samples``
        observations); for dashboards and for choosing a threshold.
        """
        self._check_state(state)
        return self._statistic(state.stats)

    @abstractmethod
    def _step(self, cells: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """Fold rewards ``x`` (R,) into the gathered statistics (each (R,), ``n`` already
        counting ``x``) in place; return where the evidence exceeds the threshold.
        """

    @abstractmethod
    def _statistic(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        """The evidence of a shift, same shape as the statistics."""

    @abstractmethod
    def delay_bound(self, shift: float, n_before: int) -> float:
        """A bound on the mean detection delay of a step change (see the subclasses)."""

    # ----------------------------------------------------------------- single run
    def update(self, arm: int | str, reward: float) -> bool:
        """Fold one observed ``reward`` of ``arm`` (a name or a position); True if it alarmed.

        Raises
        ------
        ValueError
            Unknown arm (``UnknownArmError``), reward outside ``[0, 1]``, NaN or infinite; the
            state is left unchanged.
        TypeError
            ``arm`` neither str nor int, ``reward`` not a number.
        """
        k = arm_index(self.arms, arm)
        value = check_reward_value(reward)
        return bool(self.update_batch(self.state_, np.array([k]), np.array([value]))[0])

    def statistic(self) -> np.ndarray:
        """:meth:`statistic_batch` of the single run, shape ``(K,)``."""
        return cast(np.ndarray, self.statistic_batch(self.state_)[0])

    def alarm_counts(self) -> dict[str, int]:
        """Alarms raised so far by each arm of the single run, by name."""
        return dict(zip(self.arms, self.state_.stats["alarms"][0].astype(int).tolist(),
                        strict=True))

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """The single run's detector as plain JSON data.

        Keys: ``detector`` (class name), ``format``, ``arms``, ``params`` and ``stats`` (every
        statistic as a list in arm order).
        """
        return {
            "detector": type(self).__name__,
            "format": STATE_FORMAT,
            "arms": list(self.arms),
            "params": self.get_params(),
            "stats": {k: v[0].tolist() for k, v in self.state_.stats.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ChangeDetector:
        """Rebuild the detector :meth:`state_dict` described (dispatching on ``"detector"``).

        Raises
        ------
        ValueError
            Unknown detector name, wrong class, wrong format, a statistic missing or of the wrong
            length.
        """
        if not isinstance(state, dict) or "detector" not in state:
            raise ValueError("state must be a dict produced by state_dict() (no 'detector' key)")
        target = _DETECTORS.get(state["detector"])
        if target is None:
            raise ValueError(f"state['detector']={state['detector']!r} is not a known detector; "
                             f"known: {sorted(_DETECTORS)}")
        if not issubclass(target, cls):
            raise ValueError(f"state describes a {target.__name__}, not a {cls.__name__}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state['format']={state.get('format')!r}; this version reads "
                             f"format {STATE_FORMAT}")
        detector = cast(ChangeDetector, build_from_state(
            lambda arms, random_state, **params: target(arms, **params),
            init_param_names(target), state, None))
        # counts in [0, MAX_COUNT], running means of rewards in [0, 1], sums finite
        ranges = {**dict.fromkeys(("n", "alarms"), (0.0, MAX_COUNT, "a count")),
                  **dict.fromkeys(("mean", "reference"), (0.0, 1.0, "a mean of rewards in "
                                                                      "[0, 1]"))}
        values = read_stats(state.get("stats"), detector.state_.stats, target.__name__, ranges)
        for key, value in values.items():
            detector.state_.stats[key][0] = value
        return detector


def detector_from_state_dict(state: dict[str, Any]) -> ChangeDetector:
    """Rebuild any detector of this module from its ``state_dict()``.

    Parameters
    ----------
    state : dict
        What a detector's ``state_dict()`` returned.

    Raises
    ------
    ValueError
        As :meth:`ChangeDetector.from_state_dict`.
    """
    return ChangeDetector.from_state_dict(state)


class PageHinkley(ChangeDetector):
    """Two-sided Page-Hinkley test (Page 1954; Hinkley 1971) against the running mean.

    For an arm's observations ``x_1, x_2, ...`` since its last reset, with ``m_t`` the mean of
    ``x_1..x_t``::

        U_t = sum_{i<=t} (x_i - m_i - delta),   alarm (up)   when U_t - min_{s<=t} U_s > threshold
        L_t = sum_{i<=t} (x_i - m_i + delta),   alarm (down) when max_{s<=t} L_s - L_t > threshold

    (``U_0 = L_0 = 0``). No reference level is needed: the running mean is it, which is why the
    test suits a stream whose level is unknown, and why, long after a reset, it reacts to a shift
    with the full shift per observation at first and less as the mean catches up.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    threshold : float, default 23.0
        ``lambda``, > 0. The default is the smallest threshold (grid step 1) with at most 0.1
        false alarms per 1,000 steps over 4 arms on 300 stationary runs x 2,000 steps of
        ``recbandits/MovieLensSim-v0`` (uniform arm choice, so about 500 observations per arm
        and run; click rates 0.3-0.78), as ``bench/drift_detection.py`` chooses it.
    delta : float, default 0.01
        Allowance per observation, within ``[0, 1)``.
    min_samples : int, default 30
        Observations of an arm before it may alarm, >= 1.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or outside its range.
    """

    sums = ("mean", "up", "up_min", "down", "down_max")

    def __init__(self, arms: Sequence[str] | int, *, threshold: float = 23.0,
                 delta: float = 0.01, min_samples: int = 30) -> None:
        super().__init__(arms, threshold=threshold, delta=delta, min_samples=min_samples)

    def _step(self, cells: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        cells["mean"] += (x - cells["mean"]) / cells["n"]
        dev = x - cells["mean"]
        cells["up"] += dev - self.delta
        cells["down"] += dev + self.delta
        np.minimum(cells["up_min"], cells["up"], out=cells["up_min"])
        np.maximum(cells["down_max"], cells["down"], out=cells["down_max"])
        return cast(np.ndarray, self._statistic(cells) > self.threshold)

    def _statistic(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        return cast(np.ndarray, np.maximum(stats["up"] - stats["up_min"],
                                           stats["down_max"] - stats["down"]))

    def delay_bound(self, shift: float, n_before: int) -> float:
        """Observations after a step change of ``shift`` by which the expected evidence passes
        ``threshold + 1``, when the arm had ``n_before`` observations since its last reset.

        After the change the running mean moves towards the new level, so the ``j``-th new
        observation adds ``shift * n_before / (n_before + j) - delta`` to the evidence in
        expectation; over ``d`` observations at least ``d * (shift * n_before / (n_before + d)
        - delta)``. The bound is the smallest ``d`` at which that reaches ``threshold + 1`` (the
        ``+ 1`` covers the last step's overshoot: a reward in ``[0, 1]`` moves the sums by at
        most 1). It is a drift bound, not a quantile: delays scatter around it.

        Parameters
        ----------
        shift : float
            ``|mu_1 - mu_0|``, within ``(0, 1]``.
        n_before : int
            Observations of the arm between its last reset and the change, >= 1.

        Returns
        -------
        float
            The bound, ``inf`` when the expected evidence never reaches the level (a shift
            not larger than ``delta``, or too few observations before the change for the
            running mean to hold the old level long enough).

        Raises
        ------
        TypeError, ValueError
            ``shift`` outside ``(0, 1]`` or ``n_before`` < 1.
        """
        s = check_real(shift, "shift", low=0.0, high=1.0, low_open=True)
        n0 = check_int(n_before, "n_before", low=1)
        # d (s n0 - delta (n0 + d)) >= c (n0 + d)  <=>  delta d^2 + (c + delta n0 - s n0) d + c n0
        # <= 0, with c = threshold + 1: the smaller root of the quadratic, if it has real roots.
        c, dl = float(self.threshold) + 1.0, float(self.delta)
        b = c + dl * n0 - s * n0
        if dl == 0.0:
            return c * n0 / -b if b < 0 else float("inf")
        disc = b * b - 4.0 * dl * c * n0
        if b >= 0 or disc < 0:
            return float("inf")
        return float((-b - np.sqrt(disc)) / (2.0 * dl))


class CUSUM(ChangeDetector):
    """Two-sided CUSUM (Page 1954) against a reference mean estimated after each reset.

    The first ``min_samples`` observations of an arm since its last reset estimate the reference
    ``mu_0`` (their mean) and accumulate nothing; from then on, with ``k = delta``::

        S+_t = max(0, S+_{t-1} + x_t - mu_0 - k)     alarm (up)   when S+_t > threshold
        S-_t = max(0, S-_{t-1} - x_t + mu_0 - k)     alarm (down) when S-_t > threshold

    With ``k`` half the smallest shift worth detecting and ``h = threshold``, this is the
    textbook tabular CUSUM; unlike Page-Hinkley its reference stays put, so its reaction to a
    shift does not fade with the time since the reset.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number.
    threshold : float, default 16.0
        ``h``, > 0. Chosen as :class:`PageHinkley`'s default is (grid step 0.5): at most 0.1
        false alarms per 1,000 steps on the stationary simulator (``bench/drift_detection.py``).
    delta : float, default 0.05
        Allowance ``k`` per observation, within ``[0, 1)``: half a shift of 0.1.
    min_samples : int, default 200
        Observations that estimate the reference (and before which no alarm), >= 1. Fewer
        leave the reference's error (about ``0.5 / sqrt(min_samples)`` for a click rate) close
        to ``delta``, which a stationary stream then accumulates as false evidence.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or outside its range.
    """

    sums = ("reference", "pos", "neg")

    def __init__(self, arms: Sequence[str] | int, *, threshold: float = 16.0,
                 delta: float = 0.05, min_samples: int = 200) -> None:
        super().__init__(arms, threshold=threshold, delta=delta, min_samples=min_samples)

    def _step(self, cells: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        n = cells["n"]
        learning = n <= self.min_samples
        # The reference is the running mean of the first min_samples observations, then frozen.
        cells["reference"] = np.where(learning, cells["reference"] + (x - cells["reference"]) / n,
                                      cells["reference"])
        dev = np.where(learning, 0.0, x - cells["reference"])
        active = ~learning
        cells["pos"] = np.where(active, np.maximum(0.0, cells["pos"] + dev - self.delta), 0.0)
        cells["neg"] = np.where(active, np.maximum(0.0, cells["neg"] - dev - self.delta), 0.0)
        return cast(np.ndarray, self._statistic(cells) > self.threshold)

    def _statistic(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        return cast(np.ndarray, np.maximum(stats["pos"], stats["neg"]))

    def delay_bound(self, shift: float, n_before: int) -> float:
        """``(threshold + 1) / (shift - delta)``: a bound on the mean detection delay, in
        observations, of a step change of ``shift`` after the reference was set.

        With the reference at the old mean, one side of the CUSUM is at least the random walk
        ``W_d = sum_{j<=d} (x_j - mu_0 - k)`` started at 0, whose steps have mean ``shift - k``
        and are at most 1; by Wald's identity the walk's mean first passage over ``h`` is at most
        ``(h + 1) / (shift - k)``. The reference is estimated from ``min_samples`` observations,
        so the bound holds up to that estimate's error.

        Parameters
        ----------
        shift : float
            ``|mu_1 - mu_0|``, within ``(0, 1]``.
        n_before : int
            Observations of the arm between its last reset and the change; the bound assumes
            ``n_before >= min_samples`` (the reference is set before the change).

        Returns
        -------
        float
            The bound, ``inf`` for a shift not larger than ``delta``.

        Raises
        ------
        TypeError, ValueError
            ``shift`` outside ``(0, 1]``, or ``n_before < min_samples``.
        """
        s = check_real(shift, "shift", low=0.0, high=1.0, low_open=True)
        check_int(n_before, "n_before", low=int(self.min_samples))
        gap = s - float(self.delta)
        return (float(self.threshold) + 1.0) / gap if gap > 0 else float("inf")

"""The results of a simulation: what :func:`experiments.simulate.run` returns.

These types live apart from the code that produces them (:mod:`experiments.simulate`) and the code
that reads them (:mod:`experiments.report`, :mod:`experiments.plots`), so that those modules
import this one and never each other in a circle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import ExperimentConfig

__all__ = ["FIGURE_FILES", "PolicyRuns", "SimulationResults"]

#: The figures :func:`experiments.plots.write_plots` may write into a run's folder, in its
#: order (here, not in :mod:`experiments.plots`, so that naming them imports no matplotlib).
FIGURE_FILES = ("regret.png", "regret_logx.png", "arm_share.png", "click_rate.png",
                "posteriors.png")


@dataclass
class PolicyRuns:
    """Everything recorded for the runs of one policy (runs in seed order).

    Attributes
    ----------
    label, policy_id : str
    horizon : int
    run_ids : ndarray of int64, shape (R,)
        Which runs these are (``0..runs-1``, fewer when interrupted).
    record_steps : ndarray of int64, shape (S,)
        The 1-based steps at which the cumulative series are recorded (the last is the horizon).
    cum_reward : ndarray of float64, shape (R, S)
        Cumulative realised reward at ``record_steps``.
    cum_regret : ndarray of float64, shape (R, S)
        Cumulative pseudo-regret against the run's best fixed arm in hindsight (the arm with
        the highest expected reward summed over the run's users): its expected reward minus
        that of the chosen arm, summed. Negative where a policy beats every fixed arm, which a
        contextual policy can.
    cum_oracle_regret : ndarray of float64, shape (R, S)
        Cumulative pseudo-regret against each arriving user's own best arm (never negative).
    best_arms : ndarray of int64, shape (R,)
        The best fixed arm in hindsight of each run.
    best_arm_pulls, oracle_arm_pulls : ndarray of int64, shape (R,)
        Pulls of the run's best fixed arm; steps on which the chosen arm was (one of) the
        arriving user's best.
    arm_counts : ndarray of int64, shape (T, K)
        Runs choosing each arm at each step.
    pulls, clicks : ndarray, shape (R, K)
        Pulls and summed reward of each arm per run.
    expected_sum : ndarray of float64, shape (R, K)
        Each arm's expected reward summed over the run's users (whatever was chosen).
    expected_min, expected_max : ndarray of float64, shape (K,)
        Range of each arm's expected reward over all users and steps.
    checkpoint_steps : ndarray of int64, shape (C,)
    checkpoint_pulls, checkpoint_clicks : ndarray, shape (R, C, K)
        ``pulls`` and ``clicks`` as they were after each checkpoint step.
    binary : bool
        Whether every reward was 0 or 1.
    """

    label: str
    policy_id: str
    horizon: int
    run_ids: np.ndarray
    record_steps: np.ndarray
    cum_reward: np.ndarray
    cum_regret: np.ndarray
    cum_oracle_regret: np.ndarray
    best_arms: np.ndarray
    best_arm_pulls: np.ndarray
    oracle_arm_pulls: np.ndarray
    arm_counts: np.ndarray
    pulls: np.ndarray
    clicks: np.ndarray
    expected_sum: np.ndarray
    expected_min: np.ndarray
    expected_max: np.ndarray
    checkpoint_steps: np.ndarray
    checkpoint_pulls: np.ndarray
    checkpoint_clicks: np.ndarray
    binary: bool = True

    @property
    def n_runs(self) -> int:
        """Number of runs in this block, ``len(run_ids)``."""
        return len(self.run_ids)

    @classmethod
    def concatenate(cls, parts: list[PolicyRuns]) -> PolicyRuns:
        """Join blocks of runs of one policy (in the given order)."""
        first = parts[0]
        per_run = ("run_ids", "cum_reward", "cum_regret", "cum_oracle_regret", "best_arms",
                   "best_arm_pulls", "oracle_arm_pulls", "pulls", "clicks", "expected_sum",
                   "checkpoint_pulls", "checkpoint_clicks")
        joined = {name: np.concatenate([getattr(p, name) for p in parts]) for name in per_run}
        return dataclasses.replace(
            first,
            **joined,  # type: ignore[arg-type]  # only the per-run array fields
            arm_counts=np.sum([p.arm_counts for p in parts], axis=0),
            expected_min=np.min([p.expected_min for p in parts], axis=0),
            expected_max=np.max([p.expected_max for p in parts], axis=0),
            binary=all(p.binary for p in parts),
        )


@dataclass
class SimulationResults:
    """The outcome of :func:`run`.

    Attributes
    ----------
    config : ExperimentConfig
        The resolved config (concrete seed; env params as actually used).
    arm_names : list of str
    policies : list of PolicyRuns
        One per configured policy, in config order (with no runs if interrupted before any).
    out_dir : Path or None
        Where the files were written (None with ``write=False``).
    files : dict of str to Path
    notes : list of str
        One-line remarks, e.g. the synthetic-data fallback.
    action_dependent : bool
        Whether what a user expects from an arm can depend on earlier actions (boredom): then
        the regret against the best fixed arm and the reward against the best arm in hindsight
        can disagree (explained in ``summary.md``).
    interrupted : bool
        Whether Ctrl-C, or a worker or the scheduler lost, stopped the simulation early.
    stop_reason, stop_note : str or None
        Then what stopped it ("interrupted by Ctrl-C", "a local worker process was lost
        (...)"), and that with what is reported ("...: reporting 2 of the 8 tasks"); None for
        a whole run.
    steps, summary : pandas.DataFrame
        The tables of ``steps.csv`` and ``summary.csv`` (``runs.csv``'s is
        :func:`experiments.report.runs_frame`).
    """

    config: ExperimentConfig
    arm_names: list[str]
    policies: list[PolicyRuns]
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    action_dependent: bool = False
    interrupted: bool = False
    stop_reason: str | None = None
    stop_note: str | None = None
    steps: Any = None
    summary: Any = None

    @property
    def binary_rewards(self) -> bool:
        """Whether every policy with runs had binary (0/1) rewards."""
        return all(p.binary for p in self.policies if p.n_runs)

    def policy(self, label: str) -> PolicyRuns:
        """The runs of the policy labelled ``label``."""
        for runs in self.policies:
            if runs.label == label:
                return runs
        raise KeyError(f"no policy labelled {label!r}; labels: {[p.label for p in self.policies]}")

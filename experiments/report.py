"""Tables of a simulation: ``steps.csv``, ``summary.csv``, ``runs.csv`` and ``summary.md``.

Every interval is a 95% Student-t confidence interval of a mean over independent runs. The paired
comparisons use the runs' common random numbers: run ``i`` of every policy sees the same users
(the environment is seeded per run, not per policy), so the difference of two policies is taken
run by run before it is averaged, which removes the variation of the users from the comparison.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from arms.data.files import write_whole
from experiments.config import HINDSIGHT_POLICY_ID
from experiments.results import PolicyRuns, SimulationResults

#: Columns of ``steps.csv``, in order.
STEPS_COLUMNS = (
    "policy", "step", "runs",
    "cum_reward_mean", "cum_reward_ci_low", "cum_reward_ci_high",
    "cum_regret_mean", "cum_regret_ci_low", "cum_regret_ci_high",
    "cum_oracle_regret_mean", "cum_oracle_regret_ci_low", "cum_oracle_regret_ci_high",
)  # fmt: skip
#: Columns of ``summary.csv``, in order.
SUMMARY_COLUMNS = (
    "policy", "policy_id", "runs", "horizon",
    "cum_reward_mean", "cum_reward_ci_low", "cum_reward_ci_high",
    "cum_regret_mean", "cum_regret_ci_low", "cum_regret_ci_high",
    "cum_oracle_regret_mean", "cum_oracle_regret_ci_low", "cum_oracle_regret_ci_high",
    "best_arm_share", "oracle_arm_share",
    "vs_hindsight_diff", "vs_hindsight_ci_low", "vs_hindsight_ci_high", "vs_hindsight_p",
    "vs_random_diff", "vs_random_ci_low", "vs_random_ci_high", "vs_random_p",
)  # fmt: skip
#: Columns of ``runs.csv``: one row per policy and run, the final figures that summary.csv's
#: means, intervals, shares and paired differences are computed from (found by attack: only
#: the aggregates were written, so no interval could be recomputed).
RUNS_COLUMNS = (
    "policy", "policy_id", "run", "horizon", "cum_reward", "cum_regret", "cum_oracle_regret",
    "best_arm", "best_arm_pulls", "oracle_arm_pulls",
)  # fmt: skip
RANDOM_POLICY_ID = "RandomPolicy"
_FLOAT_FORMAT = "%.10g"


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-interval along ``axis``.

    Parameters
    ----------
    values : ndarray
        Samples along ``axis`` (runs).

    Returns
    -------
    mean, low, high : ndarray
        The shape of ``values`` without ``axis``; the bounds are NaN with fewer than two samples.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    half = stats.t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def paired_comparison(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Mean of ``a - b`` run by run, its 95% interval and the paired t-test's two-sided p-value.

    Parameters
    ----------
    a, b : ndarray of shape (n_runs,)
        The same runs (same seeds) of two policies; only the first ``min`` of both is used when
        an interrupted simulation left them with different numbers of runs.
    """
    n = min(len(a), len(b))
    diff = np.asarray(a[:n], dtype=np.float64) - np.asarray(b[:n], dtype=np.float64)
    mean, low, high = mean_ci(diff)
    if n < 2:
        p = np.nan
    elif np.all(diff == diff[0]):
        # A constant difference: no variation to test; p is 1 when it is zero, else 0.
        p = 1.0 if diff[0] == 0 else 0.0
    else:
        p = float(stats.ttest_rel(a[:n], b[:n]).pvalue)
    return float(mean), float(low), float(high), float(p)


def steps_frame(results: SimulationResults) -> pd.DataFrame:
    """Per recorded step and policy: runs, mean and 95% interval of cumulative reward and regret."""
    frames = []
    for runs in results.policies:
        if runs.n_runs == 0:
            continue
        reward = mean_ci(runs.cum_reward)
        regret = mean_ci(runs.cum_regret)
        oracle = mean_ci(runs.cum_oracle_regret)
        frames.append(
            pd.DataFrame(
                {
                    "policy": runs.label,
                    "step": runs.record_steps,
                    "runs": runs.n_runs,
                    "cum_reward_mean": reward[0],
                    "cum_reward_ci_low": reward[1],
                    "cum_reward_ci_high": reward[2],
                    "cum_regret_mean": regret[0],
                    "cum_regret_ci_low": regret[1],
                    "cum_regret_ci_high": regret[2],
                    "cum_oracle_regret_mean": oracle[0],
                    "cum_oracle_regret_ci_low": oracle[1],
                    "cum_oracle_regret_ci_high": oracle[2],
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=list(STEPS_COLUMNS))
    return pd.concat(frames, ignore_index=True).loc[:, list(STEPS_COLUMNS)]


def _baseline(results: SimulationResults, policy_id: str) -> PolicyRuns | None:
    for runs in results.policies:
        if runs.policy_id == policy_id and runs.n_runs > 0:
            return runs
    return None


def summary_frame(results: SimulationResults) -> pd.DataFrame:
    """One row per policy: final cumulative reward and regret with 95% intervals, the share of
    pulls on each user's best arm, and paired differences of final cumulative reward against the
    best single arm in hindsight and against uniform random (NaN where that baseline was not run).
    """
    hindsight = _baseline(results, HINDSIGHT_POLICY_ID)
    random = _baseline(results, RANDOM_POLICY_ID)
    rows = []
    for runs in results.policies:
        if runs.n_runs == 0:
            continue
        final_reward = runs.cum_reward[:, -1]
        final_regret = runs.cum_regret[:, -1]
        reward = mean_ci(final_reward)
        regret = mean_ci(final_regret)
        oracle = mean_ci(runs.cum_oracle_regret[:, -1])
        steps = runs.n_runs * runs.horizon
        row = {
            "policy": runs.label,
            "policy_id": runs.policy_id,
            "runs": runs.n_runs,
            "horizon": int(runs.record_steps[-1]),
            "cum_reward_mean": float(reward[0]),
            "cum_reward_ci_low": float(reward[1]),
            "cum_reward_ci_high": float(reward[2]),
            "cum_regret_mean": float(regret[0]),
            "cum_regret_ci_low": float(regret[1]),
            "cum_regret_ci_high": float(regret[2]),
            "cum_oracle_regret_mean": float(oracle[0]),
            "cum_oracle_regret_ci_low": float(oracle[1]),
            "cum_oracle_regret_ci_high": float(oracle[2]),
            "best_arm_share": float(runs.best_arm_pulls.sum() / steps),
            "oracle_arm_share": float(runs.oracle_arm_pulls.sum() / steps),
        }
        for prefix, base in (("vs_hindsight", hindsight), ("vs_random", random)):
            if base is None:
                values = (np.nan,) * 4
            else:
                values = paired_comparison(final_reward, base.cum_reward[:, -1])
            for suffix, value in zip(("diff", "ci_low", "ci_high", "p"), values, strict=True):
                row[f"{prefix}_{suffix}"] = value
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def runs_frame(results: SimulationResults) -> pd.DataFrame:
    """One row per policy and run (``run`` is the run's index, the same users for every
    policy): the final cumulative reward and regrets, the run's best fixed arm by name (as
    ``summary.md`` and the plots name arms; review: its index was written), and the pulls that
    :func:`summary_frame`'s shares count.
    """
    names = np.asarray(results.arm_names, dtype=object)
    frames = [
        pd.DataFrame({
            "policy": runs.label, "policy_id": runs.policy_id, "run": runs.run_ids,
            "horizon": int(runs.record_steps[-1]), "cum_reward": runs.cum_reward[:, -1],
            "cum_regret": runs.cum_regret[:, -1],
            "cum_oracle_regret": runs.cum_oracle_regret[:, -1], "best_arm": names[runs.best_arms],
            "best_arm_pulls": runs.best_arm_pulls, "oracle_arm_pulls": runs.oracle_arm_pulls,
        })
        for runs in results.policies if runs.n_runs
    ]
    if not frames:
        return pd.DataFrame(columns=list(RUNS_COLUMNS))
    return pd.concat(frames, ignore_index=True).loc[:, list(RUNS_COLUMNS)]


def _interval(mean: float, low: float, high: float, digits: int = 1) -> str:
    if np.isnan(mean):
        return "–"
    if np.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _p_value(p: float) -> str:
    if np.isnan(p):
        return ""
    return "p<0.001" if p < 1e-3 else f"p={p:.3f}"


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (the one printed at the end of ``simulate``)."""
    header = (
        "| policy | runs | cum. reward | regret (best fixed arm) | regret (each user's best) "
        "| best-arm share | vs best arm in hindsight | vs uniform random |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    row: Any  # pandas-stubs types an itertuples() field as any scalar; these are float/str
    for row in summary.itertuples(index=False):
        cells = [
            row.policy,
            str(row.runs),
            _interval(row.cum_reward_mean, row.cum_reward_ci_low, row.cum_reward_ci_high),
            _interval(row.cum_regret_mean, row.cum_regret_ci_low, row.cum_regret_ci_high),
            _interval(row.cum_oracle_regret_mean, row.cum_oracle_regret_ci_low,
                      row.cum_oracle_regret_ci_high),
            f"{row.best_arm_share:.1%}",
            " ".join(filter(None, (
                _interval(row.vs_hindsight_diff, row.vs_hindsight_ci_low,
                          row.vs_hindsight_ci_high),
                _p_value(row.vs_hindsight_p),
            ))),
            " ".join(filter(None, (
                _interval(row.vs_random_diff, row.vs_random_ci_low, row.vs_random_ci_high),
                _p_value(row.vs_random_p),
            ))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def summary_markdown(results: SimulationResults, summary: pd.DataFrame) -> str:
    """``summary.md``: what was run, the table, and how to read it."""
    config = results.config
    lines = [
        f"# {config.name}: {config.env.id}",
        "",
    ]
    if config.description:
        lines += [config.description, ""]
    lines += [
        f"- horizon: {config.horizon} steps; runs per policy: {config.runs}; seed: {config.seed}",
        f"- arms: {', '.join(results.arm_names)}",
    ]
    if results.notes:
        lines += [f"- note: {note}" for note in results.notes]
    if results.interrupted:
        lines.append(f"- **cut short**: {results.stop_note or 'interrupted'}; only the runs "
                     "finished before are reported")
    lines += [
        "",
        markdown_table(summary),
        "Cumulative reward and regret are means over runs at the horizon with the half-width of "
        "the 95% t-interval. Regrets are pseudo-regrets, exact from the environment's expected "
        "rewards: against the run's best fixed arm in hindsight (the arm with the highest "
        "expected reward summed over the run's users; negative when a contextual policy beats "
        "every fixed arm) and against each arriving user's own best arm. The best-arm share "
        "counts pulls of the run's best fixed arm. The last two columns are paired differences "
        "of final cumulative reward (this policy minus the baseline, run by run on the same "
        "users) with their 95% interval and the paired t-test.",
        "",
    ]
    if results.action_dependent and _baseline(results, HINDSIGHT_POLICY_ID) is not None:
        lines += [action_dependent_note(summary), ""]
    return "\n".join(lines)


def action_dependent_note(summary: pd.DataFrame) -> str:
    """Why, with boredom, a policy can have positive regret against the best fixed arm and yet
    collect more reward than the best arm in hindsight; names the policies where that happened.

    Parameters
    ----------
    summary : DataFrame
        :func:`summary_frame` of the results.
    """
    both = summary[(summary.cum_regret_mean > 0) & (summary.vs_hindsight_diff > 0)]
    example = ""
    if len(both):
        row = both.iloc[0]
        others = list(both.policy.iloc[1:])
        example = (
            f" Here {row.policy} has regret {row.cum_regret_mean:+.1f} against the best fixed "
            f"arm and yet collects {row.vs_hindsight_diff:+.1f} reward against the best arm in "
            "hindsight" + (f" (so do {', '.join(others)})" if others else "") + "."
        )
    return (
        "**Boredom: regret and reward can disagree.** In this environment what a user expects "
        "from an arm depends on what was shown before: an arm served again and again tires "
        "its users (and arms that learn online learn only from what they showed). The regret "
        "column scores the best fixed arm on the users as this policy "
        "left them (rested by varied lists), a level no fixed arm reaches when it is actually "
        "played every time. The best arm in hindsight does play its one arm every time, and its "
        "users tire of it, so a policy that switches arms can have positive regret against the "
        "best fixed arm and still collect more reward than the best arm in hindsight. The "
        "reward columns compare what each policy actually collected." + example
    )


#: The tables :func:`write_reports` writes into a run's folder.
REPORT_FILES = ("steps.csv", "summary.csv", "runs.csv", "summary.md")


def write_reports(results: SimulationResults, out_dir: Path) -> dict[str, Path]:
    """Write ``steps.csv``, ``summary.csv``, ``runs.csv`` and ``summary.md`` into ``out_dir``.

    Returns
    -------
    dict of str to Path
        The files written, keyed by file name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = steps_frame(results)
    summary = summary_frame(results)
    paths = {name: out_dir / name for name in REPORT_FILES}
    for frame, name in ((steps, "steps.csv"), (summary, "summary.csv"),
                        (runs_frame(results), "runs.csv")):
        write_whole(paths[name], partial(frame.to_csv, index=False,
                                         float_format=_FLOAT_FORMAT, lineterminator="\n"))
    text = summary_markdown(results, summary)
    write_whole(paths["summary.md"], lambda p: p.write_text(text, encoding="utf-8"))
    return paths

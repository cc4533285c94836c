"""Figures of a simulation, written as PNG files with titles, labelled axes and legends.

- ``regret.png`` / ``regret_logx.png``: mean cumulative regret against the best fixed arm in
  hindsight over time with 95% bands, on a
  linear and a logarithmic time axis (the latter with the slope of the Lai-Robbins lower bound
  where the arms' click rates are the same for every user, so the bound is defined).
- ``arm_share.png``: the share of runs choosing each arm over time, stacked, one panel per policy
  (the best-arm-in-hindsight panel says which arm each run fixed on).
- ``posteriors.png``: Beta posterior densities of each arm's click rate at a few checkpoints, from
  the clicks and pulls of one run of a Thompson-Sampling policy.
- ``click_rate.png``: each arm's expected click rate over the arriving users beside the click rate
  each policy observed when it pulled that arm.

Policies and arms are coloured from two palettes that share no colour (``POLICY_PALETTE``,
``ARM_PALETTE``), and a policy keeps its colour in every figure.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy import stats

from arms.data.files import write_whole
from experiments.config import BETA_POLICY_IDS, HINDSIGHT_POLICY_ID
from experiments.report import mean_ci
from experiments.results import FIGURE_FILES, PolicyRuns, SimulationResults

logger = logging.getLogger(__name__)

_DPI = 110


# Figures are built with matplotlib's object API (``Figure``, no pyplot): no global state, no
# backend switch, so importing this module in a notebook leaves its inline backend alone, and the
# functions return figures a notebook can show.
def _save(fig: Figure, path: Path) -> Path:
    return write_whole(path, lambda p: fig.savefig(p, dpi=_DPI))


#: Policies are drawn in tab10's saturated colours and arms in Set2's muted ones: the two sets
#: share no colour, so a blue line is never a policy in one figure and an arm in the next.
POLICY_PALETTE, ARM_PALETTE = "tab10", "Set2"
#: Line styles and markers cycled over policies, so lines that lie on top of each other (TS and
#: KL-UCB often do) stay distinguishable.
_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def policy_colours(results: SimulationResults) -> dict[str, tuple]:
    """Colour of each policy label, by its place in the config (stable across figures)."""
    colours = colormaps[POLICY_PALETTE].colors  # type: ignore[attr-defined]  # a ListedColormap
    return {runs.label: colours[i % len(colours)] for i, runs in enumerate(results.policies)}


def arm_colours(n_arms: int) -> list[tuple]:
    """Colours of ``n_arms`` arms, from a palette disjoint from the policies'."""
    colours = colormaps[ARM_PALETTE].colors  # type: ignore[attr-defined]  # a ListedColormap
    return [colours[k % len(colours)] for k in range(n_arms)]


def _active(results: SimulationResults) -> list[PolicyRuns]:
    return [runs for runs in results.policies if runs.n_runs > 0]


def lai_robbins_line(results: SimulationResults) -> tuple[float, np.ndarray] | None:
    """Lai-Robbins constant of the arms' click rates, when they are the same for every user.

    Returns ``(constant, means)`` or ``None`` when the expected rewards vary across users or
    steps (then no single Bernoulli bandit, and so no constant, describes the problem).
    """
    runs = _active(results)
    if not runs or not results.binary_rewards:
        return None
    first = runs[0]
    if not np.allclose(first.expected_min, first.expected_max, atol=1e-12):
        return None
    means = np.asarray(first.expected_min, dtype=np.float64)
    if np.all(means == means.max()):
        return None
    from bandits import lai_robbins_constant

    return float(lai_robbins_constant(means)), means


def regret_figure(results: SimulationResults, *, logx: bool = False) -> Figure:
    """Mean cumulative regret with 95% bands per policy (``logx`` for a log time axis)."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    colours = policy_colours(results)
    active = _active(results)
    for i, runs in enumerate(active):
        mean, low, high = mean_ci(runs.cum_regret)
        steps = runs.record_steps
        # Policies with near-equal regret overlap: each gets its own dash pattern and markers
        # at staggered steps, and the first listed is drawn on top.
        n_marks = 8
        offset = (i * max(1, len(steps) // n_marks)) // max(len(active), 1)
        (line,) = ax.plot(steps, mean, label=f"{runs.label} (n={runs.n_runs})", lw=1.6,
                          color=colours[runs.label], ls=_LINE_STYLES[i % len(_LINE_STYLES)],
                          marker=_MARKERS[i % len(_MARKERS)], markersize=4.5,
                          markevery=(offset, max(1, len(steps) // n_marks)),
                          zorder=3 + len(active) - i)
        if runs.n_runs > 1:
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, lw=0,
                            zorder=1)
    if logx:
        ax.set_xscale("log")
        bound = lai_robbins_line(results)
        anchor = posterior_policy(results)
        if bound is not None and anchor is not None:
            # The bound is asymptotic (regret >= C ln t as t grows): what a finite run can show is
            # the slope, so the line has slope C and passes through the anchor's final regret.
            constant, _ = bound
            T = anchor.record_steps[-1]
            final = float(anchor.cum_regret[:, -1].mean())
            t = np.geomspace(max(1.0, T * np.exp(-final / constant)), T, 200)
            ax.plot(t, final + constant * np.log(t / T), "k--", lw=1.2,
                    label=f"Lai-Robbins slope {constant:.2f}·ln t (asymptotic; "
                    f"through {anchor.label} at t={T})")
    ax.set_xlabel("step (users served)" + (", log scale" if logx else ""))
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylabel("cumulative regret vs best fixed arm\n(expected reward lost)")
    ax.set_title(
        f"{results.config.name}: cumulative regret, mean and 95% CI"
        + (" (log time)" if logx else "")
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _bins(horizon: int, n_bins: int = 100) -> np.ndarray:
    return np.unique(np.linspace(0, horizon, min(n_bins, horizon) + 1).astype(int))


def arm_share_figure(results: SimulationResults) -> Figure:
    """Stacked share of each arm among the runs' choices over time, one panel per policy."""
    active = _active(results)
    n = max(len(active), 1)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    edges = _bins(results.config.horizon)
    centres = (edges[:-1] + edges[1:]) / 2
    colours = arm_colours(len(results.arm_names))
    handles = []
    for ax, runs in zip(axes.flat, active, strict=False):
        binned = np.add.reduceat(runs.arm_counts, edges[:-1], axis=0)
        share = binned / binned.sum(axis=1, keepdims=True)
        handles = ax.stackplot(centres, share.T, labels=results.arm_names, colors=colours,
                               alpha=0.9)
        ax.set_title(runs.label, fontsize=10)
        if runs.policy_id == HINDSIGHT_POLICY_ID:
            ax.text(0.5, 0.5, hindsight_note(runs, results.arm_names), transform=ax.transAxes,
                    ha="center", va="center", fontsize=8.5, wrap=True,
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9, "lw": 0.5})
        ax.set_ylim(0, 1)
        ax.set_xlim(1, results.config.horizon)
    # Every panel with no panel below it shows the steps (one above an empty slot of the last
    # row had none: sharex hides them above the last row; found by attack).
    for i, ax in enumerate(axes.flat[:len(active)]):
        if i + ncols >= len(active):
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of pulls")
    for ax in list(axes.flat)[len(active):]:
        ax.axis("off")
    fig.suptitle(f"{results.config.name}: share of each arm chosen over time")
    if handles:
        fig.legend(handles, results.arm_names, loc="outside lower center",
                   ncol=len(results.arm_names), fontsize=9, title="arm")
    return fig


def hindsight_note(runs: PolicyRuns, arm_names: list[str]) -> str:
    r"""What the best-arm-in-hindsight panel shows: one fixed arm per run, not one overall.

    E.g. "Each run plays its own best arm:\nsequential in 5 of 8 runs,\nautoencoder in 3".
    """
    counts = np.bincount(runs.best_arms, minlength=len(arm_names))
    order = [k for k in np.argsort(-counts, kind="stable") if counts[k]]
    if len(order) == 1:
        return f"The best fixed arm is\n{arm_names[order[0]]} in all {runs.n_runs} runs"
    parts = [f"{arm_names[order[0]]} in {counts[order[0]]} of {runs.n_runs} runs"]
    parts += [f"{arm_names[k]} in {counts[k]}" for k in order[1:]]
    return "The best arm differs by run;\neach run plays its own:\n" + ",\n".join(parts)


def posterior_policy(results: SimulationResults) -> PolicyRuns | None:
    """The policy whose posteriors are plotted: the first Beta-posterior policy, else the first."""
    active = _active(results)
    for runs in active:
        if runs.policy_id in BETA_POLICY_IDS:
            return runs
    return active[0] if active else None


def posterior_figure(results: SimulationResults) -> Figure | None:
    """Beta(1 + clicks, 1 + misses) densities of each arm at the checkpoints of the first run.

    Returns ``None`` when rewards are not clicks (0/1), as a Beta posterior
    then describes nothing.
    """
    runs = posterior_policy(results)
    if runs is None or not results.binary_rewards:
        logger.info("posterior plot skipped: rewards are not binary clicks")
        return None
    checkpoints = runs.checkpoint_steps
    pulls = runs.checkpoint_pulls[0]  # (C, K), first run
    clicks = runs.checkpoint_clicks[0]
    true_means = runs.expected_sum[0] / runs.horizon
    upper = float(min(1.0, max(0.05, 2.2 * true_means.max() + 0.05)))
    colours = arm_colours(len(results.arm_names))
    fig = Figure(figsize=(3.6 * len(checkpoints), 3.8), layout="constrained")
    axes = fig.subplots(1, len(checkpoints), squeeze=False)
    for ax, step, n, s in zip(axes[0], checkpoints, pulls, clicks, strict=True):
        # Wide enough for each posterior's mass at this step: an early Beta(2, 3) was cut at
        # the range the true means set (found by attack).
        widest = float(stats.beta.ppf(0.995, 1 + s, 1 + n - s).max())
        x = np.linspace(0, min(1.0, max(upper, widest)), 600)
        for k, name in enumerate(results.arm_names):
            density = stats.beta.pdf(x, 1 + s[k], 1 + n[k] - s[k])
            ax.plot(x, density, color=colours[k], lw=1.8,
                    label=f"{name} ({int(s[k])}/{int(n[k])})")
            ax.axvline(true_means[k], color=colours[k], ls=":", lw=1.2)
        ax.set_title(f"after {int(step)} steps", fontsize=10)
        ax.set_xlabel("click rate")
        ax.legend(fontsize=7, title="arm (clicks/pulls)", title_fontsize=7)
    axes[0, 0].set_ylabel("posterior density")
    fig.suptitle(
        f"{results.config.name}: Beta posteriors of {runs.label}, run 1 "
        "(dotted: each arm's true mean click rate)"
    )
    return fig


def click_rate_figure(results: SimulationResults) -> Figure:
    """Expected click rate of each arm over the users beside each policy's observed rate."""
    active = _active(results)
    arms = results.arm_names
    n_groups = len(active) + 1
    width = 0.8 / n_groups
    x = np.arange(len(arms))
    fig = Figure(figsize=(max(7, 1.6 * len(arms) * n_groups / 3), 5.4), layout="constrained")
    ax = fig.subplots()
    colours = policy_colours(results)
    if active:
        first = active[0]
        expected = first.expected_sum.sum(axis=0) / (first.n_runs * first.horizon)
        ax.bar(x - 0.4 + width / 2, expected, width, color="0.35",
               label="expected over users (environment)")
    for i, runs in enumerate(active, start=1):
        pulls = runs.pulls.sum(axis=0).astype(np.float64)
        clicks = runs.clicks.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(pulls > 0, clicks / pulls, np.nan)
        ax.bar(x - 0.4 + width * (i + 0.5), rate, width, color=colours[runs.label],
               label=f"observed by {runs.label}")
    ax.set_xticks(x, arms)
    ax.set_xlabel("arm")
    ax.set_ylabel("click rate (reward per pull)")
    ax.set_title(f"{results.config.name}: click rate per arm")
    ax.grid(axis="y", alpha=0.3)
    # Below the axes, not inside: inside, the legend covered the tallest bars.
    fig.legend(loc="outside lower center", fontsize=8, ncol=min(n_groups, 4))
    return fig


def write_plots(results: SimulationResults, out_dir: Path) -> dict[str, Path]:
    """Write every figure into ``out_dir`` (those of :data:`~experiments.results.FIGURE_FILES`
    that apply); returns the files written keyed by name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = dict(zip(FIGURE_FILES, (
        regret_figure(results), regret_figure(results, logx=True), arm_share_figure(results),
        click_rate_figure(results), posterior_figure(results)), strict=True))
    return {name: _save(fig, out_dir / name) for name, fig in figures.items() if fig is not None}

"""Report arithmetic on hand-made results: intervals, paired comparisons, CSV schema, plots."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments import plots, report
from experiments.config import EnvConfig, ExperimentConfig, PolicyConfig
from experiments.simulate import PolicyRuns, SimulationResults, checkpoint_steps, record_steps

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _runs(label, policy_id, rates, rng, *, n_runs=6, horizon=40, every=10):
    """Runs of a fixed-rate 'policy' that pulls arm a with probability rates[a]."""
    K = len(rates)
    means = np.array([0.2, 0.5, 0.3])[:K]
    steps = record_steps(horizon, every)
    arms = rng.choice(K, size=(n_runs, horizon), p=rates)
    rewards = (rng.random((n_runs, horizon)) < means[arms]).astype(float)
    regret = means.max() - means[arms]
    pulls = np.stack([(arms == k).sum(axis=1) for k in range(K)], axis=1)
    clicks = np.stack([(rewards * (arms == k)).sum(axis=1) for k in range(K)], axis=1)
    chk = np.array([10, horizon])
    return PolicyRuns(
        label=label, policy_id=policy_id, horizon=horizon,
        run_ids=np.arange(n_runs), record_steps=steps,
        cum_reward=rewards.cumsum(axis=1)[:, steps - 1],
        cum_regret=regret.cumsum(axis=1)[:, steps - 1],
        cum_oracle_regret=regret.cumsum(axis=1)[:, steps - 1],
        best_arms=np.full(n_runs, means.argmax()),
        best_arm_pulls=(arms == means.argmax()).sum(axis=1),
        oracle_arm_pulls=(arms == means.argmax()).sum(axis=1),
        arm_counts=np.stack([(arms == k).sum(axis=0) for k in range(K)], axis=1),
        pulls=pulls, clicks=clicks,
        expected_sum=np.tile(means * horizon, (n_runs, 1)),
        expected_min=means.copy(), expected_max=means.copy(),
        checkpoint_steps=chk,
        checkpoint_pulls=np.stack([pulls // 4, pulls], axis=1),
        checkpoint_clicks=np.stack([clicks // 4, clicks], axis=1),
    )  # fmt: skip


@pytest.fixture
def results():
    rng = np.random.default_rng(5)
    config = ExperimentConfig(
        name="hand", env=EnvConfig("recbandits/FixedCTR-v0"), horizon=40, runs=6, seed=3,
        policies=(PolicyConfig("ThompsonSampling", "TS"), PolicyConfig("RandomPolicy", "random"),
                  PolicyConfig("BestArmInHindsight", "hindsight")),
    )
    return SimulationResults(
        config=config, arm_names=["svd", "sequential", "autoencoder"],
        policies=[_runs("TS", "ThompsonSampling", [0.1, 0.8, 0.1], rng),
                  _runs("random", "RandomPolicy", [1 / 3] * 3, rng),
                  _runs("hindsight", "BestArmInHindsight", [0, 1, 0], rng)],
    )


def test_mean_ci_matches_scipy_t_interval():
    x = np.random.default_rng(0).normal(3, 2, size=(12, 4))
    mean, low, high = report.mean_ci(x)
    for j in range(4):
        lo, hi = stats.t.interval(0.95, 11, loc=x[:, j].mean(), scale=stats.sem(x[:, j]))
        assert low[j] == pytest.approx(lo) and high[j] == pytest.approx(hi)
    assert np.allclose(mean, x.mean(axis=0))
    single = report.mean_ci(x[:1])
    assert np.isnan(single[1]).all() and np.allclose(single[0], x[0])


def test_paired_comparison_uses_run_by_run_differences():
    rng = np.random.default_rng(1)
    users = rng.normal(100, 30, size=20)  # shared variation, cancelled by pairing
    a = users + 5 + rng.normal(0, 1, 20)
    b = users + rng.normal(0, 1, 20)
    diff, low, high, p = report.paired_comparison(a, b)
    assert diff == pytest.approx(np.mean(a - b))
    assert low < diff < high and high - low < 2.0  # unpaired would be ~ 40 wide
    assert p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert report.paired_comparison(a, a)[3] == 1.0


def test_steps_frame_schema_and_values(results):
    steps = report.steps_frame(results)
    assert tuple(steps.columns) == report.STEPS_COLUMNS
    assert len(steps) == 3 * 4  # three policies, steps 10, 20, 30, 40
    ts = steps[steps.policy == "TS"]
    assert ts.step.tolist() == [10, 20, 30, 40]
    np.testing.assert_allclose(ts.cum_regret_mean, results.policies[0].cum_regret.mean(axis=0))
    assert (ts.cum_regret_ci_low <= ts.cum_regret_mean).all()
    assert (ts.cum_reward_ci_high >= ts.cum_reward_mean).all()
    hind = steps[steps.policy == "hindsight"]
    assert (hind.cum_regret_mean == 0).all()


def test_summary_frame_columns_and_comparisons(results):
    summary = report.summary_frame(results)
    assert tuple(summary.columns) == report.SUMMARY_COLUMNS
    ts, random, hindsight = (summary.iloc[i] for i in range(3))
    assert ts.runs == 6 and ts.horizon == 40
    runs = results.policies[0]
    assert ts.best_arm_share == pytest.approx(runs.best_arm_pulls.sum() / (6 * 40))
    assert hindsight.best_arm_share == 1.0
    expected = np.mean(runs.cum_reward[:, -1] - results.policies[1].cum_reward[:, -1])
    assert ts.vs_random_diff == pytest.approx(expected)
    assert random.vs_random_diff == 0.0 and random.vs_random_p == 1.0
    assert hindsight.vs_hindsight_diff == 0.0


def test_summary_without_baselines_leaves_comparisons_empty(results):
    results.policies = results.policies[:1]
    summary = report.summary_frame(results)
    assert summary[["vs_hindsight_diff", "vs_random_diff"]].isna().all().all()
    assert "–" in report.markdown_table(summary)


def test_write_reports_and_plots(results, tmp_path):
    files = report.write_reports(results, tmp_path)
    assert set(files) == {"steps.csv", "summary.csv", "runs.csv", "summary.md"}
    assert tuple(pd.read_csv(files["summary.csv"]).columns) == report.SUMMARY_COLUMNS
    text = files["summary.md"].read_text()
    assert "| TS | 6 |" in text and "recbandits/FixedCTR-v0" in text
    pngs = plots.write_plots(results, tmp_path)
    assert set(pngs) == {"regret.png", "regret_logx.png", "arm_share.png", "click_rate.png",
                         "posteriors.png"}
    for path in pngs.values():
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 10_000


def test_figures_have_titles_labels_and_legends(results):
    fig = plots.regret_figure(results, logx=True)
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("TS") for label in labels)
    assert any("Lai-Robbins" in label for label in labels)  # constant click rates
    share = plots.arm_share_figure(results)
    assert share.legends and {t.get_text() for t in share.legends[0].get_texts()} == set(
        results.arm_names)
    posterior = plots.posterior_figure(results)
    assert posterior.axes[0].get_legend() is not None and posterior.axes[0].get_xlabel()


def test_record_and_checkpoint_steps():
    assert record_steps(10, 3).tolist() == [3, 6, 9, 10]
    assert record_steps(5, 1).tolist() == [1, 2, 3, 4, 5]
    config = ExperimentConfig(name="x", env=EnvConfig("recbandits/FixedCTR-v0"),
                              policies=(PolicyConfig("UCB1", "UCB1"),), horizon=5000)
    assert checkpoint_steps(config).tolist() == [10, 100, 500, 5000]


def test_policies_and_arms_never_share_a_colour(results):
    policy = set(plots.policy_colours(results).values())
    assert len(policy) == len(results.policies)  # one colour per policy
    # Every colour either palette can give, so no config of up to 10 policies and 8 arms mixes.
    all_policy = {plots.policy_colours(dataclasses.replace(
        results, policies=[dataclasses.replace(results.policies[0], label=str(i))
                           for i in range(10)]))[str(i)] for i in range(10)}
    assert all_policy.isdisjoint(plots.arm_colours(8))
    share = plots.arm_share_figure(results)
    stack_colours = {tuple(c.get_facecolor()[0][:3]) for c in share.axes[0].collections}
    assert stack_colours == {tuple(c) for c in plots.arm_colours(3)}
    click = plots.click_rate_figure(results)
    bar_colours = {tuple(p.get_facecolor()[:3]) for p in click.axes[0].patches}
    assert bar_colours.isdisjoint(stack_colours)


def test_click_rate_legend_covers_no_bar(results):
    fig = plots.click_rate_figure(results)
    fig.draw_without_rendering()
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent()
    assert not [p for p in ax.patches if p.get_window_extent().overlaps(legend)]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "expected over users (environment)" and "observed by TS" in labels


def test_regret_lines_stay_visible_when_they_coincide(results):
    twin = dataclasses.replace(results.policies[0], label="TS twin", policy_id="KLUCB")
    same = dataclasses.replace(results, policies=[results.policies[0], twin])
    ax = plots.regret_figure(same).axes[0]
    ts, other = (line for line in ax.get_lines() if line.get_label().startswith("TS"))
    np.testing.assert_array_equal(ts.get_ydata(), other.get_ydata())  # exactly on top
    assert ts.get_linestyle() != other.get_linestyle() and ts.get_marker() != other.get_marker()
    assert ts.get_zorder() > other.get_zorder()  # the first listed policy on top
    assert ts.get_color() != other.get_color()


def test_hindsight_panel_says_the_best_arm_differs_by_run(results):
    hindsight = results.policies[2]
    assert plots.hindsight_note(hindsight, results.arm_names) == (
        "The best fixed arm is\nsequential in all 6 runs")
    mixed = dataclasses.replace(hindsight, best_arms=np.array([1, 2, 1, 1, 0, 2]))
    note = plots.hindsight_note(mixed, results.arm_names)
    assert note == ("The best arm differs by run;\neach run plays its own:\n"
                    "sequential in 3 of 6 runs,\nautoencoder in 2,\nsvd in 1")
    fig = plots.arm_share_figure(dataclasses.replace(
        results, policies=[*results.policies[:2], mixed]))
    panel = next(ax for ax in fig.axes if ax.get_title() == "hindsight")
    assert [t.get_text() for t in panel.texts] == [note]
    assert not any(ax.texts for ax in fig.axes if ax is not panel)


def test_summary_explains_boredom_only_where_actions_change_expectations(results):
    summary = report.summary_frame(results)
    assert "Boredom" not in report.summary_markdown(results, summary)
    bored = dataclasses.replace(results, action_dependent=True)
    text = report.summary_markdown(bored, summary)
    assert "**Boredom: regret and reward can disagree.**" in text
    # The drift run of the issue: TS +25.4 regret against the best fixed arm, yet more reward
    # than the best arm in hindsight; the note names it with both numbers.
    paradox = summary.copy()
    paradox.loc[paradox.policy == "TS", ["cum_regret_mean", "vs_hindsight_diff"]] = [25.4, 31.0]
    note = report.action_dependent_note(paradox)
    assert note.endswith("Here TS has regret +25.4 against the best fixed arm and yet collects "
                         "+31.0 reward against the best arm in hindsight.")
    no_hindsight = dataclasses.replace(bored, policies=results.policies[:2])
    assert "Boredom" not in report.summary_markdown(no_hindsight,
                                                    report.summary_frame(no_hindsight))


def test_every_arm_share_panel_without_one_below_shows_its_steps(results):
    """Five panels on a 3 x 2 grid: the third (above the empty slot) had no step labels, as
    sharex hides them above the last row (found by attack)."""
    five = dataclasses.replace(results, policies=[
        dataclasses.replace(results.policies[0], label=f"p{i}") for i in range(5)])
    fig = plots.arm_share_figure(five)
    panels = [ax for ax in fig.axes if ax.axison][:5]
    fig.canvas.draw()  # tick labels get their text when drawn
    labelled = [ax.get_xlabel() == "step" and any(
        t.get_visible() and t.get_text() for t in ax.get_xticklabels()) for ax in panels]
    assert labelled == [False, False, True, True, True]


def test_each_posterior_panel_holds_its_posteriors_mass(results):
    """An early posterior (Beta(2, 3) after a few pulls) was cut at the range the true means
    set, 0.38 (found by attack): each panel now reaches its widest posterior's 99.5% point."""
    import copy

    from scipy import stats

    early = copy.deepcopy(results)
    runs = plots.posterior_policy(early)
    runs.checkpoint_pulls[0][0] = 1  # the first checkpoint: one pull of each arm, one click
    runs.checkpoint_clicks[0][0] = 0
    runs.checkpoint_clicks[0][0][0] = 1
    runs.expected_sum[0] = np.array([0.10, 0.15, 0.12]) * runs.horizon  # range 0.38 before
    fig = plots.posterior_figure(early)
    for ax, n, s in zip(fig.axes, runs.checkpoint_pulls[0], runs.checkpoint_clicks[0],
                        strict=False):
        right = max(line.get_xdata().max() for line in ax.get_lines() if len(line.get_xdata()) > 2)
        assert right >= min(1.0, float(stats.beta.ppf(0.995, 1 + s, 1 + n - s).max())) - 1e-12

"""``recbandits simulate`` end to end on a small FixedCTR config: files, schema, determinism,
executors, the best arm in hindsight, and interruption."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import config as cfg
from experiments import report, simulate
from experiments.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = """\
name = "small"
horizon = 300
runs = 6
seed = 11
runs_per_task = 3
record_every = 10

[env]
id = "recbandits/FixedCTR-v0"

[[policies]]
id = "ThompsonSampling"
label = "TS"

[[policies]]
id = "EpsilonGreedy"
label = "eps"
[policies.params]
epsilon = 0.1

[[policies]]
id = "RandomPolicy"
label = "random"

[[policies]]
id = "BestArmInHindsight"
label = "hindsight"
"""


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL, encoding="utf-8")
    return path


def _run(config, **changes):
    changes.setdefault("workers", 1)  # in-process: no worker start-up (workers=2 is tested)
    return simulate.run(cfg.override(cfg.load(config), **changes), write=False, progress=False)


def test_cli_end_to_end(small_config, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["simulate", str(small_config), "--out", str(out), "--workers", "1", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| TS | 6 |" in printed and str(out / "summary.csv") in printed

    expected = {"config.toml", "steps.csv", "summary.csv", "runs.csv", "summary.md", "regret.png",
                "regret_logx.png", "arm_share.png", "click_rate.png", "posteriors.png"}
    assert {p.name for p in out.iterdir()} == expected == set(simulate.RUN_FILES)
    for name in expected:
        if name.endswith(".png"):
            data = (out / name).read_bytes()
            assert data[:8] == PNG_SIGNATURE and len(data) > 10_000, name

    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["seed"] == 11 and resolved["meta"]["recbandits_version"]
    assert cfg.from_dict(resolved).policies == cfg.load(small_config).policies

    steps = pd.read_csv(out / "steps.csv")
    assert tuple(steps.columns) == report.STEPS_COLUMNS
    assert len(steps) == 4 * 30 and set(steps.policy) == {"TS", "eps", "random", "hindsight"}
    assert (steps.runs == 6).all()
    assert (steps.cum_regret_ci_low <= steps.cum_regret_mean + 1e-12).all()
    # each user's best arm is at least as good as any fixed arm, step by step
    assert (steps.cum_oracle_regret_mean >= steps.cum_regret_mean - 1e-9).all()
    summary = pd.read_csv(out / "summary.csv")
    assert tuple(summary.columns) == report.SUMMARY_COLUMNS
    assert summary.set_index("policy").loc["hindsight", "cum_regret_mean"] == 0
    final = steps[steps.step == 300].set_index("policy")
    np.testing.assert_allclose(
        final.cum_regret_mean, summary.set_index("policy").loc[final.index, "cum_regret_mean"]
    )


def test_a_run_into_a_previous_runs_folder_leaves_none_of_its_files(small_config, tmp_path):
    """Found by attack: ``simulate --out`` into an older run's folder wrote the new tables
    beside the old run's plots, so the folder mixed two runs. Only the run's own file names
    are cleared: a file of the user's stays."""
    out = tmp_path / "out"
    argv = ["simulate", str(small_config), "--out", str(out), "--workers", "1", "-q",
            "--horizon", "40", "--runs", "2", "--policies", "TS", "random"]
    assert main(argv) == 0
    assert {p.name for p in out.glob("*.png")} == {"regret.png", "regret_logx.png",
                                                   "arm_share.png", "click_rate.png",
                                                   "posteriors.png"}
    (out / "notes.txt").write_text("mine")
    assert main([*argv, "--no-plots", "--seed", "12"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "notes.txt", "runs.csv",
                                                     "steps.csv", "summary.csv", "summary.md"]
    assert (out / "notes.txt").read_text() == "mine"
    assert tomllib.loads((out / "config.toml").read_text())["seed"] == 12


def test_ctrl_c_while_writing_leaves_the_earlier_run_whole(small_config, tmp_path,
                                                           monkeypatch):
    """Found by review: the files were replaced one at a time as they were written, so a
    Ctrl-C during the plots (seconds) left the new run's config and tables beside the earlier
    run's figures. The earlier run's files must stay byte for byte, and nothing be left over."""
    from experiments import plots

    out = tmp_path / "out"
    argv = ["simulate", str(small_config), "--out", str(out), "--workers", "1", "-q",
            "--horizon", "40", "--runs", "2", "--policies", "TS", "random"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = plots.write_plots

    def interrupted(results, out_dir):  # one figure written, then Ctrl-C
        real(results, out_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "write_plots", interrupted)
    assert main([*argv, "--seed", "12"]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name != small_config.name] == ["out"]
    monkeypatch.setattr(plots, "write_plots", real)
    assert main([*argv, "--seed", "12", "--no-plots"]) == 0  # and a finished run replaces it
    assert tomllib.loads((out / "config.toml").read_text())["seed"] == 12
    assert not list(out.glob("*.png"))


def test_ctrl_c_during_the_swap_is_held_until_it_is_done(tmp_path, monkeypatch):
    """The swap of a run's files is not cut half way: a SIGINT during it is raised after."""
    import os
    import signal

    from arms.data import files

    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.csv", "b.csv", "c.png"):
        (out / name).write_text(f"old {name}")
    real_replace = os.replace

    def replace_then_ctrl_c(src, dst):  # Ctrl-C arrives after the first rename
        real_replace(src, dst)
        signal.raise_signal(signal.SIGINT)

    names = ["a.csv", "b.csv", "c.png"]
    with pytest.raises(KeyboardInterrupt), files.staged_run_folder(out, names) as new:
        (new / "a.csv").write_text("new a.csv")
        (new / "b.csv").write_text("new b.csv")
        monkeypatch.setattr(files.os, "replace", replace_then_ctrl_c)
    assert sorted((p.name, p.read_text()) for p in out.iterdir()) == [
        ("a.csv", "new a.csv"), ("b.csv", "new b.csv")]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_learning_shows_in_the_numbers(small_config):
    results = _run(small_config, horizon=3000, runs=12, runs_per_task=12,
                   policies=["TS", "random"])
    summary = results.summary.set_index("policy")
    # FixedCTR seed story: sequential (0.15) is best; random loses 1/3 * (0.05 + 0.03) per step.
    assert summary.loc["random", "cum_regret_mean"] == pytest.approx(3000 * 0.08 / 3, rel=0.1)
    assert summary.loc["TS", "cum_regret_mean"] < 0.6 * summary.loc["random", "cum_regret_mean"]
    assert summary.loc["TS", "best_arm_share"] > 0.6
    assert summary.loc["TS", "vs_random_diff"] > 0
    assert results.arm_names[int(np.argmax(results.policy("TS").pulls.sum(axis=0)))] == \
        results.arm_names[int(np.argmax(results.policy("TS").expected_sum[0]))]


def test_same_seed_gives_identical_csvs(small_config, tmp_path):
    for name, seed in (("a", "11"), ("b", "11"), ("c", "12")):
        assert main(["simulate", str(small_config), "--out", str(tmp_path / name), "--seed", seed,
                     "--workers", "1", "--no-plots", "-q"]) == 0
    assert not list((tmp_path / "a").glob("*.png"))
    for csv in ("steps.csv", "summary.csv", "runs.csv"):
        assert (tmp_path / "a" / csv).read_bytes() == (tmp_path / "b" / csv).read_bytes()
        assert (tmp_path / "a" / csv).read_bytes() != (tmp_path / "c" / csv).read_bytes()


def test_results_do_not_depend_on_workers(small_config):
    in_process = _run(small_config, workers=1)
    two_processes = _run(small_config, workers=2)
    pd.testing.assert_frame_equal(in_process.steps, two_processes.steps)
    pd.testing.assert_frame_equal(in_process.summary, two_processes.summary)


def test_users_of_a_run_do_not_depend_on_the_task_split(small_config):
    one_task = _run(small_config, runs_per_task=6)
    three_tasks = _run(small_config, runs_per_task=2)
    for label in ("TS", "hindsight"):
        np.testing.assert_array_equal(one_task.policy(label).expected_sum,
                                      three_tasks.policy(label).expected_sum)
    # The best arm in hindsight draws nothing, so its runs are the same whatever the split.
    np.testing.assert_array_equal(one_task.policy("hindsight").cum_reward,
                                  three_tasks.policy("hindsight").cum_reward)


def test_policy_subset_keeps_its_runs(small_config):
    full = _run(small_config)
    only_ts = _run(small_config, policies=["TS"])
    np.testing.assert_array_equal(full.policy("TS").cum_reward, only_ts.policy("TS").cum_reward)


def test_paired_runs_see_the_same_users(small_config):
    results = _run(small_config)
    a, b = results.policy("TS"), results.policy("random")
    np.testing.assert_array_equal(a.expected_sum, b.expected_sum)


def test_interrupt_keeps_finished_runs(small_config, monkeypatch, tmp_path):
    real = simulate.simulate_task
    calls = {"n": 0}

    def flaky(task):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(simulate, "simulate_task", flaky)
    config = cfg.override(cfg.load(small_config), workers=1)
    results = simulate.run(config, out_dir=tmp_path / "cut", progress=False)
    assert results.interrupted
    runs = {p.label: p.n_runs for p in results.policies}
    assert runs == {"TS": 6, "eps": 3, "random": 0, "hindsight": 0}
    summary = pd.read_csv(tmp_path / "cut" / "summary.csv")
    assert summary.policy.tolist() == ["TS", "eps"]
    assert "interrupted" in (tmp_path / "cut" / "summary.md").read_text()


def test_bad_policy_parameter_fails_before_running(small_config, tmp_path):
    text = SMALL.replace("epsilon = 0.1", "epsilon = 1.5")
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(cfg.ConfigError, match=r"policy 'eps'.*epsilon"):
        simulate.run(path, write=False, progress=False)
    assert main(["simulate", str(path), "--out", str(tmp_path / "x"), "-q"]) == 2
    assert not (tmp_path / "x").exists()


def test_a_policy_state_over_the_ceiling_is_one_line_and_exit_2(tmp_path, capsys):
    # found by attack: a window of 10**12 ended in a traceback through joblib; a task's block
    # of runs is checked too (50 runs of a 10**6 window: 745 MiB, 400 runs: 5.96 GiB)
    for window, runs, pattern in ((10**12, 6, "the state of one run would take 14.6 TiB"),
                                  (10**6, 400, "the state of 400 runs would take 5.96 GiB")):
        text = SMALL.replace('id = "ThompsonSampling"\nlabel = "TS"',
                             'id = "SlidingWindowThompsonSampling"\nlabel = "TS"\n'
                             f"[policies.params]\nwindow = {window}")
        text = text.replace("runs = 6\n", f"runs = {runs}\n").replace(
            "runs_per_task = 3", f"runs_per_task = {runs}")
        path = tmp_path / "big.toml"
        path.write_text(text, encoding="utf-8")
        assert main(["simulate", str(path), "--out", str(tmp_path / "x"), "-q"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert "policy 'TS' (SlidingWindowThompsonSampling)" in err and pattern in err, err
        assert "at most 2 GiB (MAX_STATE_BYTES)" in err
        assert not (tmp_path / "x").exists()


def test_cli_unknown_policy_lists_valid_ids(small_config, capsys):
    code = main(["simulate", str(small_config), "--policies", "Thompson", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--policies: unknown policy 'Thompson'" in err and "ThompsonSampling" in err
    assert "LinTS" in err


def test_synthetic_fallback_is_labelled_synthetic_everywhere(monkeypatch, tmp_path):
    # MovieLens cannot be had: probe_env falls back to the synthetic dataset (a small one here,
    # so the arms fit in a second). The shipped movielens config must then not say MovieLens in
    # its folder name, plot titles or description; only the note says what happened.
    from arms.errors import DataUnavailableError

    real_env, real_synthetic = simulate.make_vector_env, simulate._synthetic

    def no_movielens(env_id, params, n, horizon):
        if simulate.dataset_name(params) != "synthetic":
            raise DataUnavailableError("MovieLens 100K not found (test)")
        return real_env(env_id, params, n, horizon)

    small = (("min_user_ratings", 10), ("n_items", 120), ("n_ratings", 3000), ("n_users", 80))
    monkeypatch.setattr(simulate, "make_vector_env", no_movielens)
    monkeypatch.setattr(simulate, "_synthetic", lambda options: real_synthetic(options or small))
    monkeypatch.chdir(tmp_path)  # the default folder is runs/<name>-<timestamp>/ under here
    notes: list[str] = []
    config = cfg.override(cfg.load("movielens"), horizon=30, runs=2, runs_per_task=2,
                          workers=1, policies=["Thompson Sampling", "best arm in hindsight"])
    results = simulate.run(config, progress=False, on_note=notes.append)

    assert results.out_dir.parent == Path("runs")  # relative to the working folder
    assert results.out_dir.name.startswith("synthetic-")
    assert results.config.name == "synthetic"
    assert results.config.description == (
        "SVD, sequential, autoencoder (DLAE) and popularity arms on held-out synthetic users. "
        "Policies run: Thompson Sampling, best arm in hindsight (chosen on the command line).")
    assert len(notes) == 1 and "running on the synthetic dataset" in notes[0]

    summary = (results.out_dir / "summary.md").read_text(encoding="utf-8").splitlines()
    assert summary[0] == "# synthetic: recbandits/MovieLens-v0"  # the environment's id stays
    assert summary[2] == results.config.description
    mentions = [line for line in summary[1:] if "movielens" in line.lower()]
    assert mentions == [f"- note: {notes[0]}"]
    written = tomllib.loads((results.out_dir / "config.toml").read_text(encoding="utf-8"))
    assert written["name"] == "synthetic" and written["env"]["params"]["dataset"] == "synthetic"

    from experiments import plots

    titles = [plots.regret_figure(results), plots.regret_figure(results, logx=True),
              plots.arm_share_figure(results), plots.click_rate_figure(results),
              plots.posterior_figure(results)]
    for fig in titles:
        texts = [ax.get_title() for ax in fig.axes] + [fig.get_suptitle()]
        heading = next(t for t in texts if t.startswith(("synthetic", "movielens")))
        assert heading.startswith("synthetic: "), heading
        assert not any("movielens" in t.lower() for t in texts), texts


def test_label_dataset_leaves_other_datasets_alone():
    movielens = cfg.load("movielens_drift")
    assert simulate.label_dataset(movielens) is movielens
    fixed = cfg.load("fixed_ctr")
    assert simulate.label_dataset(fixed) is fixed
    drift = simulate.label_dataset(_with_params(movielens, dataset="synthetic"))
    assert drift.name == "synthetic_drift"
    assert drift.description.startswith("Latent-factor synthetic users whose tastes drift")
    mine = simulate.label_dataset(_with_params(
        dataclasses.replace(fixed, name="mine", description=""),
        dataset={"name": "synthetic", "n_ratings": 2000}))
    assert (mine.name, mine.description) == ("mine-synthetic", "On the synthetic dataset.")


def _with_params(config, **params):
    env = dataclasses.replace(config.env, params={**config.env.params, **params})
    return dataclasses.replace(config, env=env)


def test_an_interrupted_run_says_which_finished_blocks_it_leaves_out():
    """A policy's block finished after one of its blocks did not is left out (run r must be
    the same users for every policy); the warning said "reporting the 2 of 12 tasks that
    finished" while the summary held one (found by attack)."""
    from types import SimpleNamespace

    tasks = [SimpleNamespace(policy_index=p) for p in (0, 0, 0, 1, 1)]
    assert simulate._leading(tasks, {0, 2, 3, 4}) == [0, 3, 4]  # task 2 waits on task 1
    assert simulate._leading(tasks, {1, 2}) == []
    assert simulate._leading(tasks, set(range(5))) == [0, 1, 2, 3, 4]
    assert simulate.interrupted_note(tasks, {0, 2, 3, 4}) == (
        "interrupted: reporting 3 of the 5 tasks (1 more finished after an unfinished block "
        "of their policy, left out so that run r of every policy is the same users)")
    assert simulate.interrupted_note(tasks, {0, 3}) == "interrupted: reporting 2 of the 5 tasks"


def _lost(monkeypatch, when: int, error: BaseException) -> None:
    """Make the ``when``-th task (1-based, in-process) raise ``error``, as an executor does
    when a worker or the scheduler goes away (or Ctrl-C is pressed)."""
    real = simulate.simulate_task
    calls = {"n": 0}

    def failing(task):
        calls["n"] += 1
        if calls["n"] == when:
            raise error
        return real(task)

    monkeypatch.setattr(simulate, "simulate_task", failing)


def test_a_lost_worker_reports_the_finished_runs_as_ctrl_c_does(small_config, monkeypatch,
                                                                tmp_path, capsys):
    """Found by attack: a worker killed mid-run was a 34-line traceback (exit 1), the finished
    runs not reported, and the earlier run's tables in --out deleted. The one path of Ctrl-C
    now: the leading finished blocks written and reported, one line saying why, exit 1."""
    from experiments.executors import WorkerLostError

    out = tmp_path / "run"
    argv = ["simulate", str(small_config), "--workers", "1", "-q", "--out", str(out)]
    assert main(argv) == 0  # an earlier run, with plots
    capsys.readouterr()
    _lost(monkeypatch, 4, WorkerLostError("a local worker process was lost (X: gone)"))
    assert main([*argv, "--no-plots", "--seed", "3"]) == simulate_cut_short()
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "recbandits simulate: a local worker process was lost (X: gone): reporting 3 of the 8 "
        "tasks; the runs finished are reported above")
    assert "| TS | 6 |" in captured.out and "| eps | 3 |" in captured.out
    summary = pd.read_csv(out / "summary.csv")
    assert summary.policy.tolist() == ["TS", "eps"] and summary.runs.tolist() == [6, 3]
    assert "- **cut short**: a local worker process was lost (X: gone): reporting 3 of the 8 " \
        "tasks" in (out / "summary.md").read_text()
    assert tomllib.loads((out / "config.toml").read_text())["seed"] == 3  # this run's
    # The earlier run's figures are not this run's: removed once this run's files are written.
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "runs.csv", "steps.csv",
                                                     "summary.csv", "summary.md"]


def simulate_cut_short() -> int:
    from experiments.cli import SIMULATE_CUT_SHORT

    assert SIMULATE_CUT_SHORT not in (0, 2, 130)
    return SIMULATE_CUT_SHORT


@pytest.mark.parametrize("stop", ["ctrl-c", "lost"])
def test_a_run_stopped_before_any_run_finished_says_so_and_keeps_the_earlier_files(
        small_config, monkeypatch, tmp_path, capsys, stop):
    """Found by attack: Ctrl-C before any run had finished printed a table of headers only,
    wrote headers-only CSVs and said "the runs finished before Ctrl-C are reported above"."""
    out = tmp_path / "run"
    argv = ["simulate", str(small_config), "--workers", "1", "-q", "--no-plots", "--out",
            str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    if stop == "ctrl-c":
        error: BaseException = KeyboardInterrupt()
    else:
        from experiments.executors import WorkerLostError

        error = WorkerLostError("the Dask scheduler x was lost (Y)")
    _lost(monkeypatch, 1, error)
    assert main([*argv, "--seed", "3"]) == (130 if stop == "ctrl-c" else simulate_cut_short())
    captured = capsys.readouterr()
    why = "interrupted by Ctrl-C" if stop == "ctrl-c" else "the Dask scheduler x was lost (Y)"
    assert captured.err.strip() == (f"recbandits simulate: {why}: no run had finished; nothing "
                                    "reported, nothing written")
    assert captured.out == ""
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_worker_process_that_dies_is_a_worker_lost_error():
    """joblib's TerminatedWorkerError (a real worker ending itself: no timing involved) is
    the executor's WorkerLostError, naming what was lost."""
    import os

    from experiments.executors import LocalExecutor, WorkerLostError

    with pytest.raises(WorkerLostError, match=r"^a local worker process was lost "
                       r"\(TerminatedWorkerError: ") as lost, LocalExecutor(workers=2) as ex:
        list(ex.imap_unordered(os._exit, [3, 3]))
    assert "\n" not in str(lost.value)


def test_summary_csv_is_recomputed_from_runs_csv(small_config, tmp_path):
    """Found by attack: simulate wrote only means and intervals, so no user could recompute
    them. runs.csv holds each policy's runs; summary.csv's figures follow from it."""
    from scipy import stats

    out = tmp_path / "out"
    assert main(["simulate", str(small_config), "--out", str(out), "--workers", "1", "-q",
                 "--no-plots", "--horizon", "60"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert tuple(runs.columns) == report.RUNS_COLUMNS
    summary = pd.read_csv(out / "summary.csv").set_index("policy")
    assert sorted(runs.groupby("policy").run.apply(list).to_dict().items()) == [
        (label, list(range(6))) for label in sorted(summary.index)]
    for label, rows in runs.groupby("policy"):
        row = summary.loc[label]
        for column in ("cum_reward", "cum_regret", "cum_oracle_regret"):
            values = rows[column].to_numpy()
            half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(6)
            np.testing.assert_allclose(
                [row[f"{column}_mean"], row[f"{column}_ci_low"], row[f"{column}_ci_high"]],
                [values.mean(), values.mean() - half, values.mean() + half], rtol=1e-8)
        steps = rows.horizon * len(rows)
        assert row.best_arm_share == pytest.approx(rows.best_arm_pulls.sum() / steps.iloc[0])
        random = runs[runs.policy == "random"].cum_reward.to_numpy()
        assert row.vs_random_diff == pytest.approx(np.mean(rows.cum_reward.to_numpy() - random))


def test_runs_csv_names_the_best_arm(small_config):
    """Review: runs.csv's best_arm was the arm's index (1), while the README says the best
    fixed arm and summary.md and the plots name arms."""
    results = _run(small_config, horizon=40, runs=2, policies=["TS"])
    runs = report.runs_frame(results)
    expected = [results.arm_names[i] for i in results.policy("TS").best_arms]
    assert runs.best_arm.tolist() == expected
    assert set(expected) <= set(results.arm_names)

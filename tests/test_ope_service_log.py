"""Off-policy evaluation validated against truth, and ``recbandits ope`` on real service logs.

1. The service's policy (serving's PolicyModel: Thompson Sampling, quadrature propensities,
   periodic refresh) serves simulated users from the environments package and the decisions
   and feedback go into a real store through serving's tables
   (:func:`serving.offpolicy.simulate_service_log`). The env reports every arm's expected reward
   for every user served, so each candidate's true value on the log,
   ``mean_i sum_a pi_i(a) q(x_i, a)``, is exact.

   * ``recbandits/FixedCTR-v0`` with personal click rates close to the seed story (0.10, 0.15,
     0.12): the served policy keeps exploring, so every candidate is estimable; over several
     logs the 95% intervals of IPS, SNIPS and DR cover the truth at about the nominal rate.
   * ``recbandits/MovieLensSim-v0`` (latent-factor MovieLens users, arms fitted on MovieLens):
     the gaps are large and Thompson Sampling stops playing the weak arms within a few hundred
     decisions. Candidates with an adequate effective sample size are covered; the others
     cannot be estimated from such a log by any estimator, and the report flags them
     (``low_ess``) instead of pretending.
2. The real service (FastAPI TestClient, small synthetic arms) writes a log; ``recbandits ope``
   reads it with the service's reward rule, prints the table and exports CSV / OBP.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import gymnasium
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import envs  # noqa: F401 - registers the ids
from arms.data import make_synthetic
from bandits.base import registered_policies
from experiments.cli import main as cli_main
from serving import offpolicy
from serving.app import create_app
from serving.armset import fit_arms
from serving.commands import rebuild_state
from serving.policy import SERVABLE_POLICIES
from serving.rules import ALREADY_DECIDED, decided_note
from serving.settings import Settings
from serving.store.tables import feedback

ENV_ARMS = ("popularity", "sequential", "random")


def env_log(env: gymnasium.Env, url: str, n: int, seed: int, refresh_every: int = 25
            ) -> tuple[offpolicy.DecisionLog, np.ndarray]:
    """Serve ``n`` env users through the service's policy into ``url``; (log, q of shape (n, K))."""
    truth: list[np.ndarray] = []
    arms = list(env.unwrapped.arm_names)

    def respond(actions: np.ndarray, rng: np.random.Generator) -> offpolicy.Responses:
        users, slates, codes = [], [], []
        for a in actions.tolist():
            _, _, _, _, info = env.step(a)
            users.append(info["user_id"])
            slates.append(info["slate"])
            codes.append(info["responses"])
            truth.append(info["expected_rewards"])
        c = np.array(codes)
        shown = np.array(slates)
        if (shown < 0).any():  # FixedCTR without a catalogue shows no real movie
            shown = np.tile(np.arange(1, c.shape[1] + 1), (len(c), 1))
        return offpolicy.Responses(np.array(users), (c == 1).sum(axis=1), (c == -1).sum(axis=1),
                                   shown, c)

    offpolicy.simulate_service_log(url, arms, respond, n, seed=seed,
                                   refresh_every=refresh_every, propensity_grid=256)
    return offpolicy.read_log(url), np.array(truth)


def truths_of(log: offpolicy.DecisionLog, q: np.ndarray, ts_states: int) -> dict[str, float]:
    targets = offpolicy.candidate_policies(log, ts_states=ts_states, propensity_grid=256)
    return {name: float((pe * q).sum(axis=1).mean()) for name, pe in targets.items()}


def test_intervals_cover_the_truth_at_the_nominal_rate(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # personal click rates: the seed story's arm rates, scaled per user, plus noise per arm
    ctr = np.clip(np.array([0.10, 0.15, 0.12]) * rng.gamma(4.0, 0.25, size=(1000, 1))
                  + rng.normal(0, 0.03, (1000, 3)), 0.01, 0.9)
    env = gymnasium.make("recbandits/FixedCTR-v0", ctr=ctr, slate_size=2,
                         max_episode_steps=10**7)
    hits = {e: [] for e in ("ips", "snips", "dr")}
    spread = []
    for seed in range(4):
        # the env's stream must not be the policy's: the same seed would draw the same numbers
        env.reset(seed=1000 + seed)
        log, q = env_log(env, f"sqlite:///{tmp_path / f'log{seed}.db'}", 2000, seed)
        assert log.n == 2000
        played = q[np.arange(log.n), log.actions]  # the reward rule matches the env's
        assert abs(log.rewards.mean() - played.mean()) < 3 * log.rewards.std() / np.sqrt(log.n)
        result = offpolicy.evaluate_log(log, n_bootstrap=400, seed=seed, ts_states=80)
        truths = truths_of(log, q, 80)
        spread.append(max(truths.values()) - min(truths.values()))
        for name, rep in result.reports.items():
            if "low_ess" in rep.flags:
                continue
            for e, est in rep.estimates.items():
                hits[e].append(est.ci_low <= truths[name] <= est.ci_high)
    assert min(spread) > 0.03  # candidates differ by more than the intervals' half-width
    for e, h in hits.items():
        assert len(h) >= 24, (e, len(h))  # most candidates were estimable: not vacuous
        assert np.mean(h) >= 0.85, (e, np.mean(h), len(h))


@pytest.fixture(scope="module")
def movielens_log(tmp_path_factory: pytest.TempPathFactory, movielens) -> dict:
    """3,000 decisions of the service's policy on simulated MovieLens users, with the truth."""
    env = gymnasium.make("recbandits/MovieLensSim-v0", dataset=movielens, arms=ENV_ARMS,
                         boredom=0.0, slate_size=5, max_episode_steps=10**7)
    env.reset(seed=0)
    url = f"sqlite:///{tmp_path_factory.mktemp('ope') / 'log.db'}"
    log, q = env_log(env, url, 3000, seed=3)
    return {"url": url, "log": log, "q": q}


def test_movielens_users_estimable_candidates_are_covered_others_flagged(
        movielens_log: dict) -> None:
    log, q = movielens_log["log"], movielens_log["q"]
    assert log.n == 3000 and log.arms == list(ENV_ARMS)
    played = q[np.arange(log.n), log.actions]
    assert abs(log.rewards.mean() - played.mean()) < 3 * log.rewards.std() / np.sqrt(log.n)
    # Thompson Sampling stops playing sequential after ~400 of 3,000 decisions (pmf ~1e-5
    # later): always:sequential's ESS is ~116, just above the default warning threshold of 100,
    # and its estimate rests on the first 400 decisions only. 200 (1/15 of the log) flags it.
    result = offpolicy.evaluate_log(log, n_bootstrap=500, seed=0, ts_states=120, min_ess=200)
    truths = truths_of(log, q, 120)
    assert list(result.reports) == list(truths)
    assert max(truths.values()) - min(truths.values()) > 0.2
    covered = [name for name, rep in result.reports.items() if "low_ess" not in rep.flags]
    assert {"always:popularity", "greedy", "logging"} <= set(covered)
    for name in covered:
        for est in result.reports[name].estimates.values():
            assert est.ci_low <= truths[name] <= est.ci_high, (name, est, truths[name])
        assert abs(result.reports[name].estimates["dr"].value - truths[name]) < 0.03, name
    # the weak arms were hardly played: their single-arm candidates are flagged and warned
    for name in ("always:sequential", "always:random"):
        assert "low_ess" in result.reports[name].flags
        assert any(m.startswith(f"{name}: effective sample size") for m in result.messages)


def test_logging_policy_estimate_is_its_observed_reward(movielens_log: dict) -> None:
    log = movielens_log["log"]
    rep = offpolicy.evaluate_log(log, n_bootstrap=100).reports["logging"]
    assert rep.estimates["ips"].value == pytest.approx(log.rewards.mean(), abs=1e-12)
    assert rep.estimates["snips"].value == pytest.approx(log.rewards.mean(), abs=1e-12)
    assert rep.effective_sample_size == pytest.approx(log.n)


def test_thompson_replay_reproduces_the_served_policy(movielens_log: dict) -> None:
    """With the service's prior, refresh points and grid, the replayed candidate IS the logger.

    This checks the offline replay (observations before each decision, in time order, through
    ThompsonSampling's batched action probabilities) against the pmf the service logged.
    """
    log = movielens_log["log"]
    targets = offpolicy.candidate_policies(log, ts_priors=[(1.0, 1.0)], ts_states=120,
                                           propensity_grid=256)
    np.testing.assert_allclose(targets["thompson(a=1,b=1)"], log.pmf, atol=1e-9)
    # ... and one refresh point equals the single-run policy fed the observations one by one
    from bandits import ThompsonSampling

    i = 1500
    ts = ThompsonSampling(log.arms, propensity_grid=256, random_state=0)
    for t, a, r in zip(log.obs_times, log.obs_actions, log.obs_rewards, strict=True):
        if t < log.created_at[i]:
            ts.update(int(a), float(r))
    np.testing.assert_allclose(ts.action_probabilities(), log.pmf[i], atol=1e-9)


def test_simulated_log_is_a_consistent_service_log(movielens_log: dict, tmp_path: Path) -> None:
    """serving's own replay of the log equals the stored posterior (rebuild-state exits 0)."""
    settings = Settings(db=movielens_log["url"], arms=list(ENV_ARMS), state_dir=tmp_path)
    result = rebuild_state(settings)
    assert result.exit_code == 0, str(result)


def test_postgresql_log_reads_like_sqlite(tmp_path: Path) -> None:
    """The same simulated service log in PostgreSQL and in SQLite gives the same arrays."""
    from test_serving_support import store_url

    # a context-free log, and a LinTS log with context vectors
    for respond, policy in ((offpolicy.bernoulli_users([0.2, 0.4, 0.3]), "ThompsonSampling"),
                            (offpolicy.segment_users(100), "LinTS")):
        logs = {}
        for backend in ("sqlite", "postgresql"):
            (tmp_path / policy).mkdir(exist_ok=True)
            url = store_url(backend, tmp_path / policy)
            offpolicy.simulate_service_log(url, ["a", "b", "c"], respond, 400, seed=2,
                                           refresh_every=40, policy=policy,
                                           propensity_grid=256)
            logs[backend] = offpolicy.read_log(url)
        lite, pg = logs["sqlite"], logs["postgresql"]
        assert pg.source.startswith("postgresql") and pg.n == lite.n == 400
        for name in ("event_ids", "actions", "propensities", "pmf", "rewards", "context",
                     "created_at", "obs_times", "obs_actions", "obs_rewards", "features",
                     "has_features", "obs_features"):
            np.testing.assert_array_equal(getattr(pg, name), getattr(lite, name), err_msg=name)
        assert pg.arms == lite.arms and pg.context_names == lite.context_names
        assert pg.feature_version == lite.feature_version
        assert (lite.features is None) == (policy == "ThompsonSampling")


# ---------------------------------------------------------------------------- real service
@pytest.fixture(scope="module")
def service_log(tmp_path_factory: pytest.TempPathFactory) -> dict:
    catalog = make_synthetic(120, 200, 3000, random_state=0)
    arms = ["popularity", "svd"]
    fitted = fit_arms(arms, catalog, seed=0)
    folder = tmp_path_factory.mktemp("service")
    settings = Settings(state_dir=folder / "state", db=f"sqlite:///{folder / 'log.db'}",
                        arms=arms, seed=5, refresh_interval_s=0.05)
    expected: dict[str, float] = {}
    with TestClient(create_app(settings, catalog=catalog, arms=fitted)) as client:
        for j, user in enumerate([*range(1, 31), 10**6]):
            body = client.get("/recommendations", params={"user_id": user, "k": 4}).json()
            movies = [i["movie_id"] for i in body["items"]]
            kinds = [["like"], ["dislike"], [], ["dislike", "like"], ["click"]][j % 5]
            for kind, movie in zip(kinds, movies, strict=False):
                r = client.post("/feedback", json={"user_id": user, "movie_id": movie,
                                                   "feedback_type": kind,
                                                   "event_id": body["event_id"]})
                assert r.status_code == 201, r.text
            if not body["cold_start"]:
                # earliest aggregation: the first rewarded feedback decides (a dislike: 0)
                expected[body["event_id"]] = float(kinds[0] in ("like", "click")) if kinds else 0.0
    return {"url": settings.resolved_db_url(), "expected": expected, "arms": arms}


def test_rewards_follow_the_service_rule(service_log: dict) -> None:
    with pytest.raises(offpolicy.EmptyLogError, match="window"):
        offpolicy.read_log(service_log["url"])  # every 30-minute window is still open
    log = offpolicy.read_log(service_log["url"], include_open=True)
    assert log.excluded == {"cold_start": 1, "open": 0, "unknown_arm": 0}
    assert dict(zip(log.event_ids, log.rewards, strict=True)) == service_log["expected"]
    later = offpolicy.read_log(service_log["url"], as_of=log.created_at.max() + 3600)
    np.testing.assert_array_equal(later.rewards, log.rewards)
    assert log.arms == service_log["arms"]
    np.testing.assert_allclose(log.pmf.sum(axis=1), 1.0)
    np.testing.assert_array_equal(log.pmf[np.arange(log.n), log.actions], log.propensities)
    # one observation per decided decision (the 6 without feedback are still open)
    assert log.obs_actions.size == 6 * (1 + 1 + 0 + 1 + 1)


def test_cli_prints_the_table_and_exports(service_log: dict, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = ["ope", "--db", service_log["url"], "--out", str(tmp_path / "ope"),
            "--bootstrap", "200", "--seed", "1", "--include-open",
            "--export-csv", str(tmp_path / "log.csv"), "--export-obp", str(tmp_path / "log.npz")]
    with redirect_stdout(out), redirect_stderr(err):
        assert cli_main(argv) == 0
    text = out.getvalue()
    assert "30 decisions evaluated (1 cold-start left out)" in text
    # the service logs each decision's user-v4 context vector: contextual candidates too
    for name in ("always:popularity", "always:svd", "uniform", "greedy",
                 "thompson(a=1,b=19)", "LinTS(scale=1,ridge=1)", "LinUCB(alpha=0,ridge=1)",
                 "best_arm_per_segment", "logging"):
        assert name in text
    assert "effective sample size" in err.getvalue()  # 30 decisions: low ESS warned about
    table = pd.read_csv(tmp_path / "ope" / "ope.csv")
    mean = np.mean(list(service_log["expected"].values()))
    logging_row = table.set_index("policy").loc["logging"]
    assert logging_row["ips"] == pytest.approx(mean) and logging_row["snips"] == pytest.approx(
        mean)
    assert (table["ips_low"] <= table["ips"]).all() and (table["ips"] <= table["ips_high"]).all()
    summary = json.loads((tmp_path / "ope" / "summary.json").read_text())
    assert summary["decisions"] == 30 and summary["observed_mean_reward"] == pytest.approx(mean)
    # Every window is open: all 30 counted so, and said (it was silent: found by attack).
    assert summary["counted_open"] == 30 and summary["excluded"]["open"] == 0
    assert "30 decision(s) counted with their reward window still open" in err.getvalue()
    assert summary["feature_version"] == "user-v4"
    # The service logs its feature set's names once: the segments are gender x age.
    assert "columns starting with 'gender=', 'age='" in summary["segments"]

    exported = pd.read_csv(tmp_path / "log.csv")
    assert len(exported) == 30 and set(exported["arm"]) <= set(service_log["arms"])
    assert exported["reward"].mean() == pytest.approx(mean)
    obp = offpolicy.load_obp(tmp_path / "log.npz")
    assert obp["n_rounds"] == 30 and obp["n_actions"] == 2
    for key, shape in (("action", (30,)), ("reward", (30,)), ("pscore", (30,)),
                       ("position", (30,)), ("pi_b", (30, 2, 1)), ("action_context", (2, 2))):
        assert obp[key].shape == shape, key
    np.testing.assert_allclose(obp["pscore"], obp["pi_b"][np.arange(30), obp["action"], 0])
    np.testing.assert_array_equal(obp["reward"], exported["reward"])
    # The context vector the policy saw is in both (they held only the slate size k).
    log = offpolicy.read_log(service_log["url"], include_open=True)
    assert log.features is not None and log.feature_names is not None
    d = log.features.shape[1]
    assert d > 10 and obp["context"].shape == (30, d)
    np.testing.assert_array_equal(obp["context"], log.features)
    assert list(obp["context_names"]) == log.feature_names
    columns = [f"feature_{name}" for name in log.feature_names]
    np.testing.assert_allclose(exported[columns].to_numpy(), log.features)
    assert "has_features" not in exported  # every decision logged its vector


def test_no_bootstrap_resamples_print_and_write_no_intervals(service_log: dict,
                                                              tmp_path: Path) -> None:
    # Found by a README check: --bootstrap 0 ("no intervals") printed "[95% CI]" and each
    # estimate as its own interval, 0.8333 [0.8333, 0.8333], and wrote those in ope.csv.
    printed = {}
    for bootstrap in ("0", "100"):
        out = io.StringIO()
        argv = ["ope", "--db", service_log["url"], "--out", str(tmp_path / bootstrap),
                "--bootstrap", bootstrap, "--include-open"]
        with redirect_stdout(out), redirect_stderr(io.StringIO()):
            assert cli_main(argv) == 0
        printed[bootstrap] = out.getvalue()
        table = pd.read_csv(tmp_path / bootstrap / "ope.csv")
        summary = json.loads((tmp_path / bootstrap / "summary.json").read_text())
        assert summary["confidence"] == (None if bootstrap == "0" else 0.95)
        bounds = table[[c for c in table.columns if c.endswith(("_low", "_high"))]]
        assert bounds.isna().all(axis=None) if bootstrap == "0" else bounds.notna().all(
            axis=None)
    header = next(line for line in printed["0"].splitlines() if line.startswith("policy"))
    assert "CI" not in header and "IPS" in header
    row = next(line for line in printed["0"].splitlines() if line.startswith("logging"))
    assert "[" not in row
    assert "IPS [95% CI]" in printed["100"]
    # The same values either way: only the intervals went.
    no_ci = pd.read_csv(tmp_path / "0" / "ope.csv").set_index("policy")
    with_ci = pd.read_csv(tmp_path / "100" / "ope.csv").set_index("policy")
    pd.testing.assert_series_equal(no_ci["snips"], with_ci["snips"])


def test_open_windows_message_names_the_option_and_the_wait(service_log: dict,
                                                           tmp_path: Path) -> None:
    """Right after using the service every 30-minute window is open: the CLI says when the
    first closes and names --include-open, not the Python parameter include_open."""
    with pytest.raises(offpolicy.EmptyLogError) as caught:
        offpolicy.read_log(service_log["url"])
    assert caught.value.n_open == 30 and caught.value.first_close is not None
    assert "include_open=True" in str(caught.value)
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        # Nothing to evaluate yet is no failure (it was exit 2; found by a README check).
        assert cli_main(["ope", "--db", service_log["url"], "--out", str(tmp_path / "o"),
                         "--export-csv", str(tmp_path / "log.csv")]) == 0
    text = out.getvalue()
    assert text.startswith("nothing to evaluate: ")
    assert "none of the 30 policy decisions has a closed reward window yet (30 open; the " \
        "first closes at" in text
    assert "min); wait for it, or pass --include-open" in text and "include_open" not in text
    assert text.endswith("(nothing written)\n")
    assert not (tmp_path / "o").exists() and not (tmp_path / "log.csv").exists()
    # With --shadow and no shadow record anywhere, waiting cannot help: a refusal (it said
    # "wait for it", exit 0: found by attack).
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert cli_main(["ope", "--db", service_log["url"], "--out", str(tmp_path / "s"),
                         "--shadow"]) == 2
    assert "no decision of the log carries a shadow record (serve with --shadow-policy)" \
        in err.getvalue() and not out.getvalue() and not (tmp_path / "s").exists()


def test_ope_reads_the_store_of_a_state_folder(tmp_path: Path, service_log: dict) -> None:
    """Found by attack: ``ope`` alone of the store commands took no ``--state-dir``, so right
    after ``serve --state-dir X`` one had to spell the SQLite URL. It reads that folder's
    store; a folder holding none is refused as every command refuses it."""
    state = tmp_path / "state"
    state.mkdir()
    db = Path(service_log["url"].removeprefix("sqlite:///"))
    for suffix in ("", "-wal"):  # the database and its write-ahead log, if any is left
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", state / f"recbandits.db{suffix}")
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert cli_main(["ope", "--state-dir", str(state), "--out", str(tmp_path / "o")]) == 0
    assert "none of the 30 policy decisions has a closed reward window yet" in out.getvalue()
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert cli_main(["ope", "--state-dir", str(tmp_path), "--out",
                         str(tmp_path / "o")]) == 2
    assert err.getvalue() == (f"recbandits ope: --state-dir '{tmp_path}': no SQLite file at "
                              f"'{tmp_path / 'recbandits.db'}'\n")


def test_cli_errors_are_clear(tmp_path: Path, service_log: dict) -> None:
    for argv, message in (
        # named as every command names its --db (the review of the README: "db: no ...")
        (["ope", "--db", f"sqlite:///{tmp_path / 'missing.db'}"],
         f"recbandits ope: --db 'sqlite:///{tmp_path / 'missing.db'}': no SQLite file at "
         f"'{tmp_path / 'missing.db'}'\n"),
        (["ope", "--db", service_log["url"], "--ts-prior", "1,-2"], "--ts-prior"),
        (["ope", "--db", "mysql://x/y"], "sqlite"),
    ):
        err = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            assert cli_main([*argv, "--out", str(tmp_path / "o")]) == 2, argv
        assert message in err.getvalue(), (argv, err.getvalue())


def test_an_export_file_that_cannot_be_written_is_refused_before_the_run(
        tmp_path: Path, service_log: dict) -> None:
    """Found by a README check: an existing export file that cannot be written (``chattr +i``)
    failed the export after the run had written ope.csv and summary.json to ``--out``.
    Refused before anything is written, naming the option, as ``--out`` is."""
    import os
    import subprocess

    locked = tmp_path / "locked.csv"
    locked.write_text("keep me")
    # Root writes any file whatever its mode: an immutable one, where the file system allows.
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported here")
    if not root:
        locked.chmod(0o444)
    try:
        for option in ("--export-csv", "--export-obp"):
            err = io.StringIO()
            with redirect_stdout(io.StringIO()), redirect_stderr(err):
                assert cli_main(["ope", "--db", service_log["url"], "--include-open",
                                 "--bootstrap", "0", "--out", str(tmp_path / "run"),
                                 option, str(locked)]) == 2
            assert err.getvalue().startswith(
                f"recbandits ope: {option} '{locked}' cannot be written ("), err.getvalue()
            assert not (tmp_path / "run").exists()
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert locked.read_text() == "keep me"


def test_ope_without_resamples_says_so_in_a_note(tmp_path: Path, service_log: dict) -> None:
    """Found in review: ``--bootstrap 0`` printed the estimates alone with no word, where
    credit, holdout and replay add the note the README promises for every command."""
    from bandits.ope import NO_RESAMPLES

    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert cli_main(["ope", "--db", service_log["url"], "--include-open", "--bootstrap",
                         "0", "--out", str(tmp_path / "run")]) == 0
    lines = out.getvalue().splitlines()
    assert f"note: {NO_RESAMPLES}" in lines and not any("CI]" in line for line in lines)


def test_the_export_check_leaves_a_fifo_alone(tmp_path: Path) -> None:
    """Found in review: the check opened an existing export path for appending, which on a
    FIFO waits for a reader (ope hung) and then sends it an end of file; only a regular file
    is opened."""
    import os
    import threading

    from experiments.cli import _file_refusal

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    said: list[str | None] = []
    check = threading.Thread(target=lambda: said.append(_file_refusal("--export-csv", str(fifo))),
                             daemon=True)
    check.start()
    check.join(timeout=30)  # the old check never returned without a reader
    assert not check.is_alive() and said == [None]


# ---------------------------------------------------------------------------- notebook
NOTEBOOK = "03_serving_logs.ipynb"
SMALL_NOTEBOOK = (
    "N_DECISIONS = 3000\nREFRESH_EVERY = 50\nN_BOOTSTRAP = 200\nSEED = 1\nDB_URL = None\n"
)


def test_notebook_committed_without_outputs() -> None:
    from test_notebooks import _load

    code = [c for c in _load(NOTEBOOK).cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    import os

    from nbclient import NotebookClient
    from test_notebooks import PNG_SIGNATURE, _images, _load, _text

    notebook = _load(NOTEBOOK)
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = SMALL_NOTEBOOK
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    NotebookClient(notebook, timeout=240, kernel_name="python3", startup_timeout=600,
                   iopub_timeout=60, raise_on_iopub_timeout=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = _images(notebook)
    assert len(images) == 2 and all(p[:8] == PNG_SIGNATURE and len(p) > 5_000 for p in images)
    text = _text(notebook)
    assert "3000 decisions evaluable" in text and "always:sequential" in text
    assert "logging policy: IPS" in text and "intervals covering the truth" in text
    line = next(x for x in text.splitlines() if x.startswith("logging policy: IPS"))
    ips, observed = line.split("IPS ")[1].split(" = observed ")
    assert ips == observed
    assert "'pscore': (3000,)" in text and "'pi_b': (3000, 4, 1)" in text
    # the contextual section: a LinTS-logged log, contextual candidates, the replay check
    assert "best_arm_per_segment" in text and "LinUCB(alpha=0.5,ridge=1)" in text
    assert "note: no decision logged a context vector" in text
    replay = next(x for x in text.splitlines() if "replayed: max |pmf - logged pmf|" in x)
    assert float(replay.rsplit("= ", 1)[1]) < 1e-9


def test_a_closed_undecided_decision_counts_as_the_services_default_reward(
        tmp_path: Path) -> None:
    """A decision whose window closed before the settle sweep decided it gets the reward the
    sweep will give: the service's ``default_reward``, not a constant of ``ope``'s own."""
    from serving.store import open_store

    url = f"sqlite:///{tmp_path / 'log.db'}"
    store = open_store(url)
    store.create_schema(["svd", "popularity"])
    store.write_batch([{
        "event_id": "e" * 32, "created_at": 100.0, "user_id": 1, "context": {"k": 2},
        "arm": "svd", "propensity": 0.5, "pmf": {"svd": 0.5, "popularity": 0.5},
        "slate": [1, 2], "policy": None, "policy_version": 1, "cold_start": False,
        "reward_deadline": 200.0}], [])
    store.dispose()
    assert offpolicy.read_log(url, as_of=300.0).rewards.tolist() == [0.0]
    assert offpolicy.read_log(url, as_of=300.0, default_reward=0.25).rewards.tolist() == [0.25]


def test_a_simulated_log_decides_and_notes_each_feedback_as_the_service(
        service_log: dict, tmp_path: Path) -> None:
    """The simulated log's feedback carries the notes the service writes, and the rule book
    decides which one counts (found in review: ``simulate_service_log`` wrote its own "first
    feedback decides" rule and its own, shorter, "already decided" note)."""
    def notes(url: str) -> dict[bool, set[str]]:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(feedback.c.counted, feedback.c.note)
                                .where(feedback.c.reward.is_not(None))).all()
        engine.dispose()
        return {flag: {note for counted, note in rows if bool(counted) is flag}
                for flag in (True, False)}

    def respond(actions: np.ndarray, rng: np.random.Generator) -> offpolicy.Responses:
        n = len(actions)  # one like and one dislike on every slate
        return offpolicy.Responses(np.arange(1, n + 1), np.ones(n, np.int64),
                                   np.ones(n, np.int64))

    url = f"sqlite:///{tmp_path / 'simulated.db'}"
    arms = service_log["arms"]
    offpolicy.simulate_service_log(url, arms, respond, 40, seed=1)
    simulated, served = notes(url), notes(service_log["url"])
    assert simulated[False] == {ALREADY_DECIDED} and ALREADY_DECIDED in served[False]
    # the like decides (the rewards' sort puts it first), noted as the service notes its own
    assert simulated[True] == {decided_note(1.0, a) for a in arms}
    assert {re.sub(r"arm \S+", "arm", n) for n in served[True]} == {
        re.sub(r"arm \S+", "arm", decided_note(r, arms[0])) for r in (0.0, 1.0)}


@pytest.mark.parametrize("policy", [name for name, cls in registered_policies().items()
                                    if "prior_alpha" in cls._param_names()
                                    and name in SERVABLE_POLICIES])
def test_the_simulation_gives_every_beta_policy_the_services_parameters(
        policy: str, tmp_path: Path) -> None:
    """The shared priors reach every policy that takes them, in the service and in its
    simulated log alike (found in review: the simulation gave them to ThompsonSampling only,
    so a sliding-window Thompson sampling ran there with priors (1, 1))."""
    settings = Settings(state_dir=tmp_path, arms=["popularity", "svd"], policy=policy,
                        prior_alpha=5.0, prior_beta=2.0)
    served = settings.policy_model(None)
    simulated = offpolicy._simulation_model(policy, ["popularity", "svd"], None, None, 5.0, 2.0,
                                            settings.propensity_grid)
    assert simulated.identity() == served.identity()
    assert served.identity()["params"]["prior_alpha"] in (5.0, [5.0, 5.0])

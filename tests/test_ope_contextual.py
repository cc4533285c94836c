"""``recbandits ope`` on logs with context vectors: contextual candidates and contextual loggers.

A LinTS logging policy (serving's ``PolicyModel``, as the service runs it) serves synthetic users
in gender x age segments whose like rate per arm is linear in their features and known
(:func:`serving.offpolicy.segment_users`), so every candidate's true value on the log,
``mean_i sum_a pi_i(a) rate(user_i, a)``, is exact.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from experiments.cli import main as cli_main
from serving import offpolicy

ARMS = ["a", "b", "c"]
N = 3000
REFRESH = 100
CONTEXTUAL = ("LinTS", "LinUCB", offpolicy.SEGMENT_CANDIDATE)


@pytest.fixture(scope="module")
def lints_log(tmp_path_factory: pytest.TempPathFactory) -> dict:
    users = offpolicy.segment_users(600, seed=0)
    url = f"sqlite:///{tmp_path_factory.mktemp('ctx') / 'log.db'}"
    info = offpolicy.simulate_service_log(url, ARMS, users, N, seed=1, refresh_every=REFRESH,
                                          policy="LinTS", policy_params={"scale": 1.0},
                                          propensity_grid=256)
    log = offpolicy.read_log(url, feature_names=users.names)
    return {"url": url, "users": users, "log": log, "q": info["expected_rewards"]}


def truths(log: offpolicy.DecisionLog, q: np.ndarray) -> dict[str, float]:
    targets = offpolicy.candidate_policies(log, ts_states=N // REFRESH)
    return {name: float((pe * q).sum(axis=1).mean()) for name, pe in targets.items()}


def test_read_log_exposes_the_logged_context_vectors(lints_log: dict) -> None:
    log, users = lints_log["log"], lints_log["users"]
    assert log.n == N and log.feature_version == "synthetic-v1"
    assert log.feature_names == list(users.names)
    assert log.features is not None and log.features.shape == (N, 6)
    assert log.has_features is not None and log.has_features.all()
    # each row is its user's vector (user ids are positions + 1)
    np.testing.assert_array_equal(log.features, users.features[log.user_ids - 1])
    assert log.obs_features is not None and log.obs_features.shape == (log.obs_actions.size, 6)
    # the logged pmf differs per decision, one per user segment within a refresh block
    block = slice(10 * REFRESH, 11 * REFRESH)
    assert np.unique(log.pmf[block], axis=0).shape[0] == np.unique(log.features[block],
                                                                   axis=0).shape[0] > 1
    assert log.contextual_note() is None


def test_lints_replay_reproduces_the_contextual_logger(lints_log: dict) -> None:
    """The candidate with the logger's parameters and refresh points IS the logger.

    Checks the offline replay (ridge statistics of the observations decided before each block,
    inverted per block; propensities of every decision of a block from one batched call) against
    the pmf the service's LinTS (Sherman-Morrison fold, per-decision contexts) logged.
    """
    log = lints_log["log"]
    targets = offpolicy.candidate_policies(
        log, ts_priors=[], ts_states=N // REFRESH, propensity_grid=256,
        linear=[offpolicy.LinearCandidate("LinTS", (("scale", 1.0), ("ridge", 1.0)))])
    np.testing.assert_allclose(targets["LinTS(scale=1,ridge=1)"], log.pmf, atol=1e-9)


def test_logging_estimate_is_the_observed_mean_and_candidates_are_covered(
        lints_log: dict) -> None:
    log, q = lints_log["log"], lints_log["q"]
    result = offpolicy.evaluate_log(log, n_bootstrap=400, seed=0, ts_states=N // REFRESH)
    rep = result.reports["logging"]
    assert rep.estimates["ips"].value == pytest.approx(log.rewards.mean(), abs=1e-12)
    assert rep.estimates["snips"].value == pytest.approx(log.rewards.mean(), abs=1e-12)
    truth = truths(log, q)
    names = list(result.reports)
    assert [n for n in names if n.startswith(CONTEXTUAL)] == [
        "LinTS(scale=1,ridge=1)", "LinTS(scale=0.25,ridge=1)", "LinTS(scale=0.5,ridge=10)",
        "LinUCB(alpha=0.5,ridge=1)", "LinUCB(alpha=0,ridge=1)", "best_arm_per_segment"]
    contextual = {n: truth[n] for n in names if n.startswith(CONTEXTUAL)}
    best = max(contextual, key=contextual.__getitem__)
    # the contextual candidates beat every context-free one by more than an interval's width
    assert contextual[best] - max(v for n, v in truth.items() if n not in contextual
                                  and n != "logging") > 0.05
    for name in (best, "logging", "always:a"):
        for est in result.reports[name].estimates.values():
            assert est.ci_low <= truth[name] <= est.ci_high, (name, est, truth[name])
    assert abs(result.reports[best].estimates["dr"].value - truth[best]) < 0.02
    assert result.notes == ["best_arm_per_segment and the DR reward model: 6 segments: "
                            "columns starting with 'gender=', 'age='"]


def test_feature_names_of_another_length_are_refused(lints_log: dict) -> None:
    with pytest.raises(ValueError, match="feature_names has 2 names; the logged context "
                                         "vectors have 6 values"):
        offpolicy.read_log(lints_log["url"], feature_names=["bias", "x"])


def test_segments_without_names_use_the_binary_columns(lints_log: dict) -> None:
    log = lints_log["log"]
    named = offpolicy.segments(log)
    unnamed_log = offpolicy.read_log(lints_log["url"])  # the service logs no names
    assert unnamed_log.feature_names is None
    unnamed = offpolicy.segments(unnamed_log)
    assert named is not None and unnamed is not None
    np.testing.assert_array_equal(named[0], unnamed[0])  # gender x age both ways
    assert "0/1 column" in unnamed[2] and "6 segments" in unnamed[2]


def test_segment_counts_match_a_loop(lints_log: dict) -> None:
    log = lints_log["log"]
    codes, obs_codes, _ = offpolicy.segments(log)  # type: ignore[misc]
    wins, plays = offpolicy.segment_counts_before(log, codes, obs_codes)
    for i in (0, 7, 500, 2999):
        seen = (obs_codes == codes[i]) & (log.obs_times < log.created_at[i])
        for k in range(len(ARMS)):
            mine = seen & (log.obs_actions == k)
            assert plays[i, k] == mine.sum()
            assert wins[i, k] == log.obs_rewards[mine].sum()


def test_reward_model_uses_earlier_decisions_of_the_segment(lints_log: dict) -> None:
    log = lints_log["log"]
    codes = offpolicy.segments(log)[0]  # type: ignore[index]
    q = offpolicy.reward_model(log, codes)
    arm_wide = offpolicy.reward_model(log)
    i, k = 1234, 1
    earlier = (codes[:i] == codes[i]) & (log.actions[:i] == k)
    expected = (log.rewards[:i][earlier].sum() + 2 * arm_wide[i, k]) / (earlier.sum() + 2)
    assert q[i, k] == pytest.approx(expected)


def test_logs_without_context_vectors_skip_the_contextual_candidates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    offpolicy.simulate_service_log(url, ARMS, offpolicy.bernoulli_users([0.2, 0.3, 0.25]), 300,
                                   seed=0, refresh_every=50, propensity_grid=256)
    log = offpolicy.read_log(url)
    assert log.features is None and log.contextual_note() is not None
    result = offpolicy.evaluate_log(log, n_bootstrap=0)
    assert not any(n.startswith(CONTEXTUAL) for n in result.reports)
    assert any("contextual candidates" in note and "skipped" in note for note in result.notes)


def test_a_thompson_logger_with_contexts_gets_contextual_candidates(tmp_path: Path) -> None:
    """A context-free logger that logs the user's vector: contextual candidates are evaluated
    (its pmf is one per snapshot), and best_arm_per_segment's interval covers its truth.

    The logger's strong Beta(30, 120) prior keeps it exploring (with Beta(1, 1) it settles on
    one arm and best_arm_per_segment's ESS drops to ~60: flagged, not estimable)."""
    users = offpolicy.segment_users(600, seed=2)
    url = f"sqlite:///{tmp_path / 'ts.db'}"
    info = offpolicy.simulate_service_log(url, ARMS, users, 2000, seed=3, refresh_every=100,
                                          prior_alpha=30.0, prior_beta=120.0,
                                          propensity_grid=256)
    log = offpolicy.read_log(url, feature_names=users.names)
    assert np.unique(log.pmf[:100], axis=0).shape[0] == 1  # one pmf per refresh
    result = offpolicy.evaluate_log(log, n_bootstrap=300, seed=1, ts_states=20)
    targets = offpolicy.candidate_policies(log, ts_states=20)
    truth = float((targets["best_arm_per_segment"] * info["expected_rewards"]).sum(1).mean())
    report = result.reports["best_arm_per_segment"]
    assert report.flags == ()
    for est in report.estimates.values():
        assert est.ci_low <= truth <= est.ci_high, (est, truth)


def test_simulator_rejects_a_contextual_policy_without_contexts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="contextual: respond must be FeatureUsers"):
        offpolicy.simulate_service_log(f"sqlite:///{tmp_path / 'x.db'}", ARMS,
                                       offpolicy.bernoulli_users([0.1, 0.2, 0.3]), 10,
                                       policy="LinTS")


def test_linear_candidate_parsing() -> None:
    cand = offpolicy.LinearCandidate.parse("LinUCB:alpha=2,ridge=5")
    assert cand.name == "LinUCB(alpha=2,ridge=5)" and cand.ridge == 5.0
    # An integer stays one: propensity_grid was refused as a float ("got 512.0"), while the
    # message for an unknown key listed it as allowed.
    grid = offpolicy.LinearCandidate.parse("LinTS:propensity_grid=512,scale=1e-1")
    assert grid.params == (("propensity_grid", 512), ("scale", 0.1))
    assert type(grid.params[0][1]) is int
    for bad, message in (("LinXX:alpha=1", "'LinTS' or 'LinUCB'"),
                         ("LinTS:scale", "KEY=NUMBER"),
                         ("LinTS:scale=big", "scale must be a number in plain decimal digits"),
                         # one of the two values was dropped without a word
                         ("LinTS:scale=1,scale=2", "scale is given twice"),
                         # the replay's refresh blocks set it (it was taken, to no effect)
                         ("LinTS:batch_size=2", r"'batch_size' is set by the evaluation"),
                         ("LinTS:scale=1_0", "scale must be a number in plain"),  # Python: 10
                         # the numbers' one rule: plain decimal digits (bandits.errors)
                         ("LinTS:propensity_grid=+512", "propensity_grid must be a number"),
                         ("LinTS:propensity_grid=1000000", r"propensity_grid=1000000 is outside "
                                                           r"the allowed range \[2, 8192\]")):
        with pytest.raises(ValueError, match=message):
            offpolicy.LinearCandidate.parse(bad)


def test_invalid_linear_hyper_parameters_name_the_candidate() -> None:
    # A value: at once, before the log is read (it was found when the candidate was built).
    with pytest.raises(ValueError, match=r"^linear candidate LinTS\(ridge=0\): ridge"):
        offpolicy.LinearCandidate("LinTS", (("ridge", 0.0),))
    # A name LinTS does not take: at once, with those it takes (Python's words, once the log
    # had been read and the other candidates replayed: found in review).
    with pytest.raises(ValueError, match=r"^linear candidate LinTS\(alpha=1\): LinTS has no "
                                         r"hyper-parameter 'alpha'; allowed: \['scale'"):
        offpolicy.LinearCandidate("LinTS", (("alpha", 1.0),))


def test_run_returns_results_and_the_cli_prints_them(lints_log: dict, tmp_path: Path) -> None:
    config = offpolicy.OPEConfig(url=lints_log["url"], out_dir=tmp_path / "run", n_bootstrap=100,
                                 linear=(offpolicy.LinearCandidate("LinTS", (("scale", 2.0),)),))
    results = offpolicy.run(config)
    assert results.log.n == N and results.files["table"].exists()
    assert "LinTS(scale=2)" in results.result.reports
    assert results.result.summary["linear"] == ["LinTS(scale=2)"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert cli_main(["ope", "--db", lints_log["url"], "--out", str(tmp_path / "cli"),
                         "--bootstrap", "100", "--linear", "LinUCB:alpha=1"]) == 0
    assert "LinUCB(alpha=1)" in out.getvalue() and "best_arm_per_segment" in out.getvalue()
    assert "note: best_arm_per_segment and the DR reward model: 6 segments" in err.getvalue()
    with pytest.raises(ValueError, match="n_bootstrap"):
        offpolicy.OPEConfig(url="sqlite://", out_dir=tmp_path, n_bootstrap=-1)
    with redirect_stdout(io.StringIO()), redirect_stderr(err := io.StringIO()):
        assert cli_main(["ope", "--db", lints_log["url"], "--linear", "LinTS:scale=x",
                         "--out", str(tmp_path / "bad")]) == 2
    assert "--linear" in err.getvalue()


def test_the_exports_mark_the_decisions_without_a_context_vector(lints_log: dict) -> None:
    """Decisions of another feature set have zero rows: the CSV marked them (has_features),
    OBP's npz did not, so a reward model took them for all-zero users (found by attack)."""
    import dataclasses

    log = lints_log["log"]
    mask = np.ones(log.n, dtype=bool)
    mask[:7] = False
    features = log.features.copy()
    features[:7] = 0.0
    partial = dataclasses.replace(log, features=features, has_features=mask)
    obp = offpolicy.obp_feedback(partial)
    np.testing.assert_array_equal(obp["has_features"], mask)
    np.testing.assert_array_equal(offpolicy.log_frame(partial)["has_features"], mask)
    assert "has_features" not in offpolicy.obp_feedback(log)  # every decision has one

"""The live holdout (:mod:`serving.holdout`): a share of requests served by a baseline, logged
with the mixture's propensities, checked by rebuild-state, and compared by ``recbandits holdout``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_serving_support import read_table

from arms.data import make_synthetic
from experiments.cli import main as cli_main
from serving import holdout, offpolicy
from serving.app import create_app
from serving.commands import credit as credit_command
from serving.commands import holdout as holdout_command
from serving.commands import rebuild_state
from serving.holdout import Holdout, format_report, holdout_report
from serving.multileave import credit_report, format_credit
from serving.results import CommandError, HoldoutResults, NothingToDo
from serving.settings import Settings
from serving.store.tables import decisions

ARMS = ["svd", "popularity", "sequential"]


# ---------------------------------------------------------------------------- the draw
def test_the_arm_is_drawn_from_the_mixture_and_the_share_is_held_out() -> None:
    holdout = Holdout(0.3, "popularity", ARMS)
    pmf = np.array([0.7, 0.1, 0.2])
    cdf = np.cumsum(pmf)
    rng = np.random.default_rng(0)
    n = 20_000
    draws = [holdout.choose(pmf, cdf, "key", rng) for _ in range(n)]
    q = 0.3 * np.array([0.0, 1.0, 0.0]) + 0.7 * pmf
    counts = np.bincount([c for c, *_ in draws], minlength=3)
    # Frequencies within 4 standard errors of the logged mixture (a draw from the policy's
    # pmf alone would give popularity 0.1, not 0.37).
    assert np.all(np.abs(counts / n - q) < 4 * np.sqrt(q * (1 - q) / n)), (counts / n, q)
    held = np.array([h["held_out"] for *_, h, _ in draws])
    assert abs(held.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    # Held out: the baseline's arm every time; the propensity is the mixture's, always.
    assert {c for c, _, _, h, _ in draws if h["held_out"]} == {1}
    assert all(p == pytest.approx(q[c]) for c, p, *_ in draws)
    assert all(h["held_out"] == (h["draw"] < 0.3) for *_, h, _ in draws)
    # The policy's description gains the entry (what the decision logs).
    logged = holdout.choose(pmf, cdf, "key", rng, '{"name": "TS"}')
    assert json.loads(logged.policy_json) == {"name": "TS", "holdout": logged.entry}


def test_bad_holdout_settings_are_refused_with_the_value_and_what_is_allowed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--dataset", "synthetic", "--state-dir", str(tmp_path),
                     "--holdout-share", "1.5"]) == 2
    assert "holdout_share" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was created
    with pytest.raises(ValidationError, match="holdout_share"):
        Settings(arms=ARMS, holdout_share=1.0)
    with pytest.raises(ValidationError, match="holdout_share"):
        Settings(arms=ARMS, holdout_share=-0.1)
    with pytest.raises(ValidationError, match=r"holdout_baseline='ease'.*allowed"):
        Settings(arms=ARMS, holdout_share=0.1, holdout_baseline="ease")
    with pytest.raises(ValidationError, match="single-arm slates"):
        Settings(arms=ARMS, holdout_share=0.1, slate_mode="multileave")
    with pytest.raises(ValueError, match="holdout_share"):
        Holdout(1.5, "uniform", ARMS)
    # Review finding 9: a one-arm baseline would log the other arms at (1 - share) * floor,
    # below the floor ope relies on; a uniform baseline keeps it (tested below).
    with pytest.raises(ValidationError, match=r"exploration_floor=0.1 with holdout_baseline="
                                              r"'popularity' \(holdout_share=0.3\).*0.07"):
        Settings(arms=ARMS, holdout_share=0.3, holdout_baseline="popularity",
                 exploration_floor=0.1)
    assert cli_main(["serve", "--dataset", "synthetic", "--state-dir", str(tmp_path),
                     "--holdout-share", "0.3", "--holdout-baseline", "popularity",
                     "--exploration-floor", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "exploration_floor" in err and "holdout_baseline" in err
    assert not any(tmp_path.iterdir())
    Settings(arms=ARMS, holdout_share=0.3, holdout_baseline="uniform", exploration_floor=0.1)
    Settings(arms=ARMS, holdout_share=0.3, holdout_baseline="popularity")


# ---------------------------------------------------------------------------- the service
def _serve(settings: Settings, n: int, liked: str | None = None) -> list[dict]:
    """``n`` recommendations; a like on the first item of each slate ``liked`` served."""
    catalog = make_synthetic(40, 60, 800, random_state=0)
    bodies = []
    with TestClient(create_app(settings, catalog=catalog)) as client:
        service = client.app.state.service
        for i in range(n):
            body = client.get("/recommendations", params={"user_id": 1 + i % 30,
                                                           "k": 3}).json()
            bodies.append(body)
            if body["arm"] == liked:
                assert client.post("/feedback", json={
                    "user_id": body["user_id"], "movie_id": body["items"][0]["movie_id"],
                    "feedback_type": "like", "event_id": body["event_id"]}).status_code == 201
            if i % 10 == 9:
                service.refresh()
        view = client.get("/policy").json()
    bodies.append(view)
    return bodies


@pytest.mark.parametrize(("policy", "baseline"), [("ThompsonSampling", "popularity"),
                                                  ("LinTS", "uniform")])
def test_held_out_decisions_are_logged_with_the_mixture_and_rebuild_state_checks_them(
        tmp_path: Path, policy: str, baseline: str) -> None:
    floor = 0.1 if baseline == "uniform" else 0.0  # an arm baseline refuses a floor
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS, seed=3, policy=policy,
                        holdout_share=0.3, holdout_baseline=baseline, exploration_floor=floor,
                        refresh_interval_s=0.05, admin_token="t")
    *bodies, view = _serve(settings, 60, liked="svd")
    assert view["holdout"] == {"share": 0.3, "baseline": baseline}
    logged = {r["event_id"]: r for r in read_table(settings.resolved_db_url(), decisions)}
    assert len(logged) == 60
    held = 0
    for body in bodies:
        row = logged[body["event_id"]]
        entry = row["policy"]["holdout"]
        assert entry["held_out"] == (entry["draw"] < 0.3)
        held += entry["held_out"]
        q = np.array([row["pmf"][a] for a in ARMS])
        base = (np.full(3, 1 / 3) if baseline == "uniform"
                else np.array([float(a == baseline) for a in ARMS]))
        part = (q - 0.3 * base) / 0.7  # the policy's served (floored) pmf
        assert part.sum() == pytest.approx(1.0) and part.min() >= floor - 1e-9
        assert q.min() >= floor - 1e-9  # the floor holds for every logged propensity
        assert row["propensity"] == pytest.approx(row["pmf"][row["arm"]])
        assert body["propensity"] == row["propensity"]
        if entry["held_out"] and baseline != "uniform":
            assert row["arm"] == baseline
    assert 6 <= held <= 30  # Binomial(60, 0.3): mean 18, sd 3.5
    # ope reads the mixture: the propensities the arms really had.
    log = offpolicy.read_log(settings.resolved_db_url(), include_open=True)
    assert log.n == 60
    assert sorted(log.propensities.tolist()) == pytest.approx(
        sorted(r["propensity"] for r in logged.values()))
    rebuilt = rebuild_state(settings)
    out = io.StringIO(str(rebuilt))
    assert rebuilt.exit_code == 0, out.getvalue()
    assert f"holdout: {held} of 60 decisions" in out.getvalue()
    assert "match yes" in out.getvalue()

    # A tampered flag is found: the log says held out where the draw says served.
    engine = sa.create_engine(settings.resolved_db_url())
    victim = next(r for r in logged.values() if not r["policy"]["holdout"]["held_out"])
    policy_json = {**victim["policy"], "holdout": {**victim["policy"]["holdout"],
                                                   "held_out": True}}
    with engine.begin() as conn:
        conn.execute(decisions.update().where(decisions.c.event_id == victim["event_id"])
                     .values(policy=policy_json))
    engine.dispose()
    rebuilt = rebuild_state(settings)
    out = io.StringIO(str(rebuilt))
    assert rebuilt.exit_code == 1, out.getvalue()
    assert f"decision {victim['event_id']}: holdout held_out=True" in out.getvalue()


def test_the_holdout_command_reports_both_groups_on_a_live_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS, seed=5,
                        holdout_share=0.4, refresh_interval_s=0.05)
    nothing = holdout_command(settings)  # no store yet: said, nothing created
    assert isinstance(nothing, NothingToDo) and nothing.exit_code == 0
    assert "nothing to compare" in str(nothing)
    _serve(settings, 40, liked="svd")
    result = holdout_command(settings, n_bootstrap=200)
    assert isinstance(result, HoldoutResults) and result.exit_code == 0
    report = result.report
    assert report.policy.decisions + report.holdout.decisions == 40
    assert 4 <= report.holdout.decisions <= 28  # Binomial(40, 0.4): mean 16, sd 3.1
    text = str(result)
    assert "policy" in text and "holdout (uniform)" in text
    assert "difference (policy - holdout)" in text
    # The likes decided their decisions at once; the others are open until their window
    # closes, and said so.
    assert "no decided reward yet" in text
    # Through the command line, with the store's options.
    code = cli_main(["holdout", "--state-dir", str(tmp_path / "state"), "--arms",
                     ",".join(ARMS), "--bootstrap", "100"])
    assert code == 0
    assert "difference (policy - holdout)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--bootstrap"):
        holdout_command(settings, n_bootstrap=99)
    # numpy's "expected non-negative integer" named no option (found by attack)
    for command in ("holdout", "credit"):
        assert cli_main([command, "--state-dir", str(tmp_path / "state"), "--arms",
                         ",".join(ARMS), "--bootstrap-seed", "-1"]) == 2
        err = capsys.readouterr().err
        assert ("seed (--bootstrap-seed) must be an integer from 0 to 9,223,372,036,854,775,807, "
                "got -1") in err, err


def test_the_holdout_command_says_when_no_decision_had_a_holdout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS, seed=5)
    _serve(settings, 3)
    with pytest.raises(CommandError, match="no decision logged with a holdout") as refused:
        holdout_command(settings)
    assert refused.value.exit_code == 2
    assert cli_main(["holdout", "--state-dir", str(tmp_path / "state"), "--arms",
                     ",".join(ARMS)]) == 2
    assert "no decision logged with a holdout" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the report
def _rows(rng: np.random.Generator, n: int, share: float, p_policy: float, p_holdout: float,
          n_open: int = 0) -> list[tuple[str, dict, float | None]]:
    rows = []
    for i in range(n):
        held = bool(rng.random() < share)
        p = p_holdout if held else p_policy
        entry = {"share": share, "baseline": "uniform", "draw": 0.0, "held_out": held}
        reward = None if i < n_open else float(rng.random() < p)
        rows.append(("svd", {"name": "ThompsonSampling", "holdout": entry}, reward))
    return rows


def test_a_truly_better_policy_has_its_difference_interval_above_zero() -> None:
    rows = _rows(np.random.default_rng(1), 1200, 0.25, 0.45, 0.25, n_open=30)
    rows.append(("svd", {"name": "ThompsonSampling"}, 1.0))  # logged with no holdout
    report = holdout_report(rows, n_bootstrap=500, seed=0)
    assert report.policy.decisions + report.holdout.decisions == 1200
    assert report.policy.open + report.holdout.open == 30
    assert report.without_holdout == 1
    assert report.difference == pytest.approx(report.policy.rate - report.holdout.rate)
    assert 0.15 < report.difference < 0.25
    assert report.low > 0 and report.low < report.difference < report.high
    assert report.policy.low < report.policy.rate < report.policy.high
    text = format_report(report)
    assert "30 decision(s) have no decided reward yet" in text
    assert "1 policy decision(s) were logged while no holdout ran" in text


def test_a_report_before_any_window_closes_says_so_instead_of_printing_nan() -> None:
    # Found by the README's audit: right after serving, every row read "nan [nan, nan]".
    rows = _rows(np.random.default_rng(3), 40, 0.25, 0.5, 0.5, n_open=40)
    report = holdout_report(rows, n_bootstrap=100, seed=0)
    text = format_report(report)
    assert "nan" not in text
    assert text.count("none decided yet") == 2
    assert "difference (policy - holdout): none (a group has no decided reward yet)" in text
    assert "40 decision(s) have no decided reward yet" in text
    # One group decided, the other not: its row reads as usual, the difference does not.
    decided = [(arm, policy, 1.0 if policy["holdout"]["held_out"] else None)
               for arm, policy, _ in rows]
    text = format_report(holdout_report(decided, n_bootstrap=100, seed=0))
    assert "nan" not in text and text.count("none decided yet") == 1
    assert "1.0000  [1.0000, 1.0000]" in text and "difference (policy - holdout): none" in text


def test_a_group_with_no_decision_is_said_to_have_none() -> None:
    """Found by attack: a holdout group that served nothing read "none decided yet" and "a
    group has no decided reward yet", as if its rewards were on their way."""
    rows = [(arm, policy, 1.0) for arm, policy, _ in _rows(np.random.default_rng(4), 30, 0.25,
                                                           0.5, 0.5)
            if not policy["holdout"]["held_out"]]
    text = format_report(holdout_report(rows, n_bootstrap=100, seed=0))
    held = next(line for line in text.splitlines() if line.startswith("holdout"))
    assert held.split()[-2:] == ["no", "decisions"] and "yet" not in text, text
    assert "difference (policy - holdout): none (the holdout group has no decisions)" in text
    assert "the policy and the holdout groups have no decisions" in format_report(
        holdout_report([], n_bootstrap=100, seed=0))


def test_a_holdout_group_with_no_decision_is_labelled_with_its_baseline() -> None:
    """Found by a README check: the group that served nothing yet read ``holdout (-)``; its
    baseline is the configuration's (``uniform``, or the arm the settings name)."""
    for baseline in ("uniform", "popularity"):
        rows = [(arm, {**policy, "holdout": {**policy["holdout"], "baseline": baseline}}, 1.0)
                for arm, policy, _ in _rows(np.random.default_rng(4), 30, 0.25, 0.5, 0.5)
                if not policy["holdout"]["held_out"]]
        report = holdout_report(rows, n_bootstrap=100, seed=0)
        assert report.baselines == [baseline] and report.holdout.decisions == 0
        held = [line for line in format_report(report).splitlines()
                if line.startswith("holdout")]
        assert held[0].startswith(f"holdout ({baseline}) ") and held[0].endswith("no decisions")


def test_an_equal_policy_has_its_difference_interval_covering_zero() -> None:
    rows = _rows(np.random.default_rng(2), 1200, 0.25, 0.35, 0.35)
    report = holdout_report(rows, n_bootstrap=500, seed=0)
    assert report.low < 0 < report.high
    assert report.high - report.low < 0.15  # narrow enough to have told a 0.2 gap
    with pytest.raises(ValueError, match="n_bootstrap"):
        holdout_report(rows, n_bootstrap=99)


def test_the_bootstrap_count_is_refused_by_one_check_with_one_message(tmp_path: Path) -> None:
    # The two commands (before the store is opened: none is created) and the two reports.
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS)
    calls = {"holdout": lambda n: holdout_command(settings, n_bootstrap=n),
             "credit": lambda n: credit_command(settings, n_bootstrap=n),
             "holdout_report": lambda n: holdout_report([], n_bootstrap=n),
             "credit_report": lambda n: credit_report([], [], {}, ARMS, n_bootstrap=n)}
    messages = {}
    for name, call in calls.items():
        # found by attack: 1 resample printed an interval without its estimate; 10**9 asked
        # for 22 GiB (the ceiling is bandits.ope's, as the floor)
        for n in (1, 99, 100_001):
            with pytest.raises(ValueError) as refused:
                call(n)
            messages[name, n] = str(refused.value)
        with pytest.raises(TypeError, match=r"n_bootstrap \(--bootstrap\) must be an int, "
                                            r"got 1.5"):
            call(1.5)
    assert set(messages.values()) == {
        *(f"n_bootstrap (--bootstrap)={n} is too few resamples for a percentile interval; "
          "allowed: 0 (no interval) or 100 to 100,000" for n in (1, 99)),
        "n_bootstrap (--bootstrap)=100001 is more resamples than are kept; allowed: 0 (no "
        "interval) or 100 to 100,000"}, messages
    assert not (tmp_path / "state").exists()


def test_no_bootstrap_resamples_give_the_rates_without_intervals_as_ope_does(
        tmp_path: Path) -> None:
    """Found by a README check: ``holdout --bootstrap 0`` and ``credit --bootstrap 0`` were
    refused ("allowed: 100 to 100,000") where ``ope`` took 0 and the README said every
    command's ``--bootstrap`` did: one rule, 0 gives the rates and says there are no
    intervals."""
    rows = _rows(np.random.default_rng(1), 300, 0.25, 0.45, 0.25)
    with_intervals = holdout_report(rows, n_bootstrap=100, seed=0)
    report = holdout_report(rows, n_bootstrap=0, seed=0)
    for group in ("policy", "holdout"):
        assert getattr(report, group).rate == getattr(with_intervals, group).rate
        assert np.isnan(getattr(report, group).low) and np.isnan(getattr(report, group).high)
    assert report.difference == with_intervals.difference and np.isnan(report.low)
    text = format_report(report).splitlines()
    assert text[3] == f"difference (policy - holdout): {report.difference:+.4f}  95% interval -"
    assert text[4] == "note: no intervals: 0 bootstrap resamples asked (--bootstrap 0)"
    assert all(line.endswith(("  -", "-", ")")) for line in text[1:3]) and "nan" not in text
    credited = credit_report([("e1", {"arms": ["svd", "popularity"]}),
                              ("e2", {"arms": ["svd", "popularity"]})],
                             [("e1", "svd", 1.0), ("e2", "svd", 0.0), ("e1", "popularity", 0.0),
                              ("e2", "popularity", 0.0)], {}, ARMS, n_bootstrap=0)
    assert credited.arms["rate"].tolist() == [0.5, 0.0] and credited.arms["low"].isna().all()
    assert "note: no intervals: 0 bootstrap resamples asked (--bootstrap 0)" in format_credit(
        credited)
    settings = Settings(state_dir=tmp_path / "state", arms=ARMS)
    assert holdout_command(settings, n_bootstrap=0).exit_code == 0  # nothing to compare
    with pytest.MonkeyPatch.context() as env:  # the commands: nothing at the default place
        env.setenv("XDG_STATE_HOME", str(tmp_path / "default"))
        for command in ("credit", "holdout"):
            assert cli_main([command, "--bootstrap", "0", "--arms", ",".join(ARMS)]) == 0


def test_the_holdout_report_gives_one_outcome_no_interval_as_credit_does() -> None:
    group, _ = holdout._group([("svd", 1.0), ("svd", None)], 200, np.random.default_rng(0))
    assert (group.decided, group.rate) == (1, 1.0)
    assert np.isnan(group.low) and np.isnan(group.high)  # it was [1.0, 1.0]
    # Printed as no interval, and the difference with such a group has none either (review:
    # "[nan, nan]", and a difference interval [-0.3333, -0.3333] from 3 and 1 outcomes).
    policy = {"holdout": {"share": 0.2, "held_out": False, "baseline": "uniform"}}
    held = {"holdout": {"share": 0.2, "held_out": True, "baseline": "uniform"}}
    report = holdout_report([("svd", policy, 1.0), ("svd", policy, 0.0), ("svd", policy, 1.0),
                             ("svd", held, 1.0)], n_bootstrap=200)
    assert np.isnan(report.low) and np.isnan(report.high)
    text = format_report(report)
    assert "nan" not in text and "[-0.3333, -0.3333]" not in text, text
    assert "difference (policy - holdout): -0.3333  95% interval - (a group has one decided " \
        "reward)" in text
    ends = [line.rsplit("  ", 1)[-1] for line in text.splitlines()[1:3]]
    assert ends[0] == f"[{report.policy.low:.4f}, {report.policy.high:.4f}]" and ends[1] == "-"


def test_decisions_of_other_holdout_configurations_are_left_out_and_named() -> None:
    """Found by attack: after a restart that changed the baseline (uniform -> popularity) and the
    share (0.2 -> 0.3), the report pooled both periods into +0.013, where the periods' own
    differences were +0.067 and -0.067: the groups drew from the periods in other proportions.
    """
    rng = np.random.default_rng(4)
    first = _rows(rng, 600, 0.2, 0.6, 0.3)  # policy better by 0.3 under the first config
    second = [(arm, {**policy, "holdout": {**policy["holdout"], "share": 0.5,
                                           "baseline": "popularity"}}, reward)
              for arm, policy, reward in _rows(rng, 600, 0.5, 0.3, 0.6)]  # worse by 0.3
    report = holdout_report(first + second, n_bootstrap=200, seed=0)
    alone = holdout_report(second, n_bootstrap=200, seed=0)
    assert (report.policy, report.holdout, report.difference) == (
        alone.policy, alone.holdout, alone.difference)  # the latest configuration only
    assert report.difference < -0.2 and report.baselines == ["popularity"]
    assert report.configuration.startswith("share 0.5, baseline popularity, policy ")
    assert report.other_configurations == [
        ('share 0.2, baseline uniform, policy {"name": "ThompsonSampling"}', 600)]
    text = format_report(report)
    assert "holdout (popularity)" in text
    assert ("note: 600 decision(s) of another configuration (share 0.2, baseline uniform, "
            'policy {"name": "ThompsonSampling"}) left out') in text

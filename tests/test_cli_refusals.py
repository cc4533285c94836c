"""Bad input on the lab's command line is one line on stderr and exit 2, never a traceback,
and nothing is written (found by an attack on the CLI: each case below printed a traceback,
ran with an input silently ignored, or clobbered a file).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import cli

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``recbandits argv``; assert exit 2 with one line on stderr, and return it."""
    status = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"recbandits {argv[0]}: "), err
    return err


def fixed_ctr_with(tmp_path: Path, old: str, new: str) -> str:
    text = (CONFIGS / "fixed_ctr.toml").read_text()
    assert old in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("ctr = [", "ctr = [nan, ", "[env.params] of recbandits/FixedCTR-v0: ctr must hold "
     "probabilities within [0, 1]"),
    ("ctr = [", "ctrs = [", "[env.params] of recbandits/FixedCTR-v0: "),
])
def test_bad_env_params_are_one_line_naming_the_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str,
        message: str) -> None:
    out = tmp_path / "run"
    err = refused(capsys, ["simulate", fixed_ctr_with(tmp_path, old, new), "--runs", "2",
                           "--horizon", "20", "-q", "--out", str(out)])
    assert message in err
    assert not out.exists()


def test_an_env_param_of_the_wrong_type_is_one_line_naming_the_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The parameter checks raise TypeError for a value of the wrong type (``reward = 1``):
    it was a traceback from the worker (found by review once the environments took the one
    choice rule)."""
    text = (CONFIGS / "movielens.toml").read_text()
    assert 'reward = "any"' in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace('reward = "any"', "reward = 1", 1))
    err = refused(capsys, ["simulate", str(path), "--dataset", "synthetic", "--runs", "2",
                           "--horizon", "20", "-q", "--out", str(tmp_path / "run")])
    assert ("[env.params] of recbandits/MovieLens-v0: reward must be a string, one of "
            "['any', 'count', 'signed'], got 1") in err
    assert not (tmp_path / "run").exists()


def test_dataset_options_apply_to_the_env_given_by_env(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--dataset`` and ``--data`` with ``--env``: applied to that env, not dropped with the
    config's [env.params] (found by attack: the run went on MovieLens 100K, exit 0)."""
    argv = ["simulate", "movielens", "--env", "recbandits/MovieLensSim-v0", "--runs", "2",
            "--workers", "1", "--horizon", "20", "-q", "--no-plots", "--out", str(tmp_path / "run")]
    missing = tmp_path / "no-such-folder"
    err = refused(capsys, [*argv, "--data", str(missing)])
    assert str(missing) in err and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = refused(capsys, [*argv, "--data", str(empty), "--dataset", "ml-1m"])
    assert "holds no ml-1m files" in err
    assert not (tmp_path / "run").exists()


def test_a_slate_environment_is_refused_by_simulate(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, ["simulate", "fixed_ctr", "--env", "recbandits/SyntheticSlate-v0",
                           "--runs", "2", "--horizon", "20", "-q", "--out",
                           str(tmp_path / "run")])
    assert "an arm for each slate position" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["simulate", "fixed_ctr", "--horizon", str(10**13)],
     "horizon must be an integer from 1 to 100,000,000, got 10000000000000"),
    (["simulate", "fixed_ctr", "--workers", "1000"],
     "workers must be an integer from 1 to 256, got 1000"),
    (["evaluate-arms", "--synthetic", "2000", "--jobs", "500"],
     "n_jobs must be an integer from 1 to 256, got 500"),
    (["evaluate-arms", "--synthetic", "2000", "--arms", "popularity,popularity"],
     "arms must name each arm once, got ['popularity'] twice"),
    (["replay", "--synthetic", "3000", "--arms", "popularity,popularity"],
     "arms must name each arm once, got ['popularity'] twice"),
    (["replay", "--synthetic", "3000", "--arms", ""], "--arms: name at least one arm"),
    # An empty name is refused, not dropped (found by a README check: "svd," ran svd alone);
    # the registry's one rule of an arm list, as the bandits' arm names.
    (["replay", "--synthetic", "3000", "--arms", ","], "replay: --arms: arms contains an empty "
     "name; arm names must be non-empty, got ['', '']"),
    (["evaluate-arms", "--synthetic", "2000", "--arms", "svd,"], "evaluate-arms: --arms: arms "
     "contains an empty name; arm names must be non-empty, got ['svd', '']"),
    (["serve", "--dataset", "synthetic", "--port", "1", "--arms", "svd,"], "serve: arms: arms "
     "contains an empty name; arm names must be non-empty, got ['svd', '']"),
    (["replay", "--synthetic", "3000", "--half-life-days", "inf"],
     "--half-life-days: half_life_days must be a number of days, at least 1.16e-05 (one "
     "second) and finite in seconds (below 2.08e+303), got inf"),
    (["replay", "--synthetic", "3000", "--half-life-days", "1e-20"],
     "half_life_days must be a number of days, at least 1.16e-05 (one second)"),
    # Finite in seconds (found by attack: the arm's fit refused "half_life ... got inf").
    (["replay", "--synthetic", "3000", "--half-life-days", "1e308"],
     "--half-life-days: half_life_days must be a number of days"),
    (["replay", "--synthetic", "3000", "--bootstrap", "3"], "replay: --bootstrap: "),
    # From 10 resamples an interval called a difference significant in 10% of seeds where
    # 1,000 never did; 10**8 ran for minutes (found by attack): the bandits' one range.
    (["replay", "--synthetic", "3000", "--bootstrap", "99"], "n_bootstrap=99 is too few "
     "resamples for a percentile interval; allowed: 0 (no interval) or 100 to 100,000"),
    (["replay", "--synthetic", "3000", "--bootstrap", "100000000"], "n_bootstrap=100000000 is "
     "more resamples than are kept; allowed: 0 (no interval) or 100 to 100,000"),
    # One message with the real range: "from 1" was followed by a second message refusing
    # 10 ("at least n_users (943)"; found by a README check).
    (["replay", "--synthetic", "0"], "replay: --synthetic: n_ratings must be an integer from "
     "943 to 793,063, got 0"),
    (["replay", "--synthetic", "10"], "replay: --synthetic: n_ratings must be an integer from "
     "943 to 793,063, got 10"),
    (["evaluate-arms", "--synthetic", "10"], "evaluate-arms: --synthetic: synthetic must be an "
     "integer from 20 to 100,000,000, got 10"),
    # No ceiling: these ran until killed (found by attack).
    (["replay", "--synthetic", "10000000000"], "n_ratings must be an integer from 943 to "
     "793,063, got 10000000000"),
    (["evaluate-arms", "--synthetic", "10000000000"], "synthetic must be an integer from 20 to "
     "100,000,000, got 10000000000"),
    (["evaluate-arms", "--synthetic", "2000", "--seeds", "1000000"], "seeds must be an integer "
     "from 1 to 1,000, got 1000000"),
    (["simulate", "fixed_ctr", "--runs", "2", "--scheduler", "notaurl"],
     "scheduler must be a Dask scheduler's address such as tcp://host:8786, got 'notaurl': no "
     "port (host:port)"),
    # Refused at once: it waited 20 s for the connection to fail (found by attack).
    (["simulate", "fixed_ctr", "--runs", "2", "--scheduler", "tcp://127.0.0.1:99999"],
     "got 'tcp://127.0.0.1:99999': the port must be a number from 1 to 65,535, got '99999'"),
    # Every command's --seed: at most what config.toml's TOML integer holds (found by attack:
    # simulate wrote 99999999999999999999999999 there, a file other TOML readers refuse).
    (["simulate", "fixed_ctr", "--runs", "2", "--seed", "99999999999999999999999999"],
     "simulate: seed must be an integer from 0 to 9,223,372,036,854,775,807, got "
     "99999999999999999999999999"),
    (["replay", "--synthetic", "3000", "--seed", str(2**63)], "replay: --seed: seed must be an "
     "integer from 0 to 9,223,372,036,854,775,807, got 9223372036854775808"),
    (["ope", "--db", "sqlite:///x.db", "--seed", str(2**63)], "ope: seed must be an integer "
     "from 0 to 9,223,372,036,854,775,807"),
    (["retrain", "--seed", str(2**63)], "retrain: seed: seed must be an integer from 0 to "
     "9,223,372,036,854,775,807"),
    (["credit", "--bootstrap-seed", str(2**63)], "credit: seed (--bootstrap-seed) must be an "
     "integer from 0 to 9,223,372,036,854,775,807"),
    (["simulate", "fixed_ctr", "--runs", "2", "--executor", "local", "--scheduler",
      "tcp://127.0.0.1:1"], "needs executor='dask'"),
    (["rebuild-state", "--policy", "Nope"], "rebuild-state: policy: policy must be "
     "one of ['ThompsonSampling',"),
    (["ope", "--obd", "--out", "runs/x"], "--out: for the service's log, not with --obd"),
    (["ope", "--campaign", "men"], "--campaign: only with --obd"),
    # --shadow replaces the candidates: their options were ignored (found by a README check).
    (["ope", "--shadow", "--ts-prior", "1,1", "--linear", "LinUCB:alpha=1"], "--ts-prior, "
     "--linear: the candidates' options, not with --shadow (it evaluates the logged shadow "
     "policy instead of the candidates)"),
    (["ope", "--obd", "--linear", "LinUCB:alpha=1"], "--linear: for the service's log, not "
     "with --obd"),
    # Both name the store: --state-dir was ignored (found by a README check).
    (["ope", "--db", "sqlite:///x.db", "--state-dir", "."], "--db, --state-dir: each names the "
     "store to read; give one"),
    (["ope", "--db", "sqlite:///x.db", "--ts-prior", "nan,1"], "ts_priors alpha (--ts-prior)=nan "
     "must be finite"),
    # The bandits' own ranges, checked by OPEConfig before the log is read (found by review:
    # the old "> 0" checks took them, and the run refused them after reading the log).
    (["ope", "--db", "sqlite:///x.db", "--ts-prior", "0.05,1"], "ts_priors alpha (--ts-prior)=0.05 "
     "is outside the allowed range [0.1, 1e+09]"),
    (["ope", "--db", "sqlite:///x.db", "--bootstrap", "5"], "n_bootstrap=5 is too few "
     "resamples"),
    # Written as the parser's refusal of a negative value advises (below).
    (["ope", "--db", "sqlite:///x.db", "--ts-prior=-1,1"], "ts_priors alpha (--ts-prior)=-1.0 "
     "is outside the allowed range [0.1, 1e+09]"),
])
def test_out_of_range_duplicate_and_ignored_options_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert message in refused(capsys, [*argv, *(["-q"] if argv[0] in ("simulate", "replay")
                                               else [])])
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("command", [["simulate", "fixed_ctr", "--runs", "2", "--horizon", "20",
                                      "-q"],
                                     ["evaluate-arms", "--synthetic", "2000"],
                                     ["replay", "--synthetic", "3000", "-q"],
                                     ["ope", "--db", "sqlite:///none.db"]])
def test_an_out_folder_that_is_a_file_or_under_one_is_refused_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    assert "is a file, not a folder" in refused(capsys, [*command, "--out", str(blocker)])
    assert "lies under the file" in refused(capsys, [*command, "--out", str(blocker / "run")])
    assert blocker.read_text() == "keep me"
    # A folder where the run writes a file: replay and evaluate-arms found it after the run.
    first = {"simulate": "config.toml", "evaluate-arms": "metrics.csv", "replay": "summary.csv",
             "ope": "ope.csv"}[command[0]]
    (tmp_path / "clash" / first).mkdir(parents=True)
    assert f"'{tmp_path / 'clash' / first}' is a folder, where the run writes a file" in refused(
        capsys, [*command, "--out", str(tmp_path / "clash")])
    # A place nobody may write, root included (os.access let root pass; a traceback then).
    said = refused(capsys, [*command, "--out", "/proc/recbandits/run"])
    assert "--out '/proc/recbandits/run': nothing can be written in '/proc' (" in said, said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clash", "taken"]
    assert [p.name for p in (tmp_path / "clash").iterdir()] == [first]


def test_a_value_starting_with_a_dash_is_refused_with_how_to_write_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Found by attack: argparse reads ``--ts-prior -1,1`` as two options and said only
    "expected one argument"."""
    with pytest.raises(SystemExit) as refusal:
        cli.main(["ope", "--ts-prior", "-1,1"])
    assert refusal.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "recbandits ope: argument --ts-prior: expected one argument (a value that "
        "starts with '-' is written --ts-prior=VALUE) (see recbandits ope --help)")
    # An abbreviation says it too; an option given no value at all does not (review).
    with pytest.raises(SystemExit):
        cli.main(["ope", "--ts", "-1,1"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "--ts-prior=VALUE) (see recbandits ope --help)")
    with pytest.raises(SystemExit):
        cli.main(["ope", "--out"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "recbandits ope: argument --out: expected one argument (see recbandits ope --help)")


@pytest.mark.parametrize(("argv", "line"), [
    (["simulate", "--executor", "bogus"], "recbandits simulate: argument --executor: invalid "
     "choice: 'bogus' (choose from 'local', 'dask') (see recbandits simulate --help)"),
    (["simulate", "--workers", "abc"], "recbandits simulate: argument --workers: "),
    (["evaluate-arms", "--seeds", "abc"], "recbandits evaluate-arms: argument --seeds: "),
    (["replay", "--cold-users", "bogus"], "recbandits replay: argument --cold-users: invalid "
     "choice: 'bogus' (choose from 'drop', 'include') (see recbandits replay --help)"),
    # Review: words no parser took were refused by the top command, pointing to its --help.
    (["shadow", "status", "--bogus"], "recbandits shadow status: unrecognized arguments: "
     "--bogus (see recbandits shadow status --help)"),
    (["simulate", "fixed_ctr", "--bogus", "x"], "recbandits simulate: unrecognized arguments: "
     "--bogus x (see recbandits simulate --help)"),
    (["bogus"], "recbandits: argument COMMAND: invalid choice: 'bogus'"),
])
def test_an_option_argparse_refuses_is_one_line_naming_the_command(
        capsys: pytest.CaptureFixture[str], argv: list[str], line: str) -> None:
    """Found by attack: argparse printed its 4- to 7-line usage block before the refusal,
    where the README promises one line on stderr and exit 2."""
    with pytest.raises(SystemExit) as refusal:
        cli.main(argv)
    assert refusal.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(line), err
    assert err.rstrip().endswith("--help)"), err


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """Review: ``recbandits --version`` was refused as a missing COMMAND."""
    from experiments.config import package_version

    with pytest.raises(SystemExit) as printed:
        cli.main(["--version"])
    assert printed.value.code == 0
    assert capsys.readouterr().out == f"recbandits {package_version()}\n"


def test_exports_to_one_file_or_to_a_folder_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'none.db'}"
    same = str(tmp_path / "log.out")
    assert "name the same file" in refused(capsys, ["ope", "--db", db, "--export-csv", same,
                                                    "--export-obp", same])
    assert "is a folder" in refused(capsys, ["ope", "--db", db, "--export-csv", str(tmp_path)])
    # An export nobody may write is said before the run (after it had written its table).
    said = refused(capsys, ["ope", "--db", db, "--out", str(tmp_path / "run"),
                            "--export-obp", "/proc/recbandits/log.npz"])
    assert said.endswith("--export-obp '/proc/recbandits': nothing can be written in '/proc' "
                         "(No such file or directory)"), said
    # An empty path: simulate wrote into the working folder, ope into its default.
    assert refused(capsys, ["ope", "--db", db, "--out", ""]).endswith("--out '': give a folder")
    assert refused(capsys, ["ope", "--db", db, "--export-csv", ""]).endswith(
        "--export-csv '': give a file")
    assert list(tmp_path.iterdir()) == []
    # A folder named as the shadow table is only in the way of ope --shadow.
    (tmp_path / "run" / "shadow.csv").mkdir(parents=True)
    assert "shadow.csv' is a folder" in refused(capsys, ["ope", "--db", db, "--shadow", "--out",
                                                         str(tmp_path / "run")])
    assert cli._out_refusal(str(tmp_path / "run"), cli._run_files(cli.build_parser().parse_args(
        ["ope", "--db", db, "--out", str(tmp_path / "run")]))) is None


@pytest.mark.parametrize("shadow, option, name", [
    (False, "--export-csv", "ope.csv"), (False, "--export-obp", "summary.json"),
    (False, "--export-csv", "summary.json"), (True, "--export-csv", "shadow.csv"),
    (True, "--export-obp", "shadow.csv")])
def test_an_export_naming_a_file_of_the_out_folder_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        shadow: bool, option: str, name: str) -> None:
    """Found by attack: ``ope --out DIR --export-csv DIR/ope.csv`` replaced the estimates with
    the log, ``--export-obp DIR/summary.json`` made the summary a zip, exit 0."""
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'none.db'}"
    (tmp_path / "run").mkdir()
    flags = ["--shadow"] if shadow else []
    said = refused(capsys, ["ope", "--db", db, *flags, "--out", "run", option,
                            str(tmp_path / "run" / name)])
    assert said == (f"recbandits ope: {option} '{tmp_path / 'run' / name}' names the {name} "
                    "that --out 'run' gets: give the export another file")
    assert list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize("command", ["credit", "holdout"])
def test_a_store_that_is_not_a_database_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database at all, but long enough to have a header" * 4)
    err = refused(capsys, [command, "--db", f"sqlite:///{path}"])
    assert f"the store cannot be read: '{path}' is not an SQLite database" in err


@pytest.mark.parametrize("command", [["evaluate-arms", "--seeds", "1"],
                                     ["replay", "-q", "--max-events", "10"],
                                     ["simulate", "movielens", "--runs", "2", "--horizon", "5",
                                      "-q"]])
def test_a_corrupt_data_file_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    """Found by attack: a traceback ending in "invalid literal for int() with base 10"."""
    from test_data import _tiny_copy

    folder = _tiny_copy(tmp_path / "data", "ml-100k", "u.data", 2, "1\tabc\t3\t881250949")
    monkeypatch.setenv("RECBANDITS_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    err = refused(capsys, [*command, "--out", str(tmp_path / "out")])
    assert f"{folder / 'u.data'}: line 2: item_id 'abc' is not an integer" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["evaluate-arms", "--seeds", "1", "--no-tune"],
                                     ["replay", "-q", "--max-events", "10"]])
def test_a_ratings_file_without_a_rating_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    """Found by attack: an empty u.data ended replay in numpy's "cannot do a non-empty take"
    and evaluate-arms in "train holds no rating", each a traceback and exit 1."""
    from test_data import _tiny_copy

    folder = _tiny_copy(tmp_path / "data", "ml-100k")
    (folder / "u.data").write_text("")
    monkeypatch.setenv("RECBANDITS_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    err = refused(capsys, [*command, "--out", str(tmp_path / "out")])
    assert f"{folder / 'u.data'}: holds no rating" in err
    assert not (tmp_path / "out").exists()


def test_verbose_shows_the_traceback_and_an_internal_fault_keeps_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """Found by review: any OSError with a file name, and any database error, had become one
    line, hiding internal faults; and -v did not show the traceback of a refusal."""
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    argv = ["replay", "--synthetic", "3000", "-q", "--out", str(blocker / "run")]
    assert cli.main(argv) == 2  # refused before the run, whatever -v
    capsys.readouterr()
    from experiments import replay

    def broken(*_: object, **__: object) -> None:  # a file of the code's own, not the user's
        raise FileNotFoundError(2, "No such file or directory", "/nonexistent/internal.json")

    monkeypatch.setattr(replay, "run", broken)
    with pytest.raises(FileNotFoundError, match=r"internal\.json"):
        cli.main(["replay", "--synthetic", "3000", "-q", "--out", str(tmp_path / "out")])
    # A corrupt data file: one line, and with -v its traceback.
    from test_data import _tiny_copy

    _tiny_copy(tmp_path / "data", "ml-100k", "u.data", 2, "1\tabc\t3\t881250949")
    monkeypatch.setenv("RECBANDITS_DATA", str(tmp_path / "data"))
    # -v adds the traceback before the line; the exit status stays the refusal's 2 (it
    # re-raised, exit 1: found by a README check), for a config refusal too.
    assert cli.main(["-v", "evaluate-arms", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "DataFileError" in err
    assert err.rstrip().endswith("item_id 'abc' is not an integer")
    assert cli.main(["-v", "simulate", "fixed_ctr", "--horizon", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith(
        "recbandits simulate: horizon must be")


def test_ope_names_a_bad_setting_in_one_line(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: pydantic's multi-line dump with links, as the other commands had."""
    monkeypatch.setenv("RECBANDITS_POLICY", "Nope")
    assert "ope: policy: policy must be one of [" in refused(capsys, ["ope"])


#: The service's commands that read an existing store (serve creates its own).
STORE_READERS = [["credit"], ["holdout"], ["rebuild-state"], ["purge", "--before", "2020-01-01"],
                 ["shadow", "status"], ["shadow", "promote"], ["models", "list"], ["retrain"]]


@pytest.mark.parametrize("command", STORE_READERS)
def test_a_mistyped_store_path_is_refused_not_nothing_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    """Found by attack: ``credit --state-dir <a mistyped folder>`` printed "nothing to credit:
    no SQLite file at ..." and exited 0, as if the store were merely empty."""
    monkeypatch.chdir(tmp_path)
    name = " ".join(command[:2] if command[0] == "shadow" else command[:1])
    typo, db = tmp_path / "stat", f"sqlite:///{tmp_path / 'state' / 'recbandits.db'}"
    for options, message in [(["--state-dir", str(typo)], f"--state-dir '{typo}': no such "
                               "folder"),
                             (["--db", db], f"--db '{db}': no SQLite file at "
                              f"'{tmp_path / 'state' / 'recbandits.db'}'")]:
        assert cli.main([*command, *options, "--arms", "popularity"]) == 2
        out, err = capsys.readouterr()
        assert (out, err) == ("", f"recbandits {name}: {message}\n")
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("command", [*STORE_READERS, ["ope"]])
def test_a_mistyped_store_path_in_a_variable_or_settings_file_is_refused_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    """Found by a README check: ``RECBANDITS_STATE_DIR=<typo> credit``, ``RECBANDITS_DB=<typo>
    rebuild-state`` (and ``ope``) and a settings file's ``state_dir`` said "nothing to ...",
    exit 0, where the same path as an option was refused: only the default place is."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "default"))
    name = " ".join(command[:2] if command[0] == "shadow" else command[:1])
    typo, db = tmp_path / "stat", f"sqlite:///{tmp_path / 'state' / 'recbandits.db'}"
    folder = "no such folder" if name != "ope" else f"no SQLite file at '{typo / 'recbandits.db'}'"
    cases = [("RECBANDITS_STATE_DIR", str(typo), f"RECBANDITS_STATE_DIR='{typo}': {folder}"),
             ("RECBANDITS_DB", db, f"RECBANDITS_DB='{db}': no SQLite file at "
                                   f"'{tmp_path / 'state' / 'recbandits.db'}'")]
    arms = [] if name == "ope" else ["--arms", "popularity"]
    for variable, value, message in cases:
        with monkeypatch.context() as env:
            env.setenv(variable, value)
            assert cli.main([*command, *arms]) == 2, variable
        assert capsys.readouterr() == ("", f"recbandits {name}: {message}\n")
    if name != "ope":  # (ope reads no settings file)
        settings = tmp_path / "s.toml"
        settings.write_text(f'state_dir = "{typo}"\n')
        monkeypatch.setenv("RECBANDITS_STATE_DIR", str(tmp_path))  # the file's is above it
        assert cli.main([*command, *arms, "--settings", str(settings)]) == 2
        assert capsys.readouterr() == ("", f"recbandits {name}: state_dir '{typo}' in the "
                                           f"settings file '{settings}': no such folder\n")
        settings.unlink()
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("command", STORE_READERS)
def test_a_store_named_where_none_is_is_refused_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    """Found by attack: a folder without a store said "nothing to do" (exit 0; ``models``:
    1); a 0-byte file was made a database; a file that is no database was refused but left
    a marks file beside it; ``models list`` gave another program's database the schema."""
    monkeypatch.chdir(tmp_path)
    name = " ".join(command[:2] if command[0] == "shadow" else command[:1])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    empty, junk, foreign = tmp_path / "empty.db", tmp_path / "junk.db", tmp_path / "other.db"
    empty.write_bytes(b"")
    junk.write_bytes(b"not a database at all, but long enough to have a header" * 4)
    import sqlite3
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text)")
    foreign_bytes = foreign.read_bytes()
    for options, message in [
            (["--state-dir", str(empty_dir)], f"--state-dir '{empty_dir}': no SQLite file at "
                                              f"'{empty_dir / 'recbandits.db'}'"),
            (["--db", f"sqlite:///{empty}"], f"--db 'sqlite:///{empty}': no store in the empty "
                                             f"file '{empty}'"),
            (["--db", f"sqlite:///{junk}"],
             f"the store cannot be read: '{junk}' is not an SQLite database"),
            (["--db", "postgresql+psycopg2://u@127.0.0.1:1/db"],
             "db: the PostgreSQL driver must be psycopg (postgresql+psycopg://...), got "
             "'postgresql+psycopg2'")]:
        assert cli.main([*command, *options, "--arms", "popularity"]) == 2, options
        out, err = capsys.readouterr()
        # A file that is no database is main's one refusal, named as the command's own are
        # (it said "shadow" where the others said "shadow status": found by attack).
        assert (out, err) == ("", f"recbandits {name}: {message}\n")
    if command == ["models", "list"]:  # a database, but not a store: nothing is written to it
        assert cli.main([*command, "--db", f"sqlite:///{foreign}"]) == 0
        assert capsys.readouterr().out == (f"nothing to list: no model versions: "
                                           f"sqlite:///{foreign} holds none\n")
        assert foreign.read_bytes() == foreign_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "empty.db", "junk.db",
                                                          "other.db"]
    assert empty.read_bytes() == b"" and not list(empty_dir.iterdir())


def test_serve_refused_for_its_data_writes_no_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a README check: ``serve`` with a data folder holding no MovieLens exited 2 but
    had made the store first (a database of 16 tables and its marks file), which the other
    commands then took for a store serving nothing. The data is read first now; the message
    names the variable the folder may come from."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("RECBANDITS_DATA", str(empty))
    state = tmp_path / "state"
    assert cli.main(["serve", "--state-dir", str(state), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err  # the progress line, then the refusal
    assert err.splitlines()[-1].startswith(
        f"recbandits serve: the data folder {empty} (--data, RECBANDITS_DATA) holds no "
        "ml-100k files")
    assert not state.exists()


@pytest.mark.parametrize(("options", "env", "said"), [
    (["--db", "sqlite:///{afile}/x.db"], {}, "--db's folder '{afile}' is a file, not a folder"),
    (["--db", "sqlite:///{afile}/sub/x.db"], {},
     "--db's folder '{afile}/sub' lies under the file '{afile}'"),
    (["--state-dir", "{afile}"], {}, "--state-dir '{afile}' is a file, not a folder"),
    (["--state-dir", "{afile}/sub"], {}, "--state-dir '{afile}/sub' lies under the file '{afile}'"),
    ([], {"RECBANDITS_STATE_DIR": "{afile}"}, "state_dir '{afile}' is a file, not a folder"),
    ([], {"RECBANDITS_DB": "sqlite:///{afile}/x.db"},
     "db's folder '{afile}' is a file, not a folder")])
def test_serve_where_a_file_stands_for_its_folder_is_one_line_naming_the_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        options: list[str], env: dict[str, str], said: str) -> None:
    """Found by a README check: a ``--db`` file under a file ended in a 47-line traceback
    (``FileExistsError``, exit 1), and a ``--state-dir`` that was a file or lay under one said
    only "File exists: ..." or "Not a directory: ...": now ``--out``'s rule and wording,
    before the data is read, and nothing is made."""
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(afile=afile))
    err = refused(capsys, ["serve", "--dataset", "synthetic", "--port", "1",
                           *(option.format(afile=afile) for option in options)])
    assert err == f"recbandits serve: {said.format(afile=afile)}"
    assert [p.name for p in tmp_path.iterdir()] == ["afile"] and afile.read_bytes() == b""


@pytest.mark.parametrize("where", ["--db", "--state-dir"])
def test_serve_on_a_store_file_that_is_no_database_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        where: str) -> None:
    """Found by a README check: ``serve`` refused a store file that is not a database (exit 2)
    but left a 512 KiB ``-marks`` file beside it, and its message named no file. The file's
    first bytes are looked at before the store is opened: one line naming it, nothing
    written."""
    state = tmp_path / "state"
    state.mkdir()
    junk = state / "recbandits.db"
    junk.write_bytes(b"garbage\n")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    option = f"sqlite:///{junk}" if where == "--db" else str(state)
    err = refused(capsys, ["serve", "--dataset", "synthetic", "--port", "1", where, option])
    assert err == f"recbandits serve: the store cannot be read: '{junk}' is not an SQLite database"
    assert [p.name for p in tmp_path.iterdir()] == ["state"]
    assert [p.name for p in state.iterdir()] == ["recbandits.db"]
    assert junk.read_bytes() == b"garbage\n"


#: What each store reader says where no store has been made yet at the default place, and
#: its exit status: nothing to do (0), or a refusal of an action on what is not there (1).
NOT_MADE_YET = {"credit": ("nothing to credit", 0), "holdout": ("nothing to compare", 0),
                "rebuild-state": ("nothing to rebuild", 0), "purge": ("nothing to purge", 0),
                "shadow status": ("nothing to show", 0),
                "shadow promote": ("nothing to promote", 1),
                "models list": ("nothing to list: no model versions", 0),
                "retrain": ("nothing to retrain", 0)}


@pytest.mark.parametrize("command", STORE_READERS)
def test_a_store_not_made_yet_at_the_default_place_is_nothing_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    """Found by a README check: ``models list`` exited 1 ("no model versions") where the
    README says every store reader's answer is "nothing to do", exit 0, as ``shadow status``'s;
    a promotion of nothing stays a refusal (1)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    name = " ".join(command[:2] if command[0] in ("shadow", "models") else command[:1])
    says, status = NOT_MADE_YET[name]
    assert cli.main([*command, "--arms", "popularity"]) == status
    out, err = capsys.readouterr()
    where = tmp_path / "state" / "recbandits" / "recbandits.db"
    # The reason as the store says it (it said "db: no SQLite file" before: the review)
    said = (out if status == 0 else err).splitlines()
    assert len(said) == 1 and f"{says}: no SQLite file at '{where}'" in said[0], (out, err)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_ope_on_a_store_not_made_yet_at_the_default_place_is_nothing_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a README check: ``ope --include-open`` (the README's "right after using the
    service") exited 2 where every other store reader says "nothing to ...", exit 0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert cli.main(["ope", "--include-open"]) == 0
    out = capsys.readouterr().out
    where = tmp_path / "state" / "recbandits" / "recbandits.db"
    assert out.startswith(f"nothing to evaluate: no SQLite file at '{where}'")
    assert list(tmp_path.iterdir()) == []  # no run folder, no store


def test_models_actions_on_no_versions_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for action in (["show", "1"], ["promote", "1"], ["rollback"]):
        assert cli.main(["models", *action, "--arms", "popularity"]) == 1, action
        assert "no model versions: no SQLite file at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_db_urls_file_counts_as_given_whatever_its_sqlite_driver(tmp_path: Path) -> None:
    """An error of the file a --db URL names is the user's (one line), for every SQLite URL
    the store takes, not only ``sqlite:///`` (final review)."""
    import argparse

    path = tmp_path / "x.db"
    for url in (f"sqlite:///{path}", f"sqlite+pysqlite:///{path}"):
        assert cli._given(argparse.Namespace(db=url), str(path))
    assert not cli._given(argparse.Namespace(db=f"sqlite:///{path}"), str(tmp_path / "y.db"))
    assert not cli._given(argparse.Namespace(db="postgresql+psycopg://u@h/x"), "/x")


def test_a_reader_that_closes_the_output_stops_the_command_quietly(tmp_path: Path) -> None:
    """Found by a README check: ``recbandits simulate ... | head -1`` printed a
    ``BrokenPipeError`` traceback (exit 1). Now no word on stderr, and the status of a program
    stopped by SIGPIPE (141), as ``seq 100000 | head -1`` gives."""
    command = [sys.executable, "-c", "import sys; from experiments.cli import main; "
               "sys.exit(main())", "simulate", "fixed_ctr", "--horizon", "50", "--runs", "2",
               "-q", "--no-plots", "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[1])
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) == cli.BROKEN_PIPE, err
    assert err == ""


def test_simulate_takes_data_as_the_other_commands_do(tmp_path: Path) -> None:
    # Found by a README check: "--data DIR or RECBANDITS_DATA=DIR" points at a local copy, but
    # simulate had no --data. A folder given is the one read, as replay's --data: one without
    # the data is refused (exit 2, naming it), not replaced by synthetic data (review).
    data = os.environ.get("RECBANDITS_DATA")
    env = {k: v for k, v in os.environ.items() if k != "RECBANDITS_DATA"}
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [sys.executable, "-m", "experiments.cli", "simulate", "--horizon", "50",
            "--runs", "2", "-q", "--no-plots"]

    def run(*more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args, *more, "--out", str(tmp_path / "out")], env=env,
                              cwd=Path(__file__).resolve().parents[1], capture_output=True,
                              text=True, timeout=600)

    refused = run("movielens", "--policies", "ThompsonSampling", "--data", str(empty))
    assert refused.returncode == 2, refused.stderr
    # The first line: loky's resource tracker may add a warning of its own as the process
    # ends (its workers probed the environment).
    assert refused.stderr.splitlines()[0] == (
        f"recbandits simulate: the data folder {empty} (--data, RECBANDITS_DATA) holds no "
        f"ml-100k files (expected u.data, u.item, u.user in {empty / 'ml-100k'})")
    # An environment that reads no data does not take it (an ignored option is refused).
    ignored = run("fixed_ctr", "--data", str(empty))
    assert ignored.returncode == 2
    assert ignored.stderr.splitlines()[0] == (
        "recbandits simulate: --data: recbandits/FixedCTR-v0 reads no data files (its "
        "[env.params] take no data_dir); leave --data out")
    # An empty value is not the current folder (attack).
    blank = run("movielens", "--data", "")
    assert blank.returncode == 2 and "--data is empty" in blank.stderr
    if data is None or not (Path(data) / "ml-100k").is_dir():
        pytest.skip("RECBANDITS_DATA holds no ml-100k/ (the test data of make test)")
    read = run("movielens", "--policies", "ThompsonSampling", "--data", data)
    assert read.returncode == 0, read.stderr
    assert "not available" not in read.stderr


SYNTHETIC_READS_NO_DATA = ("--data: the synthetic dataset reads no data files (its ratings "
                           "are generated, not read); leave --data out")


@pytest.mark.parametrize("argv", [
    ["evaluate-arms", "--no-tune", "--seeds", "1", "--arms", "popularity", "--synthetic", "100"],
    ["replay", "--synthetic", "2000", "-q"],
    ["serve", "--dataset", "synthetic", "--port", "1"],
])
def test_data_beside_synthetic_data_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Found by a README check: every command but ``simulate fixed_ctr`` ran on synthetic
    data with a ``--data`` it never read (replay wrote it into config.json as used); now each
    refuses it in simulate's words (``arms.data.files.reads_no_data``), writing nothing."""
    out = ["--state-dir", str(tmp_path / "state")] if argv[0] == "serve" else [
        "--out", str(tmp_path / "run")]
    err = refused(capsys, [*argv, *out, "--data", str(tmp_path / "nonexistent")])
    assert err == f"recbandits {argv[0]}: {SYNTHETIC_READS_NO_DATA}"
    assert list(tmp_path.iterdir()) == []


def test_simulate_refuses_data_beside_synthetic_data() -> None:
    """The same refusal where simulate builds the environment's arguments (its workers
    probe the environment: ``simulate --dataset synthetic --data X`` exits 2 with it)."""
    from experiments import config as cfg
    from experiments import simulate

    with pytest.raises(cfg.ConfigError) as excinfo:
        simulate.env_kwargs({"dataset": "synthetic", "data_dir": "/nonexistent"}, 10)
    assert str(excinfo.value) == SYNTHETIC_READS_NO_DATA
    assert "data_dir" not in simulate.env_kwargs({"dataset": "synthetic"}, 10)


BAD_STORE_URLS = [
    ("postgres+psycopg://u:SECRET1@127.0.0.1:19020/rb", "allowed backends: sqlite, postgresql"),
    ("u:SECRET2@127.0.0.1:19020/rb", "db must be an sqlite:// or postgresql:// URL"),
    ("postgresql+psycopg://u:SECRET3@127.0.0.1:notaport/rb",
     "the port must be a number from 1 to 65,535, got 'notaport' in"),
    ("postgresql+psycopg2://u:SECRET4@127.0.0.1/rb", "the PostgreSQL driver must be psycopg"),
    ("postgresql+psycopg://u:SECRET5@127.0.0.1:99999/rb",
     "the port must be a number from 1 to 65,535, got '99999' in"),
    ("postgresql+psycopg://u:SECRET6@/rb?host=/tmp&port=0",  # was "retry later", exit 3
     "the port must be a number from 1 to 65,535, got '0' in"),
]


@pytest.mark.parametrize(("url", "said"), BAD_STORE_URLS)
@pytest.mark.parametrize("command", [["serve", "--dataset", "synthetic"], ["models", "list"]])
def test_a_store_url_that_names_no_store_is_one_line_without_its_password(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, said: str,
        command: list[str]) -> None:
    """Found by attack: serve printed a traceback ending in the whole URL, password included,
    exit 1; the other commands echoed a misspelt URL's password in their one line."""
    err = refused(capsys, [*command, "--state-dir", str(tmp_path), "--db", url])
    assert said in err and "SECRET" not in err
    assert len(err.strip().splitlines()) == 1


def test_redact_url_hides_every_spelling_of_a_password() -> None:
    from serving.store.errors import redact_url

    assert redact_url("postgresql+psycopg://u:pw@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db?password=pw&sslmode=require") == \
        "postgresql://u@h/db?password=***&sslmode=require"
    assert redact_url("u:pw@h:1/db") == "u:***@h:1/db"
    assert redact_url("postgresql+psycopg://u:pw@h:notaport/db") == \
        "postgresql+psycopg://u:***@h:notaport/db"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    # found by review: all or part of these were shown
    assert redact_url("u:p/w@h/db") == "u:***@h/db"
    assert redact_url("u:pa:ss@h/db") == "u:***@h/db"
    assert redact_url("host=h password=sec dbname=db") == "host=h password=*** dbname=db"
    assert redact_url("postgresql://u@h/db?sslpassword=sec&x=1") == \
        "postgresql://u@h/db?sslpassword=***&x=1"
    # found by attack: SQLAlchemy ends the password at its first "@", the rest was the host's
    assert redact_url("postgresql+psycopg://u:sec@ret@h:1/db") == "postgresql+psycopg://u:***@h:1/db"
    assert redact_url("postgresql+psycopg://u:s@e@c@h/db") == "postgresql+psycopg://u:***@h/db"


def test_an_sqlite_url_naming_a_folder_is_refused_not_retried_as_an_outage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review: SQLite's "unable to open database file" for a folder was an outage, which
    serve retried for startup_timeout_s and the commands called "retry later" (exit 3)."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for command in (["models", "list"], ["serve", "--dataset", "synthetic"]):
        err = refused(capsys, [*command, "--state-dir", str(tmp_path), "--db",
                               f"sqlite:///{folder}"])
        assert f"db: '{folder}' is a folder, not an SQLite file" in err


def test_a_file_the_disk_cannot_hold_is_one_line_and_no_cut_off_file(tmp_path: Path) -> None:
    """Found by attack: with the disk full (here a file-size limit of 4 KiB) simulate left a
    steps.csv cut mid-row, nothing saying so, and ended in a pandas traceback (exit 1). Every
    file a command writes is whole or absent (arms.data.files.write_whole), and the failure
    is one line naming the file."""
    import resource

    def limited() -> None:  # CPython ignores SIGXFSZ: the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "simulate", "fixed_ctr", "--horizon", "400",
         "--runs", "4", "--workers", "1", "-q", "--no-plots", "--out", str(out)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600,
        preexec_fn=limited)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"recbandits simulate: File too large: {out / 'steps.csv'}"), run.stderr
    assert "Traceback" not in run.stderr
    # Nothing: no config.toml alone, no partial file, no staging folder beside (review).
    assert list(tmp_path.iterdir()) == []


def test_write_whole_leaves_the_file_whole_or_absent(tmp_path: Path) -> None:
    from arms.data.files import write_whole

    target = tmp_path / "table.csv"
    target.write_text("the previous run's\n")

    def cut_off(partial: Path) -> None:
        partial.write_text("half a ro")
        raise OSError(27, "File too large")

    with pytest.raises(OSError, match="File too large") as failed:
        write_whole(target, cut_off)
    assert failed.value.filename == str(target)
    assert list(tmp_path.iterdir()) == [target] and target.read_text() == "the previous run's\n"
    assert write_whole(target, lambda p: p.write_text("whole\n")) == target
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    assert target.read_text() == "whole\n"
    # A run killed mid-write (SIGTERM, SIGKILL) leaves its partial file: the next run of the
    # command clears it with the rest (review), and no other file.
    from arms.data.files import clear_run_files

    (tmp_path / ".table.partial-4242.csv").write_text("half")
    (tmp_path / ".other.partial-4242.csv").write_text("not ours")
    clear_run_files(tmp_path, ["table.csv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-4242.csv"]


def test_a_file_the_user_may_not_read_is_one_line_wherever_it_lies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """Found by attack: rebuild-state run by another user than the service's read the arms
    folder the store names (mode 700, outside every path given) and ended in a traceback."""
    from serving import commands

    denied = "/srv/recbandits/arms/20261207T180032-03b14b08/cooccurrence.npz"

    def unreadable(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", denied)

    monkeypatch.setattr(commands, "rebuild_state", unreadable)
    monkeypatch.setattr(cli, "_missing_store", lambda *args: None)
    code = cli.main(["rebuild-state", "--state-dir", str(tmp_path), "--dataset", "synthetic"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"recbandits rebuild-state: Permission denied: {denied}"]  # as a path given


def test_the_python_api_refuses_an_export_naming_a_file_of_the_run(tmp_path: Path) -> None:
    """Review: the clash was refused by the CLI only; ``offpolicy.run`` with ``out_dir=D`` and
    ``export_csv_path=D/ope.csv`` wrote the log over the table. The one rule is the config's."""
    from serving import offpolicy

    db = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(ValueError, match=r"^export_csv_path '.*/run/ope\.csv' names the ope\.csv "
                                         r"that out_dir '.*/run' gets"):
        offpolicy.OPEConfig(url=db, out_dir=tmp_path / "run",
                            export_csv_path=tmp_path / "run" / "ope.csv")
    with pytest.raises(ValueError, match=r"^export_csv_path and export_obp_path name the same"):
        offpolicy.OPEConfig(url=db, out_dir=tmp_path / "run", export_csv_path=tmp_path / "x",
                            export_obp_path=tmp_path / "x")
    # The shadow table only where the run is a shadow run.
    assert offpolicy.OPEConfig(url=db, out_dir=tmp_path / "run",
                               export_csv_path=tmp_path / "run" / "shadow.csv").url == db
    with pytest.raises(ValueError, match=r"names the shadow\.csv"):
        offpolicy.OPEConfig(url=db, out_dir=tmp_path / "run", shadow=True,
                            export_csv_path=tmp_path / "run" / "shadow.csv")


def test_a_warning_is_one_line_as_every_refusal(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Found by attack: the deprecated arm name ``ease`` printed Python's two lines of a
    warning (its source line too) before the command's own lines."""
    missing = tmp_path / "none"
    assert cli.main(["rebuild-state", "--arms", "svd,ease", "--state-dir", str(missing)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "recbandits rebuild-state: warning: arm name 'ease' is deprecated; use 'autoencoder' "
        "(the same arm)",
        f"recbandits rebuild-state: --state-dir '{missing}': no such folder"]
    # -v: Python's own way, with the category and where it was raised (last read).
    with pytest.warns(FutureWarning, match="arm name 'ease' is deprecated") as shown:
        assert cli.main(["-v", "rebuild-state", "--arms", "svd,ease", "--state-dir",
                         str(missing)]) == 2
    assert shown[0].filename.endswith("settings.py")
    assert "warning:" not in capsys.readouterr().err

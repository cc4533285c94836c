"""Every command has the shape of ``simulate``: an importable function that returns a results
object, and a CLI handler that only parses, calls it and prints.

Commands are listed here by kind, so a new command must say which it is:

* the lab's commands (and ``ope``, on the service's log or with ``--obd`` on the Open Bandit
  Dataset) call a module's ``run(config) -> results``;
* the service's commands call ``serving.commands.<name>(settings, ...)``, which returns a
  dataclass of :mod:`serving.results` (``str()`` is the report, ``exit_code`` the status) and
  prints nothing; a refusal is an exception the CLI prints on stderr;
* ``serve`` alone is apart: it runs the server until it stops, so there is no result to return
  but its exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import re
import typing
from pathlib import Path

import pandas as pd
import pytest

from experiments import cli, report, simulate
from experiments import config as cfg
from experiments.results import SimulationResults
from serving import commands
from serving import results as sr
from serving.settings import Settings

#: Command -> the modules whose ``run(config)`` it calls.
LAB_COMMANDS = {"simulate": ("experiments.simulate",), "replay": ("experiments.replay",),
                "evaluate-arms": ("experiments.evaluate_arms",),
                "ope": ("serving.offpolicy", "experiments.obd_ope")}
#: Service command -> its function in serving.commands, returning a results object of
#: serving.results (or of the module that does the work, as serving.versions).
SERVICE_COMMANDS = {"retrain": "retrain", "rebuild-state": "rebuild_state", "purge": "purge",
                    "credit": "credit", "holdout": "holdout", "models": "models",
                    "shadow": ("shadow_status", "shadow_promote")}
#: Commands in neither shape, and why.
OTHER_COMMANDS = {"serve": "runs the server until it stops: no results, only an exit status"}


def _commands() -> set[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_command_is_classified():
    kinds = [set(LAB_COMMANDS), set(SERVICE_COMMANDS), set(OTHER_COMMANDS)]
    assert _commands() == set.union(*kinds) and sum(map(len, kinds)) == len(_commands())


@pytest.mark.parametrize(("command", "module"),
                         [(c, m) for c, ms in sorted(LAB_COMMANDS.items()) for m in ms])
def test_lab_command_module_has_run_taking_a_config(command, module):
    run = importlib.import_module(module).run
    first = next(iter(inspect.signature(run).parameters.values()))
    assert first.name == "config" and first.kind is first.POSITIONAL_OR_KEYWORD


@pytest.mark.parametrize("function", sorted(
    f for fs in SERVICE_COMMANDS.values() for f in ((fs,) if isinstance(fs, str) else fs)))
def test_service_command_takes_the_settings_and_returns_results(function):
    run = getattr(commands, function)
    first = next(iter(inspect.signature(run).parameters.values()))
    assert first.name == "settings" and first.kind is first.POSITIONAL_OR_KEYWORD
    returned = typing.get_type_hints(run)["return"]
    for kind in typing.get_args(returned) or (returned,):
        assert kind.__module__ in ("serving.results", "serving.versions", "serving.shadow"), kind
        assert hasattr(kind, "exit_code") and "__str__" in vars(kind), kind
    # No stream to print to: the function returns, the CLI prints.
    assert "out" not in inspect.signature(run).parameters


def test_simulate_cli_only_parses_calls_and_prints(monkeypatch, capsys, tmp_path):
    calls = []
    row = dict.fromkeys(report.SUMMARY_COLUMNS, 0.5)
    summary = pd.DataFrame([{**row, "policy": "UCB1", "policy_id": "UCB1", "runs": 3,
                             "horizon": 7}])

    def fake_run(config, **options):
        calls.append((config, options))
        options["on_note"]("a note")
        return SimulationResults(config=config, arm_names=["a", "b"], policies=[],
                                 files={"summary.csv": tmp_path / "summary.csv"},
                                 summary=summary)

    monkeypatch.setattr(simulate, "run", fake_run)
    code = cli.main(["simulate", "fixed_ctr", "--runs", "3", "--horizon", "7", "--policies",
                     "UCB1", "--out", str(tmp_path), "--no-plots", "-q"])
    assert code == 0
    (config, options), = calls
    expected = cfg.override(cfg.load("fixed_ctr"), runs=3, horizon=7, policies=["UCB1"])
    assert config == expected
    assert options["out_dir"] == str(tmp_path)
    assert (options["progress"], options["plots"]) == (False, False)
    out, err = capsys.readouterr()
    assert out == report.markdown_table(summary) + f"\nsummary.csv      {tmp_path}/summary.csv\n"
    assert err == "recbandits: a note\n"


def _rebuilt(*, stored: int = 4, mismatches: tuple[str, ...] = ()) -> sr.RebuildStateResults:
    """A rebuild-state result made by hand (two arms, one live arm compared)."""
    return sr.RebuildStateResults(
        source="sqlite:///x.db", n_decisions=7, n_feedback=5, n_outcomes=4, pending=3,
        policy="ThompsonSampling",
        arms=(sr.ArmCheck("popularity", 3, 3, 0, 0.0), sr.ArmCheck("svd", stored, 4, 4, 3.0)),
        mismatches=mismatches,
        live=(sr.LiveArmCheck("popularity", True, "match yes (worker pid 42 at "
                              "http://127.0.0.1:8000: 5 events ...)"),),
        snapshot=sr.SnapshotInfo(seq=12, cut=0.0, pulls=9, ratings=2))


def test_rebuild_state_results_print_as_before():
    """The report's layout (the text ``rebuild-state`` printed line by line before it
    returned results): tests, the README and scripts read it.
    """
    assert str(_rebuilt()) == "\n".join([
        "store: sqlite:///x.db  (7 decisions, 5 feedback, 4 outcomes, 3 undecided)",
        "fold snapshot at log position 12 (purged before 1970-01-01T00:00:00+00:00): 9 pulls "
        "and 2 ratings of purged rows; every fold starts from it",
        "policy: ThompsonSampling folded over the outcomes in log order",
        "arm             stored n  replay n  outcomes  mean reward",
        "popularity             3         3         0            -",
        "svd                    4         4         4       0.7500",
        "live arm popularity: match yes (worker pid 42 at http://127.0.0.1:8000: 5 events ...)",
        "match: yes"])
    bad = _rebuilt(stored=5, mismatches=("svd: pulls stored 5, replayed 4",))
    assert (bad.match, bad.exit_code) == (False, 1)
    assert str(bad).splitlines()[-2:] == [
        "live arm popularity: match yes (worker pid 42 at http://127.0.0.1:8000: 5 events ...)",
        "match: NO"]
    assert "  mismatch: svd: pulls stored 5, replayed 4" in str(bad).splitlines()
    not_compared = sr.LiveArmCheck("popularity", None, "not compared (no admin token set)")
    differs = sr.LiveArmCheck("popularity", False, "match NO (...)")
    assert sr.RebuildStateResults(**{**_rebuilt().__dict__, "live": (not_compared,)}).match
    assert not sr.RebuildStateResults(**{**_rebuilt().__dict__, "live": (differs,)}).match


def test_purge_and_credit_results_print_as_before():
    counts = {"decisions": 3, "outcomes": 2, "feedback": 5}
    dry = sr.PurgeResults("sqlite:///x.db", 0.0, 20, counts, dry_run=True)
    assert str(dry) == ("dry run: would delete 3 decisions, 2 outcomes and 5 feedback rows "
                        "before 1970-01-01T00:00:00+00:00 (log head 20); nothing deleted")
    none = sr.PurgeResults("sqlite:///x.db", 0.0, 20, dict.fromkeys(counts, 0))
    assert str(none).startswith("nothing to purge: 0 decisions")
    done = sr.PurgeResults("sqlite:///x.db", 0.0, 20, counts, deleted=counts,
                           snapshot=sr.PurgeSnapshot(20, 8, "LinTS", 2, ("popularity",), 5))
    assert str(done) == "\n".join([
        "store: sqlite:///x.db",
        "fold snapshot at log position 20, from the snapshot at 8: LinTS over 2 more "
        "outcomes; live arms popularity over 5 more events",
        "deleted 3 decisions, 2 outcomes and 5 feedback rows before "
        "1970-01-01T00:00:00+00:00"])
    assert str(sr.NothingToDo("credit", "no store at x")) == "nothing to credit: no store at x"
    assert sr.NothingToDo("credit", "x").exit_code == 0


def _a_database_in(folder: Path) -> None:
    """An SQLite database where the settings of ``--state-dir folder`` look for the store."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(folder / "recbandits.db")) as conn:
        conn.execute("CREATE TABLE t (x)")


@pytest.mark.parametrize(("returned", "code"), [(_rebuilt(), 0),
                                                (_rebuilt(mismatches=("a",)), 1),
                                                (sr.NothingToDo("rebuild", "no store"), 0)])
def test_a_service_command_cli_only_parses_calls_and_prints(monkeypatch, capsys, tmp_path,
                                                            returned, code):
    calls = []

    def fake(settings, **options):
        calls.append((settings, options))
        return returned

    monkeypatch.setattr(commands, "rebuild_state", fake)
    _a_database_in(tmp_path)  # a folder named on the command line must hold a store
    assert cli.main(["rebuild-state", "--state-dir", str(tmp_path), "--arms", "svd"]) == code
    (settings, options), = calls
    assert isinstance(settings, Settings) and options == {}
    assert Path(settings.state_dir) == tmp_path and settings.arms == ["svd"]
    out, err = capsys.readouterr()
    assert (out, err) == (f"{returned}\n", "")


@pytest.mark.parametrize(("error", "code"), [(ValueError("--before: no"), 2),
                                             (sr.CommandError("another purge ran", 1), 1)])
def test_a_service_command_refusal_goes_to_stderr_with_its_status(monkeypatch, capsys,
                                                                   tmp_path, error, code):
    calls = []

    def fake(settings, **options):
        calls.append(options)
        raise error

    monkeypatch.setattr(commands, "purge", fake)
    _a_database_in(tmp_path)
    assert cli.main(["purge", "--before", "2020-01-01", "--dry-run",
                     "--state-dir", str(tmp_path)]) == code
    assert calls == [{"before": "2020-01-01", "dry_run": True}]
    assert capsys.readouterr() == ("", f"recbandits purge: {error}\n")


def test_serve_refused_at_start_says_why_on_stderr_without_a_traceback(monkeypatch, capsys,
                                                                       tmp_path):
    """A start the store refuses (arms of another catalogue, say) is one line and its status,
    as every service command's refusal (it was a traceback; found by attack)."""
    refusal = sr.CommandError("this store's arms are fitted on another catalogue", 1)

    def fake(settings):
        raise refusal

    monkeypatch.setattr(commands, "serve", fake)
    assert cli.main(["serve", "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr() == ("", f"recbandits serve: {refusal}\n")


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _choices(command: str, option: str) -> tuple[str, ...]:
    action = next(a for a in _subparser(command)._actions
                  if option in a.option_strings or a.dest == option)
    return tuple(action.choices)


def test_every_choice_list_of_the_cli_is_its_owners():
    """One rule, one place: the parser is built without importing the service (or the
    replay's and OBD's modules), so each choice list it spells is checked against the list
    its owner defines (found by a one-rule review: seven lists written out again)."""
    from typing import get_args

    from arms.data import DATASETS
    from arms.data.obd import CAMPAIGNS
    from experiments.config import EXECUTORS
    from experiments.replay import COLD_USERS
    from serving import drift, multileave, versions
    from serving.policy import CARRYOVER_MODES
    from serving.settings import Settings

    owners = {("replay", "--cold-users"): COLD_USERS,
              ("serve", "--posterior-carryover"): CARRYOVER_MODES,
              ("retrain", "--posterior-carryover"): CARRYOVER_MODES,
              ("serve", "--slate-mode"): multileave.SLATE_MODES,
              ("serve", "--drift-detector"): drift.DETECTOR_NAMES,
              ("models", "action"): tuple(versions.ACTIONS),
              ("ope", "--campaign"): CAMPAIGNS,
              ("simulate", "--executor"): EXECUTORS,
              ("simulate", "--dataset"): DATASETS, ("serve", "--dataset"): DATASETS}
    for (command, option), owned in owners.items():
        assert _choices(command, option) == tuple(owned), (command, option)
    # The --policy help names the servable policies, in their order (it is free text).
    from bandits.base import registered_policies
    from serving.policy import SERVABLE_POLICIES

    for command in ("serve", "retrain"):
        text = next(a.help for a in _subparser(command)._actions if "--policy" in a.option_strings)
        named = re.findall(r"\b(?:" + "|".join(registered_policies()) + r")\b", text)
        assert tuple(named) == SERVABLE_POLICIES, (command, named)
    # The settings' types are the owners' too, and every detector but "none" is served.
    fields = Settings.model_fields
    assert get_args(fields["slate_mode"].annotation) == multileave.SLATE_MODES
    assert get_args(fields["drift_detector"].annotation) == drift.DETECTOR_NAMES
    assert (*drift.DETECTORS, "none") == drift.DETECTOR_NAMES


def _help_default(command: str, dest: str) -> tuple[object, str | None]:
    """The option's parser default and the value its help text names after "default"."""
    action = next(a for a in _subparser(command)._actions if a.dest == dest)
    text = (action.help or "").replace("%(default)s", str(action.default))
    match = re.search(r"\bdefault:? ([^;)]+)", text)
    return action.default, match.group(1).strip() if match else None


def _same(named: str | None, owned: object) -> bool:
    """``named`` (help text) spells ``owned`` (the owner's default): "off" for None, numbers by
    value, lists comma-separated."""
    if named is None:
        return False
    if owned is None:
        return named == "off"
    if isinstance(owned, (list, tuple)):
        return named == ",".join(map(str, owned))
    if isinstance(owned, (int, float)) and not isinstance(owned, bool):
        try:
            return float(named) == float(owned)
        except ValueError:
            return False
    return named == str(owned)


# Options whose help describes its default in words rather than spelling a value.
DESCRIBED = frozenset({"db", "data", "state_dir", "out", "workers", "config", "ts_prior", "linear",
                       "campaign", "seeds", "jobs", "bootstrap_seed"})


def test_every_default_a_help_text_names_is_its_owners():
    """One rule, one place: the service's options parse to None so that the settings' defaults
    apply, and the lab's replay options are filled into ``ReplayConfig``; their help texts say
    the default in words, so each is checked against the owner's default here (the settings'
    field, the replay config's field, the bootstrap's one default)."""
    from bandits.ope import DEFAULT_N_BOOTSTRAP
    from experiments import evaluate_arms, replay
    from serving.settings import Settings

    fields = Settings.model_fields

    def setting(name: str) -> object:
        field = fields[name]
        return field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]

    replay_fields = {f.name: f.default for f in dataclasses.fields(replay.ReplayConfig)}
    checked = 0
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, sub in commands.choices.items():
        service_command = any(a.dest == "state_dir" for a in sub._actions)  # reads Settings
        for action in sub._actions:
            default, named = _help_default(command, action.dest)
            if named is None or action.dest in DESCRIBED:
                continue
            if action.dest == "bootstrap":
                owned: object = DEFAULT_N_BOOTSTRAP
            elif command == "replay":
                owned = (replay.DEFAULT_ARMS if action.dest == "arms"
                         else replay_fields[action.dest])
                assert default == (None if action.dest == "arms" else owned), action.dest
            elif command == "evaluate-arms" and action.dest == "arms":
                owned = evaluate_arms.DEFAULT_ARMS
            elif service_command and command != "serve" and action.dest == "arms":
                # A store's reader takes its live arms (serving.commands.served_settings).
                assert named == "the live version's", (command, named)
                checked += 1
                continue
            elif service_command and action.dest in fields:
                owned = setting(action.dest)
                assert default is None, (command, action.dest)  # the settings' default applies
            else:
                owned = default
            assert _same(named.split(" ")[0].rstrip(",") if action.dest not in ("arms",)
                         else named, owned), (command, action.dest, named, owned)
            checked += 1
    assert checked >= 40  # every command's options were seen, not none


def test_the_service_commands_data_help_says_where_the_data_is_looked_for():
    """Found by a README check: serve's ``--data`` help said its default was RECBANDITS_DATA
    alone; without it the MovieLens loader's search applies (the user cache, then a download),
    and a RECBANDITS_DATA set is the one folder searched (the settings' ``data``)."""
    for command in ("serve", "retrain"):
        text = next(a.help for a in _subparser(command)._actions if a.dest == "data")
        assert text.endswith("(or --dataset's release, ml-1m/, ...; default: RECBANDITS_DATA, "
                             "which must then hold it, else the user cache, else download)"), text


def test_rebuild_state_takes_the_services_host_and_port(monkeypatch):
    """Found by a README check: ``rebuild-state`` asked the worker at 127.0.0.1:8000 only (a
    service on another port was "not compared"); ``--host`` and ``--port`` name it, as serve's
    do, into the settings ``serving.commands.rebuild_state`` asks."""
    monkeypatch.delenv("RECBANDITS_HOST", raising=False)
    monkeypatch.delenv("RECBANDITS_PORT", raising=False)
    parser = cli.build_parser()
    args = parser.parse_args(["rebuild-state", "--host", "::1", "--port", "9123"])
    settings = cli._serving_settings(args)
    assert (settings.host, settings.port) == ("::1", 9123)  # type: ignore[attr-defined]
    default = cli._serving_settings(parser.parse_args(["rebuild-state"]))
    assert (default.host, default.port) == ("127.0.0.1", 8000)  # type: ignore[attr-defined]


def _field_range(name: str) -> str:
    """Settings field ``name``'s bounds as a help text writes them: ``[1, 64]``, ``(0, 1]``."""
    import annotated_types as at

    from serving.settings import Settings

    low = high = None
    left, right = "[", "]"
    for bound in Settings.model_fields[name].metadata:
        if isinstance(bound, at.Ge | at.Gt):
            low, left = bound.ge if isinstance(bound, at.Ge) else bound.gt, (
                "[" if isinstance(bound, at.Ge) else "(")
        if isinstance(bound, at.Le | at.Lt):
            high, right = bound.le if isinstance(bound, at.Le) else bound.lt, (
                "]" if isinstance(bound, at.Le) else ")")
    assert low is not None and high is not None, name
    return f"{left}{low:g}, {high:g}{right}"


def test_every_range_a_help_text_names_is_its_owners():
    """The ranges the help texts state are the checks' own (found in review: written by hand
    beside them, and ``--linear``'s default misread ``DEFAULT_LINEAR``). The parser cannot
    import serving (the lab's commands never pay for it), so the texts are checked here."""
    from serving.offpolicy import DEFAULT_LINEAR
    from serving.settings import Settings, say_seconds
    from serving.versions import VERSION_RANGE

    checked = 0
    for command in ("serve", "retrain", "models", "ope"):
        helps = {a.dest: a.help or "" for a in _subparser(command)._actions}
        for dest in ("workers", "holdout_share", "carryover_discount"):
            if dest in helps:
                assert f"in {_field_range(dest)}" in helps[dest], (command, dest, helps[dest])
                checked += 1
        if command == "models":
            assert helps["version"].endswith(f"plain digits, {VERSION_RANGE}")
        if command == "ope":
            linear = " ".join(f"{c.policy}:{','.join(f'{k}={v:g}' for k, v in c.params)}"
                              for c in DEFAULT_LINEAR)
            assert f"default {linear})" in helps["linear"], helps["linear"]
            window = say_seconds(Settings.model_fields["reward_window_s"].default)
            assert f"({window} by default)" in helps["include_open"], helps["include_open"]
    assert checked >= 4

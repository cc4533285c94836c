"""Every lab command has the shape of ``simulate``: an importable ``run(config) -> results``, and a
CLI handler that only parses, calls ``run`` and prints.

Commands are listed here by kind, so a new command must say which it is. ``evaluate-arms`` is
being reshaped (issue 18) and the service's commands print from inside (the service rewrite
owns them); they are listed apart until they take the shape.
"""

from __future__ import annotations

import argparse
import importlib
import inspect

import pandas as pd
import pytest

from experiments import cli, report, simulate
from experiments import config as cfg
from experiments.results import SimulationResults

#: Lab command -> the module whose ``run(config)`` it calls.
LAB_COMMANDS = {"simulate": "experiments.simulate", "replay": "experiments.replay",
                "evaluate-arms": "experiments.evaluate_arms"}
#: Commands not (yet) in that shape, and why.
OTHER_COMMANDS = {
    "serve": "the service",
    "retrain": "the service",
    "rebuild-state": "the service",
    "purge": "the service",
    "credit": "the service's log (multileaved decisions)",
    "shadow": "the service's store (status; promote records a promotion)",
    "ope": "the service's log (and --obd, whose handler calls experiments.obd_ope.run)",
}


def _commands() -> set[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_command_is_classified():
    assert _commands() == set(LAB_COMMANDS) | set(OTHER_COMMANDS)


@pytest.mark.parametrize("command", sorted(LAB_COMMANDS))
def test_lab_command_module_has_run_taking_a_config(command):
    run = importlib.import_module(LAB_COMMANDS[command]).run
    first = next(iter(inspect.signature(run).parameters.values()))
    assert first.name == "config" and first.kind is first.POSITIONAL_OR_KEYWORD


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

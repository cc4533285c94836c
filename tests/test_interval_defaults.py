"""Every report's interval has one set of defaults (``bandits.ope.DEFAULT_*``).

The lab's reports (replay, the gate, ``ope --obd``), the service's (OPE of the log, holdout,
credit, shadow) and the command line's ``--bootstrap`` options each take a number of resamples,
a confidence and (the OPE reports) the health flags' thresholds. Each function's default must
be the one constant, so that "1000 resamples, 95%" cannot drift between two reports of the same
log; ``arms.gate`` may not import ``bandits`` and holds its own copy, equal by test.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import pkgutil

import pytest

from bandits import ope

DEFAULTS = {
    "n_bootstrap": ope.DEFAULT_N_BOOTSTRAP,
    "confidence": ope.DEFAULT_CONFIDENCE,
    "min_propensity": ope.DEFAULT_MIN_PROPENSITY,
    "min_ess": ope.DEFAULT_MIN_ESS,
}
PACKAGES = ("bandits", "arms", "experiments", "serving")


def _defaults_found() -> list[tuple[str, str, object]]:
    """``(where, parameter, default)`` for every function, method and dataclass of our packages
    with a parameter named in :data:`DEFAULTS` that has a default."""
    found: list[tuple[str, str, object]] = []
    seen: set[int] = set()
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        modules = [package] + [
            importlib.import_module(info.name)
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")]
        for module in modules:
            for name, obj in vars(module).items():
                if getattr(obj, "__module__", None) != module.__name__ or id(obj) in seen:
                    continue
                seen.add(id(obj))
                callables = [(name, obj)]
                if inspect.isclass(obj) and not dataclasses.is_dataclass(obj):
                    callables = [(f"{name}.{attr}", member) for attr, member in vars(obj).items()
                                 if inspect.isfunction(member)]
                for where, function in callables:
                    if not callable(function):
                        continue
                    try:
                        signature = inspect.signature(function)
                    except (TypeError, ValueError):
                        continue
                    for parameter in signature.parameters.values():
                        if (parameter.name in DEFAULTS
                                and parameter.default is not inspect.Parameter.empty):
                            found.append((f"{module.__name__}.{where}", parameter.name,
                                          parameter.default))
    return found


def test_every_report_takes_the_one_default():
    found = _defaults_found()
    # The walk must see the reports this rule is about, or it proves nothing.
    places = {where for where, _, _ in found}
    for expected in ("bandits.ope.evaluate_policies", "arms.gate.evaluate_gate",
                     "experiments.replay.ReplayConfig", "serving.holdout.holdout_report",
                     "serving.multileave.credit_report", "serving.offpolicy.evaluate_log"):
        assert expected in places, sorted(places)
    wrong = [(where, name, default) for where, name, default in found
             if default != DEFAULTS[name]]
    assert wrong == []


@pytest.mark.parametrize("command", ["replay", "credit", "holdout", "ope"])
def test_the_command_lines_bootstrap_default_is_the_one_default(command):
    from experiments.cli import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction))
    option = next(action for action in subparsers.choices[command]._actions
                  if "--bootstrap" in action.option_strings)
    assert option.default == ope.DEFAULT_N_BOOTSTRAP
    assert f"default {ope.DEFAULT_N_BOOTSTRAP}" in option.help % {"default": option.default}
    # Every --bootstrap takes 0 and says the one range (found by a README check: credit's and
    # holdout's help gave none and refused 0, which ope took).
    assert ope.BOOTSTRAP_RANGE == "0 (no interval) or 100 to 100,000"
    assert ope.BOOTSTRAP_RANGE in option.help

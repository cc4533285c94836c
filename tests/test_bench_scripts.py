"""Every benchmark script still imports against the code it measures.

The scripts are run by hand (they print figures; no wall-clock asserts belong in tests), so a
refactor that breaks one would otherwise go unnoticed until someone reproduces a README figure.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def test_every_bench_script_is_covered() -> None:
    assert {p.name for p in SCRIPTS} >= {"serving_load.py", "feedback_latency.py",
                                         "bandits_throughput.py", "envs_throughput.py"}


def load_bench_script(script: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a bench script by path, for the duration of one test."""
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import each other as siblings
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_bench_script_imports_and_parses_help(script: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    module = load_bench_script(script, monkeypatch)
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert "usage:" in capsys.readouterr().out

"""The lab's commands leave their --out folder holding one run: the earlier or the new one.

simulate, replay and evaluate-arms write a run's files into a folder beside --out and swap
them in together (arms.data.files.staged_run_folder); simulate's own tests cover its plots and
the swap itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from experiments import evaluate_arms, replay


def _cut_off(module: Any, names: Collection[str], write: Callable[[Any, Path], Any],
             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    out.mkdir()
    earlier = {name: f"the earlier run's {name}\n" for name in names}
    for name, text in earlier.items():
        (out / name).write_text(text)
    written: list[str] = []

    def cut_after_one(path: Path, writer: Callable[[Path], Any]) -> None:
        if written:  # the second file: Ctrl-C (or a full disk) mid-write
            raise KeyboardInterrupt
        path.write_text("new\n")
        written.append(path.name)

    monkeypatch.setattr(module, "write_whole", cut_after_one)
    table = pd.DataFrame({"x": [1]})
    results = SimpleNamespace(summary=table, differences=table, events=table, metrics=table,
                              per_split=table)
    with pytest.raises(KeyboardInterrupt):
        write(results, out)
    assert written  # one new file was written before the cut
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier
    assert list(tmp_path.iterdir()) == [out]  # no staging folder left beside it


def test_a_replay_cut_off_while_writing_leaves_the_earlier_run_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: replay removed the earlier run's files first, then wrote its own one
    # at a time, so a Ctrl-C or a full disk mid-write left neither run whole.
    _cut_off(replay, replay.RUN_FILES, replay.write, tmp_path, monkeypatch)


def test_an_evaluation_cut_off_while_writing_leaves_the_earlier_run_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cut_off(evaluate_arms, evaluate_arms.RUN_FILES.values(), evaluate_arms.write_results,
             tmp_path, monkeypatch)


def test_an_ope_run_cut_off_while_writing_leaves_the_earlier_run_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving import offpolicy

    def write(_: Any, out: Path) -> None:
        table = pd.DataFrame({"x": [1]})
        offpolicy._write_run(SimpleNamespace(out_dir=out), False, {  # type: ignore[arg-type]
            "table": lambda p: table.to_csv(p), "summary": lambda p: p.write_text("{}")})

    _cut_off(offpolicy, offpolicy.RUN_FILES.values(), write, tmp_path, monkeypatch)

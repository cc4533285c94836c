"""Ceilings of the arms' size hyper-parameters (n_factors, hidden_units, the windows): refused
by name when the settings are read, before any data (found by attack: ``n_factors=50000000``
ended ``retrain`` in numpy's "Unable to allocate 112 GiB" after a 38-line traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arms._validation import MAX_MODEL_BYTES, size_ceiling
from arms.registry import make_arm
from experiments import cli

CEILINGS = [("svd", "n_factors", 930), ("autoencoder", "hidden_units", 1532),
            ("cooccurrence", "window", 267), ("sequential", "window", 1000)]


@pytest.mark.parametrize("arm, param, ceiling", CEILINGS)
def test_a_size_past_its_ceiling_is_refused_naming_it(arm, param, ceiling):
    make_arm(arm, **{param: ceiling})._validate_params()  # the ceiling itself is taken
    for value in (ceiling + 1, 50_000_000):
        with pytest.raises(ValueError, match=rf"^{param} must be an integer from 1 to "
                                             rf"{ceiling:,}, got {value}$"):
            make_arm(arm, **{param: value})._validate_params()


def test_the_ceilings_fit_the_largest_release_in_two_gib():
    # MovieLens 32M: 200,948 users and 87,585 items; 8-byte numbers per user and per item
    assert size_ceiling(per_user=8, per_item=8) == MAX_MODEL_BYTES // (288_533 * 8) == 930
    assert size_ceiling(per_item=16) * 87_585 * 16 <= MAX_MODEL_BYTES


@pytest.mark.parametrize("command", ["retrain", "serve"])
def test_arm_params_past_a_ceiling_end_the_commands_in_one_line(
        command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RECBANDITS_ARM_PARAMS", '{"svd": {"n_factors": 50000000}}')
    state = tmp_path / "state"
    assert cli.main([command, "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert err == (f"recbandits {command}: settings: arm_params.svd: n_factors must be an "
                   "integer from 1 to 930, got 50000000\n")
    assert not state.exists()

"""Numbers given as text take one rule everywhere (bandits.errors.integer_text and number_text:
plain decimal digits): the CLI's integer and number options, the integer settings' RECBANDITS_*
variables and ope's --ts-prior, as ports, versions and the HTTP query strings already did
(found in review: ``serve --workers 1_6`` and ``RECBANDITS_WORKERS=1_6`` meant 16 while
``--port 8_000`` was refused; ``ope --ts-prior 1_0,1`` was 10.0 while ``--linear
LinTS:scale=1_0`` was refused).
"""

from __future__ import annotations

import argparse

import pytest

from experiments import cli
from serving.settings import Settings

NOT_PLAIN = ["1_6", "+16", " 16", "16.0", "\u0661\u0666", "0x10", ""]


def test_the_rule_reads_plain_decimal_digits_only() -> None:
    from bandits.errors import integer_text, number_text

    assert [integer_text(t) for t in ("16", "-3", "0")] == [16, -3, 0]
    assert [number_text(t) for t in ("0.5", "1e-3", ".5", "-2", "7")] == [0.5, 1e-3, 0.5, -2, 7]
    for text in NOT_PLAIN:
        with pytest.raises(ValueError, match="must be an integer in plain decimal digits, got"):
            integer_text(text)
    assert [str(number_text(t)) for t in ("inf", "-inf", "nan")] == ["inf", "-inf", "nan"]
    for text in ["1_0", "+1", " 1", "0x1", "1,5", "\u0661", ""]:
        with pytest.raises(ValueError, match="must be a number in plain decimal digits, got"):
            number_text(text)


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_an_integer_option_takes_plain_digits(text: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["serve", "--workers", "16"]).workers == 16
    with pytest.raises(SystemExit) as refusal:
        parser.parse_args(["serve", f"--workers={text}"])
    assert refusal.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"recbandits serve: argument --workers: must be an integer in plain decimal digits, "
        f"got {text!r} (see recbandits serve --help)"]


def test_a_number_option_takes_plain_digits(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["serve", "--exploration-floor", "0.05"]).exploration_floor == 0.05
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--exploration-floor", "0_05"])
    assert capsys.readouterr().err.splitlines() == [
        "recbandits serve: argument --exploration-floor: must be a number in plain decimal "
        "digits, got '0_05' (see recbandits serve --help)"]


@pytest.mark.parametrize("text", ["1_6", "+2", "2.0", " 2"])
def test_an_integer_variable_takes_plain_digits(text: str, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RECBANDITS_WORKERS", "2")
    assert Settings().workers == 2
    monkeypatch.setenv("RECBANDITS_WORKERS", text)
    said = f"RECBANDITS_WORKERS={text!r}: must be an integer in plain decimal digits, got {text!r}"
    with pytest.raises(ValueError) as refused:
        Settings()
    assert str(refused.value) == said
    assert cli.main(["credit", "--state-dir", "/nonexistent/recbandits"]) == 2
    assert capsys.readouterr().err.strip() == f"recbandits credit: {said}"
    monkeypatch.setenv("RECBANDITS_WORKERS", "2")
    monkeypatch.setenv("RECBANDITS_SEED", "1_0")  # an optional integer alike
    with pytest.raises(ValueError, match=r"^RECBANDITS_SEED='1_0': must be an integer"):
        Settings()
    assert Settings(seed=3).seed == 3  # a keyword replaces the variable


def test_the_ts_prior_takes_the_numbers_rule(capsys: pytest.CaptureFixture[str]) -> None:
    def candidates(*priors: str) -> object:
        return cli._ope_candidates(argparse.Namespace(ts_prior=list(priors), linear=None))

    assert candidates("2,0.5") == ([(2.0, 0.5)], ())
    assert candidates("1_0,1") is None
    assert capsys.readouterr().err.strip() == (
        "recbandits ope: --ts-prior takes ALPHA,BETA, two numbers in plain decimal digits, "
        "got ['1_0,1']")


@pytest.mark.parametrize(("variable", "text", "said"), [
    ("RECBANDITS_EXPLORATION_FLOOR", "0_1", "exploration_floor: must be a number"),
    ("RECBANDITS_EXPLORATION_FLOOR", "+0.1", "exploration_floor: must be a number"),
    ("RECBANDITS_DRIFT_THRESHOLD", "1_0", "drift_threshold: must be a number"),
    ("RECBANDITS_DRIFT_WINDOWS", "100,1_000", "drift_windows: must be an integer")])
def test_number_and_size_list_variables_take_plain_digits(
        variable: str, text: str, said: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # pydantic's lax float read RECBANDITS_EXPLORATION_FLOOR=0_1 as 1.0, and "1_000" in a
    # list of window sizes as 1000.
    from pydantic import ValidationError

    from serving.settings import settings_issues

    monkeypatch.setenv(variable, text)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert settings_issues(refused.value).startswith(said)
    assert settings_issues(refused.value).endswith(f"in plain decimal digits, got "
                                                   f"{text.split(',')[-1]!r}")
    monkeypatch.setenv("RECBANDITS_EXPLORATION_FLOOR", "0.05")
    monkeypatch.setenv("RECBANDITS_DRIFT_THRESHOLD", "10")
    monkeypatch.setenv("RECBANDITS_DRIFT_WINDOWS", "10,20")
    settings = Settings()
    assert (settings.exploration_floor, settings.drift_threshold,
            settings.drift_windows) == (0.05, 10.0, [10, 20])

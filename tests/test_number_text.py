"""Numbers given as text take one rule everywhere (bandits.errors.integer_text and number_text:
plain decimal digits): the CLI's integer and number options, the integer settings' RECBANDITS_*
variables and ope's --ts-prior, as ports, versions and the HTTP query strings already did
(found in review: ``serve --workers 1_6`` and ``RECBANDITS_WORKERS=1_6`` meant 16 while
``--port 8_000`` was refused; ``ope --ts-prior 1_0,1`` was 10.0 while ``--linear
LinTS:scale=1_0`` was refused).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated

import pytest

from bandits.errors import short_repr
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


@pytest.mark.parametrize(("variable", "text"), [
    ("RECBANDITS_EXPLORATION_FLOOR", "0_1"), ("RECBANDITS_EXPLORATION_FLOOR", "+0.1"),
    ("RECBANDITS_EXPLORATION_FLOOR", " 0.1"), ("RECBANDITS_DRIFT_THRESHOLD", "1_0")])
def test_a_float_variable_is_refused_by_name(variable: str, text: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # pydantic's lax float read RECBANDITS_EXPLORATION_FLOOR=0_1 as 1.0; then its refusal named
    # the field alone, while an integer variable's named the variable (found in review).
    monkeypatch.setenv(variable, text)
    with pytest.raises(ValueError) as refused:
        Settings()
    assert str(refused.value) == (f"{variable}={text!r}: must be a number in plain decimal "
                                  f"digits, got {text!r}")


@pytest.mark.parametrize("text", ["100,1_000", "100, 1000", "100,1000 "])
def test_a_size_list_variable_takes_plain_digits(text: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # "1_000" in a list of window sizes was 1000; "100, 1000" was taken while
    # RECBANDITS_WORKERS=" 2" was refused (found in review): no number takes spaces.
    from pydantic import ValidationError

    from serving.settings import settings_issues

    monkeypatch.setenv("RECBANDITS_DRIFT_WINDOWS", text)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert settings_issues(refused.value) == (
        f"drift_windows: must be an integer in plain decimal digits, got "
        f"{text.split(',')[-1]!r}")
    monkeypatch.setenv("RECBANDITS_EXPLORATION_FLOOR", "0.05")
    monkeypatch.setenv("RECBANDITS_DRIFT_THRESHOLD", "10")
    monkeypatch.setenv("RECBANDITS_DRIFT_WINDOWS", "10,20")
    settings = Settings()
    assert (settings.exploration_floor, settings.drift_threshold,
            settings.drift_windows) == (0.05, 10.0, [10, 20])


@pytest.mark.parametrize(("name", "text"), [
    ("workers", "1_6"), ("workers", " 2"), ("seed", "1_6"), ("drift_min_samples", "1_0"),
    ("gate_bootstrap", "+300")])
def test_an_integer_setting_takes_plain_digits_from_a_settings_file(
        name: str, text: str, tmp_path: Path) -> None:
    # Found in review: the rule held for the variables alone; a settings file's
    # workers = "1_6" gave 16 and " 2" gave 2 (pydantic's lax int).
    from pydantic import ValidationError

    from serving.settings import settings_issues

    path = tmp_path / "settings.toml"
    path.write_text(f"{name} = {text!r}\n".replace("'", '"'))
    with pytest.raises(ValidationError) as refused:
        Settings.from_file(path)
    assert settings_issues(refused.value) == (
        f"{name}: must be an integer in plain decimal digits, got {text!r}")
    with pytest.raises(ValidationError):  # a keyword alike
        Settings(**{name: text})
    value = 2 if name == "workers" else 400  # one in the setting's range
    path.write_text(f"{name} = {value}\n")  # an int is an int, and plain text is read
    assert getattr(Settings.from_file(path), name) == value
    assert getattr(Settings(**{name: str(value)}), name) == value


@pytest.mark.parametrize(("linear", "said"), [
    ("LinTS:scale=1_0", "scale must be a number in plain decimal digits, got '1_0'"),
    ("LinTS:scale= 1", "scale must be a number in plain decimal digits, got ' 1'"),
    ("LinTS:propensity_grid=5_12",
     "propensity_grid must be a number in plain decimal digits, got '5_12'"),
    ("LinTS:scale", "parameters are KEY=NUMBER, got 'scale'")])
def test_a_linear_candidate_takes_the_numbers_rule(
        linear: str, said: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Found in review: "1_0" was refused as "parameters are KEY=NUMBER" where --ts-prior said
    # "plain decimal digits", and " 1" was taken here alone.
    def candidates(*linears: str) -> object:
        return cli._ope_candidates(argparse.Namespace(ts_prior=None, linear=list(linears)))

    assert candidates("LinTS:scale=0.5,propensity_grid=64") is not None
    assert candidates(linear) is None
    assert capsys.readouterr().err.strip() == (
        f"recbandits ope: --linear: linear candidate {linear!r}: {said}")


@pytest.mark.parametrize("command", ["serve", "rebuild-state"])
def test_a_port_option_is_refused_naming_the_option(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Found in review: "port: the port must be a number from 1 to 65,535, got '8_000'" named
    # the setting, not the option given.
    assert cli.build_parser().parse_args([command, "--port", "8001"]).port == 8001
    with pytest.raises(SystemExit) as refusal:
        cli.build_parser().parse_args([command, "--port", "8_000"])
    assert refusal.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"recbandits {command}: argument --port: the port must be a number from 1 to 65,535, "
        f"got '8_000' (see recbandits {command} --help)")


def test_a_port_variable_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    # Found in review: RECBANDITS_PORT=8_000 was said by the integer rule, the option by the
    # port's; now the port's rule for both, each naming where it was given.
    monkeypatch.setenv("RECBANDITS_PORT", "8_000")
    with pytest.raises(ValueError) as refused:
        Settings()
    assert str(refused.value) == ("RECBANDITS_PORT='8_000': the port must be a number from 1 "
                                  "to 65,535, got '8_000'")
    monkeypatch.setenv("RECBANDITS_PORT", "8001")
    assert Settings().port == 8001


def test_a_query_integer_is_said_by_the_numbers_rule() -> None:
    # Found in review: serving.schemas kept its own copy of the rule (its own 4000-digit
    # limit and words).
    from pydantic import BaseModel, ValidationError

    from bandits.errors import MAX_INTEGER_DIGITS
    from serving.schemas import QUERY_INT

    class Query(BaseModel):
        k: Annotated[int, QUERY_INT]

    assert Query(k="-3").k == -3
    for text in ("1_0", " 1", "9" * (MAX_INTEGER_DIGITS + 1)):
        with pytest.raises(ValidationError) as refused:
            Query(k=text)
        (error,) = refused.value.errors()
        assert (error["type"], error["msg"]) == (
            "int_parsing", f"Input must be an integer in plain decimal digits, got "
            f"{short_repr(text)}")

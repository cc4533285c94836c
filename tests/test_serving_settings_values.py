"""Settings that are numbers are finite: each float setting refuses inf and NaN by name."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

import pytest
from annotated_types import Le
from pydantic import ValidationError

from experiments import cli
from serving.durations import MAX_DURATION_S
from serving.settings import Settings, settings_issues

FLOAT_SETTINGS = sorted(name for name, field in Settings.model_fields.items()
                        if "float" in str(field.annotation)
                        and not any(t in str(field.annotation) for t in ("dict", "list")))


def test_there_are_float_settings_to_check() -> None:
    assert {"retention_s", "reward_window_s", "clock_skew_s", "refresh_interval_s",
            "drift_threshold", "gate_holdout_s", "default_reward"} <= set(FLOAT_SETTINGS)


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_float_setting_refuses_what_is_not_finite(name: str, value: float) -> None:
    # Found by attack: RECBANDITS_RETENTION_S=inf passed the check (gt=0 lets inf through),
    # then serve fitted and saved the arms before its workers failed to start.
    with pytest.raises(ValidationError) as refused:
        Settings(**{name: value})
    assert name in str(refused.value)


def test_an_infinite_value_inside_a_table_is_said_by_its_own_rule() -> None:
    # Found in review: a model-wide refusal of inf answered these with four lines of pydantic
    # union branches, none naming the value; their own checks say it in one.
    for values, said in (
            ({"policy_params": {"prior_alpha": [math.inf, 1.0, 1.0, 1.0]}},
             "policy_params: prior_alpha[0]=inf must be finite"),
            ({"arms": ["svd", "popularity"], "arm_params": {"popularity": {"half_life": math.inf}}},
             "arm_params.popularity: half_life must be finite, got inf")):
        with pytest.raises(ValidationError) as refused:
            Settings(**values)
        assert settings_issues(refused.value) == f"settings: {said}"
    with pytest.raises(ValidationError) as refused:
        Settings(retention_s=math.inf)
    assert settings_issues(refused.value) == ("retention_s: Input should be a finite number, "
                                              "got inf")


def test_an_infinite_setting_from_the_environment_is_refused_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ("inf", "1e999", "Infinity"):
        monkeypatch.setenv("RECBANDITS_RETENTION_S", text)
        with pytest.raises(ValueError) as refused:  # the variable named (review)
            Settings()
        assert str(refused.value).startswith(f"RECBANDITS_RETENTION_S={text!r}: must be a "
                                             "finite number")


def test_synthetic_sizes_the_generator_refuses_are_refused_with_the_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Found while testing a stop during a fit: serve opened the store, then the generator's
    # ValueError ended it with a traceback.
    with pytest.raises(ValidationError, match=r"synthetic_ratings must be an integer from 200 "
                       r"to 30,000, got 200000"):
        Settings(dataset="synthetic", synthetic_ratings=200_000)
    assert Settings(synthetic_ratings=200_000).synthetic_ratings == 200_000  # MovieLens: moot
    monkeypatch.setenv("RECBANDITS_SYNTHETIC_RATINGS", "200000")
    state = tmp_path / "state"
    assert cli.main(["serve", "--dataset", "synthetic", "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert "synthetic_ratings must be an integer from 200 to 30,000" in err
    assert "Traceback" not in err
    assert not state.exists()


#: Every setting in seconds: each takes the one duration rule (found in review: eight of them,
#: retrain_lease_s and store_timeout_s among them, took no unit).
DURATIONS = sorted(name for name in Settings.model_fields if name.endswith("_s"))


def own_upper_bound(name: str) -> float | None:
    """The setting's own le= (below the durations' 100 years), None if it has none."""
    return min((m.le for m in Settings.model_fields[name].metadata if isinstance(m, Le)),
               default=None)


def test_every_unbounded_duration_is_bounded_at_a_hundred_years() -> None:
    assert {"retention_s", "clock_skew_s", "reward_window_s", "refresh_interval_s",
            "gate_holdout_s"} <= set(DURATIONS)
    for name in DURATIONS:
        upper = own_upper_bound(name)
        if upper is None:
            assert getattr(Settings(**{name: MAX_DURATION_S}), name) == MAX_DURATION_S
        else:  # its own bound holds (a Duration's le= of 100 years overrode it, found in review)
            with pytest.raises(ValidationError, match=f"less than or equal to {upper:g}"):
                Settings(**{name: upper * 2})
        with pytest.raises(ValidationError, match=name):
            Settings(**{name: 1e12})
    with pytest.raises(ValidationError, match="at most 100 years"):
        Settings(retrain_every="40000d")


def test_no_accepted_event_time_is_one_the_log_cannot_hold(tmp_path: Path) -> None:
    # Found by attack: with clock_skew_s=1e308 an event stamped 1e300 was answered 500 but
    # stored, then failed every fold (GET /policy 500, rebuild-state's traceback) and every
    # later start of the service, whatever its settings. At the largest settings allowed such
    # times are refused (422) and nothing is stored.
    from fastapi.testclient import TestClient

    from arms.data import make_synthetic
    from serving.app import create_app

    catalog = make_synthetic(60, 80, 1200, random_state=1)
    settings = Settings(state_dir=tmp_path / "state", arms=["popularity"], seed=0,
                        clock_skew_s=MAX_DURATION_S, retention_s=MAX_DURATION_S)
    with TestClient(create_app(settings, catalog=catalog)) as client:
        item = int(catalog.item_ids[0])
        for stamp in (1e300, 9.3e12, -62135596801, "0001-01-01T00:00:00+01:00",
                      "9999-12-31T23:59:59-01:00"):
            response = client.post("/events", json={"events": [
                {"user_id": 5, "item_id": item, "type": "click", "timestamp": stamp}]})
            assert response.status_code == 422, (stamp, response.text)
        assert client.get("/policy").status_code == 200
        assert client.app.state.service.store.log_seq() == 0


def test_the_service_url_brackets_an_ipv6_host() -> None:
    # Found by attack: serve's banner said "on http://::1:18306".
    from serving.settings import http_url

    assert http_url("::1", 18306) == "http://[::1]:18306"
    assert http_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert http_url("localhost", 80) == "http://localhost:80"


def test_the_bootstrap_and_grid_settings_have_the_bandits_ceilings() -> None:
    """gate_bootstrap and propensity_grid took any size (10**9 of either asks for GiBs)."""
    from bandits.errors import MAX_PROPENSITY_GRID
    from bandits.ope import MAX_BOOTSTRAP

    Settings(gate_bootstrap=MAX_BOOTSTRAP, propensity_grid=MAX_PROPENSITY_GRID)
    for name, value in (("gate_bootstrap", MAX_BOOTSTRAP + 1),
                        ("propensity_grid", MAX_PROPENSITY_GRID + 1)):
        with pytest.raises(ValidationError, match=f"{name}\n.*less than or equal to {value - 1}"):
            Settings(**{name: value})


def test_a_duration_is_written_one_way_in_every_message() -> None:
    """The retention window read 7.776e+06 s in an event's 422 and 7776000 s, 90 days in
    purge's refusal (found by attack)."""
    from serving.settings import say_seconds

    assert say_seconds(7_776_000.0) == "7776000 s (90 days)"
    assert say_seconds(3600.0) == "3600 s"
    assert say_seconds(0.25) == "0.25 s"


def test_a_settings_file_that_is_not_utf8_is_named(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Found by attack: Python's "'utf-8' codec can't decode byte 0xff", naming no file."""
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ValueError, match=rf"^cannot read the settings file '{path}': 'utf-8' "):
        Settings.from_file(path)
    assert cli.main(["models", "list", "--settings", str(path),
                     "--state-dir", str(tmp_path / "state")]) == 2
    assert f"cannot read the settings file '{path}'" in capsys.readouterr().err


def test_arm_params_are_keyed_by_registry_name_as_the_arms_are() -> None:
    # Found in review: the service's arms resolve the alias "ease" (the autoencoder), its
    # arm_params did not: {"ease": ...} was refused as "names arm 'ease', which is not
    # served", while the replay's arm_params took it.
    with pytest.warns(FutureWarning):
        settings = Settings(arms=["autoencoder", "popularity"],
                            arm_params={"ease": {"hidden_units": 16}})
    assert settings.arm_params == {"autoencoder": {"hidden_units": 16}}
    assert settings.fit_params()["autoencoder"]["hidden_units"] == 16
    with pytest.warns(FutureWarning), pytest.raises(ValidationError, match=(
            r"arm_params must name each arm once, got \['autoencoder'\] twice")):
        Settings(arms=["autoencoder"], arm_params={"ease": {}, "autoencoder": {}})
    with pytest.raises(ValidationError, match=r"unknown arm 'svdd'; did you mean svd\?"):
        Settings(arms=["svd"], arm_params={"svdd": {}})


#: Per table setting: a value in the environment, and another given above it (the CLI, a
#: settings file, Python) with none of its keys, and with it its TOML line; other settings
#: needed beside it.
TABLES: dict[str, tuple[str, dict, str, dict]] = {
    "policy_params": ('{"batch_size": 2}', {"propensity_grid": 64},
                      "[policy_params]\npropensity_grid = 64\n", {}),
    "shadow_policy_params": ('{"scale": 0.5}', {"ridge": 2.0},
                             "[shadow_policy_params]\nridge = 2.0\n",
                             {"shadow_policy": "LinTS"}),
    "arm_params": ('{"popularity": {"half_life": 3600}, "svd": {"n_factors": 4}}',
                   {"svd": {"n_epochs": 1}}, "[arm_params.svd]\nn_epochs = 1\n", {}),
    "rules": ('{"click": {"reward": 0.5}, "like": {"precedence": 9}}', {"like": {"reward": 0.9}},
              "[rules.like]\nreward = 0.9\n", {}),
}


def test_every_table_setting_is_checked_for_replacement() -> None:
    assert set(TABLES) == {name for name, field in Settings.model_fields.items()
                           if str(field.annotation).startswith("dict")}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_a_table_given_above_the_environment_replaces_it_whole(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by a README check: pydantic-settings merged the two, so `--shadow-policy-params
    # '{}'` kept RECBANDITS_SHADOW_POLICY_PARAMS's scale and ThompsonSampling refused it.
    env, given, toml, beside = TABLES[name]
    monkeypatch.setenv(f"RECBANDITS_{name.upper()}", env)
    assert getattr(Settings(**beside), name) == json.loads(env)  # the variable alone
    assert getattr(Settings(**beside, **{name: given}), name) == given
    assert getattr(Settings(**beside, **{name: {}}), name) == {}
    path = tmp_path / "settings.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in beside.items()) + toml)
    assert getattr(Settings.from_file(path), name) == given


@pytest.mark.parametrize("name", sorted(TABLES))
def test_an_invalid_variable_under_a_setting_given_above_is_not_read(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: RECBANDITS_POLICY_PARAMS='[1]' refused Settings(policy_params={})
    # (the table was decoded before the keyword took its place), whereas an invalid integer
    # or float variable under a keyword was ignored: one precedence for every kind.
    beside = TABLES[name][3]
    monkeypatch.setenv(f"RECBANDITS_{name.upper()}", "[1]")
    monkeypatch.setenv("RECBANDITS_WORKERS", "1_6")
    monkeypatch.setenv("RECBANDITS_EXPLORATION_FLOOR", "0_1")
    settings = Settings(**beside, **{name: {}}, workers=2, exploration_floor=0.1)
    assert (getattr(settings, name), settings.workers, settings.exploration_floor) == ({}, 2, 0.1)
    with pytest.raises(ValueError, match=f"^RECBANDITS_{name.upper()}='\\[1\\]': must be a JSON"):
        Settings(**beside, workers=2, exploration_floor=0.1)  # read when nothing above sets it


def test_shadow_policy_params_on_the_command_line_replace_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECBANDITS_SHADOW_POLICY_PARAMS", '{"batch_size": 1}')
    options = argparse.Namespace(shadow_policy="LinTS", shadow_policy_params='{"ridge": 2}')
    assert cli._serving_settings(options).shadow_policy_params == {"ridge": 2}
    monkeypatch.setenv("RECBANDITS_SHADOW_POLICY_PARAMS", '{"scale": 0.5}')
    options = argparse.Namespace(shadow_policy="ThompsonSampling", shadow_policy_params="{}",
                                 policy="UCB1")
    settings = cli._serving_settings(options)
    assert (settings.shadow_policy, settings.shadow_policy_params) == ("ThompsonSampling", {})


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("text", ["", "{scale", "nan", "[1]", "3"])
def test_a_table_variable_that_is_not_json_is_named_with_its_value(
        name: str, text: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Found by a README check: RECBANDITS_POLICY_PARAMS= was 'error parsing value for field
    # "policy_params" from source "EnvSettingsSource"', naming neither variable nor value.
    variable = f"RECBANDITS_{name.upper()}"
    monkeypatch.setenv(variable, text)
    said = f"{variable}={text!r}: must be a JSON object"
    with pytest.raises(ValueError, match="^" + re.escape(said)):
        Settings(**TABLES[name][3])
    assert cli.main(["credit", "--state-dir", "/nonexistent/recbandits"]) == 2
    assert capsys.readouterr().err.startswith(f"recbandits credit: {said}")
    # Review: ope's own settings read let it through as a traceback, exit 1; JSON that is no
    # object ('[1]') was pydantic's "Input should be a valid dictionary", naming neither.
    assert cli.main(["ope", "--out", "/nonexistent/ope"]) == 2
    assert capsys.readouterr().err.startswith(f"recbandits ope: {said}")


@pytest.mark.parametrize("text", ["", "{scale", "nan", "[1]", "3", "null"])
def test_a_table_option_is_refused_by_the_variables_rule_and_words(
        text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Found in review: --shadow-policy-params '[1]' was pydantic's "shadow_policy_params:
    # Input should be a valid dictionary" and '{bad' another sentence than the variable's.
    argv = ["shadow", "status", "--state-dir", str(tmp_path / "none"), "--shadow-policy",
            "LinTS"]
    assert cli.main([*argv, "--shadow-policy-params", text]) == 2
    by_option = capsys.readouterr().err.strip()
    monkeypatch.setenv("RECBANDITS_SHADOW_POLICY_PARAMS", text)
    assert cli.main(argv) == 2
    by_variable = capsys.readouterr().err.strip()
    head = "recbandits shadow status: "
    assert by_option.startswith(f"{head}--shadow-policy-params={text!r}: must be a JSON object")
    assert by_variable.startswith(f"{head}RECBANDITS_SHADOW_POLICY_PARAMS={text!r}: ")
    assert (by_option.removeprefix(f"{head}--shadow-policy-params=")
            == by_variable.removeprefix(f"{head}RECBANDITS_SHADOW_POLICY_PARAMS="))
    assert len(by_option.splitlines()) == 1


def test_a_refusal_by_pydantic_names_the_value_given() -> None:
    # Found by a README check: RECBANDITS_HOLDOUT_SHARE=2 said "holdout_share: Input should be
    # less than 1", naming neither the value nor, for a typo, what was typed.
    for values, said in (
            ({"holdout_share": 2}, "holdout_share: Input should be less than 1, got 2"),
            ({"slate_mode": "abc"},
             "slate_mode: Input should be 'single' or 'multileave', got 'abc'"),
            ({"synthetic_users": "many"}, "synthetic_users: must be an integer in plain decimal "
             "digits, got 'many'")):
        with pytest.raises(ValidationError) as refused:
            Settings(**values)
        assert settings_issues(refused.value) == said


def test_a_refused_policy_parameter_is_named_as_a_policy_params_entry() -> None:
    # Found by a README check: the shadow's said "shadow_policy_params: ...", the live
    # policy's only "scale=nan must be finite", naming no setting.
    with pytest.raises(ValidationError) as refused:
        Settings(policy="LinTS", policy_params={"scale": math.nan})
    assert settings_issues(refused.value) == "settings: policy_params: scale=nan must be finite"


DURATION_SETTINGS = sorted([*DURATIONS, "retrain_every"])


def test_every_duration_setting_takes_the_one_duration_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: retrain_every took "90d" and refused "1_000", while the 14 other
    # duration settings refused "90d" ("Input should be a valid number") and read "1_000" as
    # 1000.0 (pydantic's number parsing); then eight settings in seconds still took no unit
    # (RECBANDITS_RETRAIN_LEASE_S=10m: "must be a number in plain decimal digits").
    from serving.durations import DURATION_UNITS

    assert {"retention_s", "clock_skew_s", "gate_holdout_s", "retrain_every", "reward_window_s",
            "keep_alive_timeout_s", "retrain_lease_s", "retrain_check_s", "store_timeout_s",
            "commit_linger_s", "switch_interval_s", "stream_poll_s", "stream_heartbeat_s",
            "worker_healthcheck_timeout_s"} <= set(DURATION_SETTINGS)
    assert len(DURATION_SETTINGS) == 23
    for name in DURATION_SETTINGS:
        seconds = Settings.model_fields[name].default or 60  # one in the setting's range
        upper = own_upper_bound(name)
        if upper is None:
            assert getattr(Settings(**{name: "90d"}), name) == 90 * 86_400.0
        assert getattr(Settings(**{name: f"{seconds!r}s"}), name) == seconds
        assert getattr(Settings(**{name: f"{seconds / 60!r}m"}), name) == pytest.approx(seconds)
        if upper is None:
            assert getattr(Settings(**{name: 7}), name) == 7.0
            for unit, unit_s in DURATION_UNITS.items():
                assert getattr(Settings(**{name: f"2{unit}"}), name) == 2 * unit_s
        # No spaces, as no number takes any (" 1.5m " was taken, " 2" refused for workers)
        for text in ("1_000", "+5", "5w", "١٢", " 1.5m ", "1.5 m", "5\n"):
            said = ("must be a finite number of seconds in plain decimal digits, or one with a "
                    "unit s, m, h or d (as '90s' or '6h')"
                    + (", or 'off'" if name == "retrain_every" else "") + f", got {text!r}")
            with pytest.raises(ValidationError) as refused:
                Settings(**{name: text})
            assert settings_issues(refused.value) == f"{name}: {said}"  # named once
            monkeypatch.setenv(f"RECBANDITS_{name.upper()}", text)  # the variable named
            with pytest.raises(ValueError) as refused_variable:
                Settings()
            assert str(refused_variable.value) == f"RECBANDITS_{name.upper()}={text!r}: {said}"
            monkeypatch.delenv(f"RECBANDITS_{name.upper()}")
        for value in ("36600d", 4e9):  # over MAX_DURATION_S, as text or as a number
            with pytest.raises(ValidationError) as refused:
                Settings(**{name: value})
            assert settings_issues(refused.value).startswith(
                f"{name}: must be at most 100 years (3155760000 s), got")
        # A negative duration is out of range from every source (a variable's "-5" was "not
        # plain decimal digits", a file's -5 "greater than 0": found in review)
        for given in (-5, "-5", "-5m", None):
            if given is None:
                monkeypatch.setenv(f"RECBANDITS_{name.upper()}", "-5")
            with pytest.raises(ValidationError) as refused:
                Settings() if given is None else Settings(**{name: given})
            assert settings_issues(refused.value).startswith(
                f"{name}: Input should be greater than")
        monkeypatch.delenv(f"RECBANDITS_{name.upper()}")
    monkeypatch.setenv("RECBANDITS_RETENTION_S", "30d")
    monkeypatch.setenv("RECBANDITS_RETRAIN_EVERY", "6h")
    settings = Settings(refresh_interval_s=1e-5)
    assert (settings.retention_s, settings.retrain_every) == (30 * 86_400.0, 21_600.0)
    monkeypatch.setenv("RECBANDITS_REFRESH_INTERVAL_S",
                       settings.to_env()["RECBANDITS_REFRESH_INTERVAL_S"])  # "1e-05"
    assert Settings().refresh_interval_s == 1e-5


@pytest.mark.parametrize(("text", "why"), [
    ('{"alpha": -2, "alpha": 1}', "the key 'alpha' appears twice in one object"),
    ('{"a": {"b": 1, "b": 2}}', "the key 'b' appears twice in one object"),
    ("null", "got JSON null"), ("[1]", "got a JSON array"), ('"x"', "got a JSON string")])
def test_a_table_text_naming_a_key_twice_or_no_object_is_said_in_jsons_words(
        text: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by attack: '{"alpha": -2, "alpha": 1}' was taken (the last key wins) where the API
    # refuses a repeated key, and null was "got a JSON NoneType", Python's name.
    monkeypatch.setenv("RECBANDITS_SHADOW_POLICY_PARAMS", text)
    with pytest.raises(ValueError) as refused:
        Settings(shadow_policy="LinUCB")
    assert str(refused.value) == (f"RECBANDITS_SHADOW_POLICY_PARAMS={text!r}: must be a JSON "
                                  f"object (as '{{\"name\": value}}'; '{{}}' for none): {why}")


@pytest.mark.parametrize(("values", "said"), [
    ({"policy": "LinTS", "policy_params": {"scale": "1_0"}}, "policy_params.scale: ... '1_0'"),
    ({"policy": "LinTS", "shadow_policy": "LinUCB", "shadow_policy_params": {"alpha": " 2"}},
     "shadow_policy_params.alpha: ... ' 2'"),
    ({"rules": {"click": {"reward": "0_1"}}}, "rules.click.reward: ... '0_1'"),
    ({"policy": "ThompsonSampling", "arms": ["svd", "popularity"],
      "policy_params": {"prior_alpha": ["1", 2]}}, "policy_params.prior_alpha: ... ['1', 2]"),
])
def test_a_tables_numbers_are_numbers_never_text(values: dict, said: str) -> None:
    # Found by attack: pydantic's lax union read "1_0" as 10.0 in policy_params, " 2" as 2.0,
    # and a rule's reward "0_1" as 1.0, where the numbers' rule refuses such text elsewhere.
    with pytest.raises(ValidationError) as refused:
        Settings(**values)
    where, _, value = said.partition(": ... ")
    assert settings_issues(refused.value) == (
        f"{where}: must be a number, true or false, or a list or table of numbers, not text: "
        f"got {value}")


def test_serve_hands_its_workers_a_setting_turned_off_above_the_variables(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Found in review: Settings.to_env writes no variable for a None setting, so the workers,
    # which rebuild their settings from the environment, took RECBANDITS_ADMIN_TOKEN and
    # RECBANDITS_RETRAIN_EVERY back: a settings file's admin_token = "" (admin off) served the
    # admin routes with the variable's token. Options override the file, which overrides the
    # variables, in the workers too.
    import types

    from test_serving_support import free_port

    from serving import commands

    environ = {"PATH": os.environ.get("PATH", ""), "RECBANDITS_ADMIN_TOKEN": "envtoken",
               "RECBANDITS_RETRAIN_EVERY": "6h", "recbandits_seed": "7",
               "RECBANDITS_DB": "sqlite:////nonexistent/other.db"}
    monkeypatch.setattr(os, "environ", environ)  # serve exports the settings: into this copy
    path = tmp_path / "off.toml"
    path.write_text('admin_token = ""\nretrain_every = "off"\n')
    settings = Settings.from_file(path, state_dir=tmp_path, port=free_port(), seed=None,
                                  db=None)
    assert (settings.admin_token, settings.retrain_every, settings.seed) == (None, None, None)
    resources = types.SimpleNamespace(store=types.SimpleNamespace(dispose=lambda: None,
                                                                  describe=lambda: "x"),
                                      arm_set=types.SimpleNamespace(version=1),
                                      settings=settings)
    monkeypatch.setattr(commands, "load_catalog", lambda settings: None)
    monkeypatch.setattr(commands, "until_the_store_answers", lambda settings, start: resources)
    workers: list[Settings] = []
    monkeypatch.setattr(commands, "_run_worker",  # what serving.app.app_from_env reads
                        lambda config, sock: workers.append(Settings()) or 0)
    assert commands.serve(settings) == 0
    worker = workers[0]
    assert (worker.admin_token, worker.retrain_every, worker.seed, worker.db) == (
        None, None, None, None)
    assert worker.resolved_db_url() == settings.resolved_db_url()
    assert worker.model_dump() == settings.model_dump()
    assert "PATH" in environ  # the other variables kept


def test_a_refused_value_is_said_once_bounded_and_never_a_secret(tmp_path: Path) -> None:
    # Found in review: settings_issues said the admin token refused (admin_token = 123456789
    # in a settings file), any value whole (workers = 'x' * 5000: 5,086 characters) and a
    # table entry's value once a union branch (12,394 characters for 3,000).
    from bandits.errors import short_repr

    def issues(**values: object) -> str:
        with pytest.raises(ValidationError) as refused:
            Settings(**values)
        return settings_issues(refused.value)

    path = tmp_path / "settings.toml"
    path.write_text("admin_token = 123456789\n")
    with pytest.raises(ValidationError) as refused:
        Settings.from_file(path)
    assert settings_issues(refused.value) == "admin_token: Input should be a valid string"
    assert issues(workers="x" * 5000) == ("workers: must be an integer in plain decimal "
                                          "digits, got " + short_repr("x" * 5000))
    said = issues(policy_params={"prior_alpha": {"a": 1}})
    assert said == ("policy_params.prior_alpha: fits none of its types: float (Input should be "
                    "a valid number), int (Input should be a valid integer), bool (Input should "
                    "be a valid boolean), list[float] (Input should be a valid list)")
    # A store URL's password hidden before the value is cut (the cut kept none of it here).
    for url in ("postgresql+psycopg://u:secretpw@h:5432/db", "u:secretpw@h/db?x=1" + "y" * 90):
        said = issues(workers=url)
        assert "secretpw" not in said and "u:***@h" in said and len(said) < 150
    for value in ("postgresql+psycopg://u:secretpw@h:5432/db", "u:secretpw@h/db"):  # a rule's
        said = issues(retention_s=value)  # own words quote it: hidden there too
        assert "secretpw" not in said and "u:***@h" in said
    # The entries of a list refusing equal values are two issues, not branches of one.
    assert issues(drift_windows=["x", "x"]).count(", got 'x'") == 2

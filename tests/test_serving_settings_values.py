"""Settings that are numbers are finite: each float setting refuses inf and NaN by name."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from serving.settings import Settings

FLOAT_SETTINGS = sorted(name for name, field in Settings.model_fields.items()
                        if "float" in str(field.annotation))


def test_there_are_float_settings_to_check() -> None:
    assert {"retention_s", "reward_window_s", "clock_skew_s", "refresh_interval_s"} <= set(
        FLOAT_SETTINGS)


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_float_setting_refuses_what_is_not_finite(name: str, value: float) -> None:
    # Found by attack: RECBANDITS_RETENTION_S=inf passed the check (gt=0 lets inf through),
    # then serve fitted and saved the arms before its workers failed to start.
    with pytest.raises(ValidationError) as refused:
        Settings(**{name: value})
    assert name in str(refused.value)


def test_an_infinite_setting_from_the_environment_is_refused_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ("inf", "1e999", "Infinity"):
        monkeypatch.setenv("RECBANDITS_RETENTION_S", text)
        with pytest.raises(ValidationError) as refused:
            Settings()
        assert "retention_s" in str(refused.value) and "finite" in str(refused.value)

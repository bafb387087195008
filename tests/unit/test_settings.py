"""The server's settings: OPRUN_* variables through pydantic-settings; a bad one is named."""

from __future__ import annotations

import pytest

from oprun import ValidationError
from oprun.service.settings import Settings

VARIABLES = (
    "OPRUN_DATABASE_URL",
    "OPRUN_DATA_DIR",
    "OPRUN_LEASE_SECONDS",
    "OPRUN_REAP_INTERVAL",
    "OPRUN_BOOTSTRAP_TOKEN",
    "OPRUN_WORKER_SILENCE",
)


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    """No OPRUN_* variable of the test run; the data directory in tmp_path."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPRUN_DATA_DIR", str(tmp_path))
    return monkeypatch


def test_the_defaults(tmp_path):
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'oprun.db'}"
    assert (settings.lease_seconds, settings.reap_interval) == (30.0, 2.0)
    assert settings.bootstrap_token is None and settings.worker_silence_seconds is None
    assert settings.worker_silence == 90.0  # three leases
    assert settings.token_cache_seconds == 5.0


def test_each_setting_comes_from_its_variable(environment):
    environment.setenv("OPRUN_DATABASE_URL", "postgresql://db/oprun")
    environment.setenv("OPRUN_LEASE_SECONDS", "12.5")
    environment.setenv("OPRUN_REAP_INTERVAL", "0.25")
    environment.setenv("OPRUN_BOOTSTRAP_TOKEN", "s3cret")
    environment.setenv("OPRUN_WORKER_SILENCE", "40")
    settings = Settings()
    assert settings.database_url == "postgresql://db/oprun"
    assert (settings.lease_seconds, settings.reap_interval) == (12.5, 0.25)
    assert settings.bootstrap_token == "s3cret" and "s3cret" not in repr(settings)
    assert settings.worker_silence == 40.0


def test_arguments_win_and_empty_variables_count_as_unset(environment, tmp_path):
    environment.setenv("OPRUN_LEASE_SECONDS", "12.5")
    environment.setenv("OPRUN_DATABASE_URL", "")
    environment.setenv("OPRUN_BOOTSTRAP_TOKEN", "")
    environment.setenv("OPRUN_WORKER_SILENCE", "")
    settings = Settings(lease_seconds=3, bootstrap_token="given")
    assert settings.lease_seconds == 3 and settings.bootstrap_token == "given"
    assert settings.database_url == f"sqlite:///{tmp_path / 'oprun.db'}"
    assert settings.worker_silence == 9.0


def test_a_bad_value_names_its_variable_its_value_and_what_was_expected(environment):
    environment.setenv("OPRUN_LEASE_SECONDS", "abc")
    with pytest.raises(ValidationError, match="OPRUN_LEASE_SECONDS='abc' is not valid") as caught:
        Settings.load()
    assert "number" in caught.value.message
    assert caught.value.details["field"] == "OPRUN_LEASE_SECONDS"
    environment.setenv("OPRUN_LEASE_SECONDS", "30")
    environment.setenv("OPRUN_REAP_INTERVAL", "0")
    with pytest.raises(ValidationError, match=r"OPRUN_REAP_INTERVAL='0' is not valid: .*greater"):
        Settings.load()


def test_settings_are_frozen():
    with pytest.raises(Exception, match="frozen"):
        Settings().lease_seconds = 1  # type: ignore[misc]

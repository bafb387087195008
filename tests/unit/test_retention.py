"""Retention's rules: a project's own limits over the server's, where purging stops, pacing."""

from __future__ import annotations

import pytest

from oprun import ValidationError
from oprun.domain.retention import (
    SECONDS_PER_DAY,
    Boundary,
    RetentionSettings,
    age_boundary,
    effective,
    purge_boundary,
)
from oprun.service.retention import FEWEST, next_limit
from oprun.service.settings import Settings

RETENTION_VARIABLES = (
    "OPRUN_RETENTION_DAYS",
    "OPRUN_RETENTION_MAX_OPERATIONS",
    "OPRUN_EVENTS_RETENTION_HOURS",
    "OPRUN_RETENTION_INTERVAL",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in RETENTION_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_each_of_a_projects_own_limits_wins_over_the_servers():
    server = RetentionSettings(days=30, max_operations=1000)
    mixed = effective(RetentionSettings(max_operations=10), server)
    assert (mixed.effective_days, mixed.effective_max_operations) == (30, 10)
    assert (mixed.days, mixed.max_operations) == (None, 10)
    inherited = effective(RetentionSettings(), RetentionSettings())
    assert inherited.effective_days is None and inherited.effective_max_operations is None


def test_purging_stops_at_the_later_of_the_age_and_count_limits():
    now = 1_000_000.0
    by_age = age_boundary(1, now)
    assert by_age == Boundary(now - SECONDS_PER_DAY, "")
    later = Boundary(now - 60, "op_b")
    assert purge_boundary(by_age, later) == later
    assert purge_boundary(by_age, None) == by_age
    assert purge_boundary(None, None) is None
    assert age_boundary(None, now) is None
    # Operations that ended together are told apart by id.
    assert Boundary(5.0, "op_a") < Boundary(5.0, "op_b") < Boundary(5.0001, "")


def test_retention_is_off_unless_set_and_events_follow_operations_by_default(monkeypatch):
    off = Settings(database_url="sqlite://")
    assert off.retention == RetentionSettings() and off.events_retention_seconds is None
    monkeypatch.setenv("OPRUN_RETENTION_DAYS", "2")
    monkeypatch.setenv("OPRUN_RETENTION_MAX_OPERATIONS", "500")
    on = Settings(database_url="sqlite://")
    assert on.retention == RetentionSettings(days=2, max_operations=500)
    assert on.events_retention_seconds == 2 * SECONDS_PER_DAY
    monkeypatch.setenv("OPRUN_EVENTS_RETENTION_HOURS", "6")
    assert Settings(database_url="sqlite://").events_retention_seconds == 6 * 3600


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OPRUN_RETENTION_DAYS", "0"), ("OPRUN_RETENTION_MAX_OPERATIONS", "-1")],
)
def test_a_bad_retention_setting_is_refused_naming_its_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable):
        Settings.load(database_url="sqlite://")


def test_a_batch_is_sized_to_the_target_time_growing_at_most_twofold():
    assert next_limit(20, 20, 0.001, 500) == 40  # fast: doubles
    assert next_limit(400, 400, 0.001, 500) == 500  # never past the most
    assert next_limit(200, 200, 0.04, 500) == 100  # twice the target: halves
    assert next_limit(50, 50, 10.0, 500) == FEWEST  # however slow, the purge goes on
    assert next_limit(20, 20, 0.001, 5) == 5

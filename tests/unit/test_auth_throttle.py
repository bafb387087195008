"""Failed authentications per client address: 429 past the limit, valid tokens still in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from oprun.domain.errors import AuthenticationError, Throttled
from oprun.domain.throttle import FailureRule
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.service.throttle import FailureThrottle
from oprun.store import Store, open_store

ADMIN = "oprun_auth_throttle_unit_admin"
HOST = "203.0.113.7"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'oprun.db'}")
    bootstrap(opened, ADMIN)
    yield opened
    opened.close()


@pytest.fixture
def services(store: Store, tmp_path: Path) -> Services:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'oprun.db'}",
        bootstrap_token=ADMIN,
        auth_failure_limit=3,
        auth_failure_window=60,
    )
    return Services.build(store, settings)


def test_past_the_limit_an_address_gets_429_without_a_lookup_but_known_tokens_work(
    services: Services, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.auth.authenticate(ADMIN, HOST)  # known here from now on
    for i in range(3):
        with pytest.raises(AuthenticationError):
            services.auth.authenticate(f"oprun_wrong_{i}", HOST)
    lookups: list[str] = []
    real = store.token_by_hash
    monkeypatch.setattr(store, "token_by_hash", lambda d: lookups.append(d) or real(d))
    with pytest.raises(Throttled) as caught:
        services.auth.authenticate("oprun_wrong_again", HOST)
    assert lookups == []  # refused without touching the database
    assert 1 <= caught.value.details["retry_after"] <= 60
    assert services.auth.authenticate(ADMIN, HOST).name == "admin"  # the office is not locked out
    with pytest.raises(AuthenticationError) as other:  # another address is not throttled
        services.auth.authenticate("oprun_wrong_x", "198.51.100.1")
    assert not isinstance(other.value, Throttled)
    with pytest.raises(AuthenticationError) as missing:  # no token is no guess: still 401
        services.auth.authenticate(None, HOST)
    assert not isinstance(missing.value, Throttled)


def test_settings_read_the_rule_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPRUN_AUTH_FAILURE_LIMIT", "7")
    monkeypatch.setenv("OPRUN_AUTH_FAILURE_WINDOW", "2.5")
    assert Settings.load(database_url="sqlite://").auth_failures == FailureRule(7, 2.5)
    assert Settings.load(database_url="sqlite://", auth_failure_limit=20).auth_failure_limit == 20


def test_addresses_are_bounded_and_the_log_is_one_line_a_second_per_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = FailureThrottle(FailureRule(limit=2, window=60), max_clients=100)
    with caplog.at_level(logging.WARNING, logger="oprun.auth"):
        for i in range(1000):
            throttle.fail(f"10.0.{i // 256}.{i % 256}", "unknown", now=i / 1000)
        for _ in range(500):
            throttle.fail("10.9.9.9", "unknown", now=5.0)
        throttle.fail("10.9.9.9", "expired", now=6.5)
    assert throttle.tracked() == 100
    lines = [r.getMessage() for r in caplog.records if "10.9.9.9" in r.getMessage()]
    assert len(lines) == 2
    assert "event=auth_failed client=10.9.9.9 reason=expired" in lines[1]
    assert "unlogged=499" in lines[1]

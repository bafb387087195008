"""The database's clock as a process carries it between readings (`DatabaseClock`)."""

from __future__ import annotations

import time

import pytest

from oprun.store import db_clock
from oprun.store.db_clock import DatabaseClock


class Monotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = 1000.0

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    clock = Monotonic()
    monkeypatch.setattr(db_clock.time, "monotonic", clock)
    return clock


def test_a_reading_is_carried_forward_until_the_next_is_due(mono: Monotonic) -> None:
    clock = DatabaseClock(resync=1.0)
    readings = iter([5000.0, 7000.0])
    reads = []

    def read() -> float:
        reads.append(mono.at)
        return next(readings)

    assert clock.carried() is None
    assert clock.now(read) == 5000.0
    mono.at += 0.25
    assert clock.now(read) == pytest.approx(5000.25)
    mono.at += 0.7
    assert clock.now(read) == pytest.approx(5000.95)
    assert len(reads) == 1
    mono.at += 0.1  # a second since the reading: the next one is due
    assert clock.carried() is None
    assert clock.now(read) == 7000.0
    assert len(reads) == 2


def test_a_monotonic_clock_that_steps_is_never_carried_across(mono: Monotonic) -> None:
    clock = DatabaseClock(resync=1.0)
    readings = iter([5000.0, 5000.5, 5001.0])
    clock.now(lambda: next(readings))
    mono.at -= 0.01  # backwards: a faked clock, never a real monotonic one
    assert clock.carried() is None
    assert clock.now(lambda: next(readings)) == 5000.5
    mono.at += 3600  # an hour ahead at once
    assert clock.now(lambda: next(readings)) == 5001.0


def test_the_carried_clock_moves_with_real_time() -> None:
    clock = DatabaseClock(resync=10.0)
    clock.now(lambda: 100.0)
    time.sleep(0.02)
    carried = clock.carried()
    assert carried is not None
    assert 100.015 < carried < 101.0

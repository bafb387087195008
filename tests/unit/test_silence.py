"""The server's own silence (`oprun.domain.silence`), by example: see tests/property for the rest."""

from __future__ import annotations

import pytest

from oprun.domain.silence import Forgiveness, SilenceRule

DEFAULTS = SilenceRule(reap_interval=2.0, lease_seconds=30.0)


def test_the_tolerance_is_half_a_lease_or_two_reap_intervals():
    assert DEFAULTS.tolerance == 15.0
    assert SilenceRule(reap_interval=0.25, lease_seconds=2.0).tolerance == 1.0
    assert SilenceRule(reap_interval=5.0, lease_seconds=6.0).tolerance == 10.0


def test_the_first_round_ever_forgives_nothing():
    assert DEFAULTS.forgive(now=1000.0, last_round=None) is None


def test_a_round_on_time_or_late_within_the_tolerance_forgives_nothing():
    assert DEFAULTS.forgive(now=1002.0, last_round=1000.0) is None
    assert DEFAULTS.forgive(now=1015.0, last_round=1000.0) is None


def test_a_clock_stepped_back_forgives_nothing():
    assert DEFAULTS.forgive(now=880.0, last_round=1000.0) is None


def test_a_100_s_outage_moves_each_clock_by_the_silence_up_to_a_renewal_now():
    forgiven = DEFAULTS.forgive(now=1100.0, last_round=1000.0)
    assert forgiven == Forgiveness(seconds=100.0, heartbeat_cap=1100.0, lease_cap=1130.0)
    # A worker heard 5 s before the last round is counted silent for those 5 s.
    assert forgiven.heartbeat(995.0) == 1095.0
    # Its lease, renewed then, keeps what it had left at the last round.
    assert forgiven.lease(1025.0) == 1125.0
    # A worker heard after the service came back is not pushed past now...
    assert forgiven.heartbeat(1099.5) == 1100.0
    assert forgiven.lease(1129.5) == 1130.0
    # ... nor moved back, even by a lease renewed for longer than the one in force.
    assert forgiven.heartbeat(1100.5) == 1100.5
    assert forgiven.lease(1200.0) == 1200.0


def test_a_worker_silent_long_before_the_outage_is_still_given_up():
    forgiven = DEFAULTS.forgive(now=1100.0, last_round=1000.0)
    assert forgiven is not None
    heard = forgiven.heartbeat(900.0)  # silent for 100 s while the server listened
    assert 1100.0 - heard == pytest.approx(100.0)  # past the 90 s of three leases


def test_a_round_leaves_its_end_for_the_next_unless_it_outlasted_the_tolerance():
    assert DEFAULTS.mark(started=1000.0, ended=1000.2) == 1000.2  # the load made it long
    assert DEFAULTS.mark(started=1000.0, ended=1015.0) == 1015.0
    # The clock stepped forward by 20 s while it ran (or it held the database that long):
    # the next round measures from its start, and forgives the step.
    assert DEFAULTS.mark(started=1000.0, ended=1020.0) == 1000.0
    assert DEFAULTS.forgive(now=1022.0, last_round=DEFAULTS.mark(1000.0, 1020.0)) is not None
    assert DEFAULTS.mark(started=1000.0, ended=990.0) == 990.0  # stepped back: its end

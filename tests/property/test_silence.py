"""Invariants of the server's own silence: nothing is shortened, and a healthy worker loses nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oprun.domain.silence import SilenceRule

instants = st.floats(0, 4e9)  # epoch seconds, to 2096
durations = st.floats(0.001, 1e6)
EPSILON = 1e-5
"""Seconds of float rounding allowed at a boundary (epoch seconds keep ~0.5 us)."""


@st.composite
def rules(draw: st.DrawFn) -> SilenceRule:
    lease = draw(st.floats(0.1, 3600))
    return SilenceRule(reap_interval=draw(st.floats(lease / 1000, lease)), lease_seconds=lease)


@given(rules(), instants, st.floats(-1e6, 1e6), instants)
def test_forgiveness_never_shortens_and_never_runs_past_a_renewal_now(rule, last, gap, value):
    now = last + gap
    forgiven = rule.forgive(now, last)
    if gap <= rule.tolerance:  # a round on time, or a clock stepped back
        assert forgiven is None
        return
    assert forgiven is not None
    assert forgiven.seconds > 0
    assert forgiven.heartbeat(value) >= value
    assert forgiven.lease(value) >= value
    assert forgiven.heartbeat(value) <= max(value, now)
    assert forgiven.lease(value) <= max(value, now + rule.lease_seconds)


@given(rules(), instants, durations, st.floats(0, 1))
def test_a_lease_live_at_the_last_round_survives_the_silence(rule, last, gap, share):
    now = last + rule.tolerance + gap
    forgiven = rule.forgive(now, last)
    assert forgiven is not None
    expires = last + share * rule.lease_seconds
    assert forgiven.lease(expires) >= now - EPSILON  # the reaper ends a lease only once it is < now


@given(rules(), instants, durations, durations)
def test_a_worker_is_counted_silent_only_for_what_the_server_heard(rule, last, gap, before):
    now = last + rule.tolerance + gap
    forgiven = rule.forgive(now, last)
    assert forgiven is not None
    heard = last - before
    counted = now - forgiven.heartbeat(heard)
    assert counted <= before + EPSILON


@given(rules(), instants, st.floats(-1e6, 1e6), st.floats(0, 1e6))
def test_a_round_that_the_clock_stepped_under_is_forgiven_by_the_next(rule, started, step, pause):
    """The clock steps by `step` while a round runs; the next comes `pause` later."""
    ended = started + step
    mark = rule.mark(started, ended)
    assert mark <= max(started, ended)
    forgiven = rule.forgive(ended + pause, mark)
    if step > rule.tolerance:  # the round reaped by its start: the step must be forgiven
        assert forgiven is not None
        assert forgiven.seconds >= step + pause - EPSILON


@given(
    lease=st.floats(0.5, 600),
    reap_share=st.floats(0.01, 1 / 6),
    outage_start=st.floats(0, 5),
    outage=st.floats(0, 20),
    step=st.floats(-20, 20),
    first_beat=st.floats(0, 0.999),
    first_round=st.floats(0, 0.999),
)
def test_a_worker_that_beats_every_third_of_a_lease_loses_nothing_to_the_servers_silence(
    lease, reap_share, outage_start, outage, step, first_beat, first_round
):
    """A model: one worker, one lease, one API process whose reaper keeps its rhythm.

    The server hears nothing from `outage_start` for `outage` (in leases), and its clock
    steps by `step` leases meanwhile (forward or back). The worker beats every third of a
    lease while it is heard and, unanswered, tries again every sixth (`HeartbeatLoop`), so
    it is heard within a sixth of a lease once the server is back. Whatever the outage and
    the step, no round finds its lease lapsed or the worker silent.
    """
    rule = SilenceRule(reap_interval=reap_share * lease, lease_seconds=lease)
    third, r = lease / 3, rule.reap_interval
    down, back = outage_start * lease, (outage_start + outage) * lease

    def clock(real: float) -> float:
        return real + (step * lease if real >= back else 0.0)

    events: list[tuple[float, int]] = []  # (real time, 0 = heartbeat, 1 = round)
    beat = 0.0
    while beat < down:
        events.append((beat, 0))
        beat += third
    beat = back + first_beat * third / 2
    while beat < back + 3 * lease:
        events.append((beat, 0))
        beat += third
    events.append((0.0, 1))  # the server's first round comes before it hands out work
    tick = r
    while tick < down:
        events.append((tick, 1))
        tick += r
    tick = back + first_round * r
    while tick < back + 3 * lease:
        events.append((tick, 1))
        tick += r
    events.sort()

    expires, heard, last_round = clock(0.0) + lease, clock(0.0), None
    for real, kind in events:
        now = clock(real)
        if kind == 0:
            expires, heard = now + lease, now
            continue
        forgiven = rule.forgive(now, last_round)
        if forgiven is not None:
            expires, heard = forgiven.lease(expires), forgiven.heartbeat(heard)
        assert expires >= now, f"lease lapsed at {real:.3f} (clock {now:.3f})"
        assert heard >= now - 3 * lease, f"worker given up at {real:.3f}"
        last_round = now

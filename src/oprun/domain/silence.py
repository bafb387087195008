"""The server's own silence: time in which it could not hear its workers counts against none.

Every reaper round, in any API process, records the store's time. A round that
finds the previous one further back than the tolerance knows the server itself was
away: every API process was down, the database was unreachable, or the clock
stepped forward. Heartbeats sent meanwhile could not be stored, so before it reaps,
the clocks that count against workers (their last heartbeat, their leases) move
forward by the whole gap since that round, never past where a heartbeat received now
would put them: time stands still for them from the last round the server is known
to have listened in. A worker then loses a lease, or is given up for lost, only for
silence the server was there to hear.

The whole gap, not the gap less the reaper's pause: the silence lies somewhere in the
gap, and no clock tells where (a clock step that also steps the monotonic clock, as
libfaketime's does, cuts the pause short). Forgiving less lapses a lease that had less
than a pause left when the silence began, work that then runs twice; forgiving the
pause too costs at most one pause more before a worker that died meanwhile is given up.

A clock stepped backwards needs nothing: every lease and heartbeat written before
the step lies ahead of the clock now, so each lasts longer, never shorter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Forgiveness:
    """How far the clocks that count against workers move after the server's own silence.

    A value moves `seconds` later, but not past its cap (where a renewal at the
    round's instant would put it), and never back: in SQL, rows whose value is below
    the cap get ``min(value + seconds, cap)``.
    """

    seconds: float
    """The silence forgiven."""
    heartbeat_cap: float
    """The latest a worker's last heartbeat may move to: the round's instant."""
    lease_cap: float
    """The latest a lease may move to: the round's instant plus one lease."""

    def heartbeat(self, at: float) -> float:
        """Where a last heartbeat at `at` moves."""
        return _moved(at, self.seconds, self.heartbeat_cap)

    def lease(self, expires_at: float) -> float:
        """Where a lease expiring at `expires_at` moves."""
        return _moved(expires_at, self.seconds, self.lease_cap)


def _moved(value: float, seconds: float, cap: float) -> float:
    if value >= cap:
        return value
    return min(value + seconds, cap)


@dataclass(frozen=True)
class SilenceRule:
    """When a gap between reaper rounds is the server's own silence, from its settings."""

    reap_interval: float
    """Seconds each API process's reaper sleeps between rounds."""
    lease_seconds: float
    """How long a lease lasts without a heartbeat."""

    @property
    def tolerance(self) -> float:
        """The longest gap between rounds that is not the server's own silence.

        Half a lease: a worker beats every third of a lease and, while the server does
        not answer, tries again at least every sixth, so after a shorter silence it
        renews its leases in time anyway; a longer tolerance would let such a silence
        cost a lease. At least two reap intervals, so that a round the load made late
        is not taken for an outage.
        """
        return max(2 * self.reap_interval, self.lease_seconds / 2)

    def forgive(self, now: float, last_round: float | None) -> Forgiveness | None:
        """What a reaper round at `now` forgives, given the last round's instant.

        None when there was no round before, when the last one is recent enough, or
        when it lies ahead (the clock stepped back: that only lengthens leases). The
        silence forgiven is the whole gap.
        """
        if last_round is None:
            return None
        gap = now - last_round
        if gap <= self.tolerance:
            return None
        return Forgiveness(seconds=gap, heartbeat_cap=now, lease_cap=now + self.lease_seconds)

    def mark(self, started: float, ended: float) -> float:
        """The instant a round that ran from `started` to `ended` leaves for the next one.

        Its end, so that a round the load made long is not taken for a silence; but its
        start when it lasted longer than the tolerance. Then either the clock stepped
        forward while it ran (it reaped by its starting instant, so the next round must
        forgive the step) or it held the database that long (SQLite's writers, and so
        every heartbeat, waited for it): a silence either way.
        """
        return ended if ended - started <= self.tolerance else started

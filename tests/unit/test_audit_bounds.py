"""`FailureAudit`: failed authentications reach the audit log bounded (issue 11)."""

from __future__ import annotations

from oprun.domain.audit import AuditEntry
from oprun.domain.errors import Unavailable
from oprun.service.audit import FailureAudit


class Recorded:
    """Stands in for the store's `record_audit`: keeps what it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.rows: list[AuditEntry] = []
        self.fail = fail

    def record_audit(self, entry: AuditEntry) -> None:
        if self.fail:
            raise Unavailable("the database is away")
        self.rows.append(entry)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _audit(rows: Recorded, clock: Clock, **kw) -> FailureAudit:
    return FailureAudit(rows, clock, **kw)  # type: ignore[arg-type]


def test_one_row_per_address_per_second_counting_the_rest() -> None:
    rows, clock = Recorded(), Clock()
    audit = _audit(rows, clock)
    for _ in range(48):
        audit.failed("203.0.113.9", "unknown", request_id="r")
        clock.now += 1 / 16  # 48 failures over 3 s
    assert len(rows.rows) == 3
    assert [r.details["unrecorded"] for r in rows.rows] == [0, 15, 15]
    assert all(r.client == "203.0.113.9" and r.project_id is None for r in rows.rows)


def test_addresses_are_counted_apart_and_capped_in_all() -> None:
    rows, clock = Recorded(), Clock()
    audit = _audit(rows, clock, per_second=5)
    for i in range(100):  # 100 addresses in the same instant: 5 rows
        audit.failed(f"198.51.100.{i}", "unknown")
    assert len(rows.rows) == 5
    clock.now += 1.0
    audit.failed("198.51.100.50", "unknown")  # left out a second ago: its count comes along
    assert len(rows.rows) == 6 and rows.rows[-1].details["unrecorded"] == 1


def test_memory_is_bounded_and_a_failed_write_is_not_raised() -> None:
    rows, clock = Recorded(fail=True), Clock()
    audit = _audit(rows, clock, max_clients=10)
    for i in range(1000):
        audit.failed(f"192.0.2.{i % 256}.{i}", "expired", via="sign-in")  # never raises
    assert len(audit._clients) == 10

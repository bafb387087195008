"""The store over SQLAlchemy: every query module composed over one base.

Each query module is a mixin on `StoreBase` (its transactions and clock) and
shares helpers by importing functions, so their order here carries no meaning.
The backends (`sqlite.py`, `postgres.py`) only override the base's hooks.
"""

from __future__ import annotations

from oprun.store.audit import AuditQueries
from oprun.store.claims import ClaimQueries
from oprun.store.deadlines import DeadlineQueries
from oprun.store.invocations import InvocationQueries
from oprun.store.leases import LeaseQueries
from oprun.store.reads import ReadQueries
from oprun.store.reports import ReportQueries
from oprun.store.retention import RetentionQueries
from oprun.store.sessions import SessionQueries
from oprun.store.stats import StatsQueries
from oprun.store.tenancy import TenancyQueries
from oprun.store.tokens import TokenQueries


class SqlStore(
    TenancyQueries,
    TokenQueries,
    InvocationQueries,
    ClaimQueries,
    LeaseQueries,
    ReportQueries,
    SessionQueries,
    DeadlineQueries,
    ReadQueries,
    RetentionQueries,
    StatsQueries,
    AuditQueries,
):
    """Every store query over one engine; a backend supplies the engine and hooks."""

"""The audit log: what use cases record, who may read it, and failed authentications, bounded.

A change records its row in its own transaction: the use case passes the store an
`AuditEntry` made by `entry` (the caller's token, address and request id). Failed
authentications change nothing, so `FailureAudit` writes their rows on their own, at
most one per client address per second and `MAX_ROWS_PER_SECOND` in all per API
process; each row counts the failures it stands for (`details.unrecorded`: those from
the address since its last row that got none), so a flood of bad tokens costs a
bounded number of writes and still shows its size.

Who reads it: admins of a project read their project's rows; admins of the server's
first project (the one bootstrapped) also read the server's own rows (project null),
the rule `/metrics` follows. Rows are never purged with operations.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from oprun.domain.audit import AuditEntry, AuditKind, AuditRecord
from oprun.domain.errors import ValidationError
from oprun.domain.models import Page, Token
from oprun.domain.roles import Permission
from oprun.service import cursor
from oprun.service.throttle import OncePer
from oprun.store import Store

if TYPE_CHECKING:
    from oprun.service.auth import Principal

log = logging.getLogger("oprun.audit")

RECORD_EVERY = 1.0
"""Seconds between two `auth.failed` rows about one client address (per API process)."""
MAX_ROWS_PER_SECOND = 20
"""`auth.failed` rows one API process writes per second at most, whatever the addresses."""
MAX_CLIENTS = 10_000
"""Addresses remembered at once; past it the one recorded longest ago is forgotten."""
KINDS = tuple(kind.value for kind in AuditKind)


def entry(principal: Principal, kind: AuditKind) -> AuditEntry:
    """An audit entry of `kind` by the caller, in its project, from its request."""
    return AuditEntry(
        kind=kind,
        project_id=principal.project_id,
        actor_id=principal.token_id,
        actor_name=principal.name,
        actor_role=principal.role,
        client=principal.client,
        request_id=principal.request_id,
    )


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # a time without a zone is UTC
    return value.timestamp()


class AuditService:
    """Reading the audit log."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._first: str | None = None
        """The server's first project's id, once known (it never changes)."""

    def sees_server_rows(self, principal: Principal) -> bool:
        """Whether `principal` (an admin) also reads the server's own rows (project null)."""
        if self._first is None:
            self._first = self._store.first_project().id
        return principal.project_id == self._first

    def page(
        self,
        principal: Principal,
        page_cursor: str | None = None,
        limit: int | None = None,
        *,
        kind: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page[AuditRecord]:
        """A page of the audit log the caller may read, newest first (admins only).

        `kind` (one of `KINDS`) and `actor` (a token id) match exactly; `since`
        (inclusive) and `until` (exclusive) bound when it happened.
        """
        principal.require(Permission.MANAGE)
        if kind is not None and kind not in KINDS:
            raise ValidationError(
                f"kind must be one of {', '.join(KINDS)}, got {kind!r}", field="kind"
            )
        server_level = self.sees_server_rows(principal)
        start, end = _epoch(since), _epoch(until)

        def fetch(before: Any, size: int) -> list[AuditRecord]:
            return self._store.list_audit(
                principal.project_id,
                server_level=server_level,
                before=before,
                limit=size,
                kind=kind,
                actor_id=actor,
                since=start,
                until=end,
            )

        return cursor.paged(page_cursor, limit, fetch, key=lambda row: row.id, kind=int)


class FailureAudit:
    """Failed authentications into the audit log, bounded per address and in all; thread-safe.

    Per process, like the throttle (`service/throttle.py`): N API processes write at
    most N rows per address per second.
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        *,
        every: float = RECORD_EVERY,
        per_second: int = MAX_ROWS_PER_SECOND,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._per_second = per_second
        self._lock = threading.Lock()
        self._clients = OncePer(every, max_clients)
        """Per address: when its last row was written, and the failures since left out."""
        self._second = (0.0, 0)
        """The current one-second window of all addresses: its start, rows written in it."""

    def failed(
        self,
        client: str | None,
        reason: str,
        *,
        request_id: str | None = None,
        via: str = "bearer",
        token: Token | None = None,
        throttled: bool = False,
    ) -> None:
        """Count a failed authentication from `client`; record it unless over the bounds.

        `token` is the token the secret matched, when it matched one (an expired
        token): the row then belongs to its project and names it as the subject. The
        secret itself is never recorded. A failure to write is logged, never raised:
        the caller's 401 or 429 must not become a 503.
        """
        now = self._clock()
        key = client or ""
        with self._lock:
            start, written = self._second
            if now - start >= 1.0:
                start, written = now, 0
            left_out = self._clients.admit(key, now, room=written < self._per_second)
            if left_out is None:
                return
            self._second = (start, written + 1)
        row = AuditEntry(
            kind=AuditKind.AUTH_FAILED,
            project_id=None if token is None else token.project_id,
            client=client,
            request_id=request_id,
            subject=None if token is None else token.id,
            details={
                "reason": reason,
                "via": via,
                "throttled": throttled,
                "unrecorded": left_out,
            },
        )
        try:
            self._store.record_audit(row)
        except Exception as exc:  # the answer stays 401 or 429 whatever went wrong here
            log.warning(
                "event=audit_write_failed kind=%s client=%s error=%s",
                row.kind.value,
                client,
                type(exc).__name__,
            )

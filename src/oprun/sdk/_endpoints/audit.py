"""Endpoint builder of the audit log. No I/O."""

from __future__ import annotations

from datetime import datetime

from oprun.domain import models
from oprun.domain.audit import AuditKind, AuditRecord
from oprun.domain.errors import ValidationError
from oprun.sdk._endpoints._common import parse_model
from oprun.sdk._requests import Call


def list_audit(
    cursor: str | None,
    limit: int | None,
    *,
    kind: AuditKind | str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Call[models.Page[AuditRecord]]:
    """``GET /v1/audit``: a page of the audit log, newest first (admins only).

    `kind` is checked here (a `ValidationError` naming the kinds); times go as ISO 8601.
    """
    if kind is not None:
        try:
            kind = AuditKind(kind)
        except ValueError:
            kinds = ", ".join(k.value for k in AuditKind)
            raise ValidationError(
                f"kind must be one of {kinds}, got {kind!r}", field="kind"
            ) from None
    return Call(
        "GET",
        "/v1/audit",
        parse_model(models.Page[AuditRecord]),
        params={
            "kind": None if kind is None else kind.value,
            "actor": actor,
            "since": None if since is None else since.isoformat(),
            "until": None if until is None else until.isoformat(),
            "cursor": cursor,
            "limit": limit,
        },
        retry_safe=True,
    )

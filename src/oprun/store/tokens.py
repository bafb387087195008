"""Queries on API tokens: create, look up by secret hash, list, revoke."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from oprun.domain.audit import AuditEntry
from oprun.domain.errors import Conflict, NotFound
from oprun.domain.ids import new_id
from oprun.domain.models import Token
from oprun.domain.roles import Role
from oprun.store import schema as t
from oprun.store.base import StoreBase, at, to_datetime
from oprun.store.notify import tokens_key


def _token(row: Any) -> Token:
    return Token(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        role=Role(row.role),
        created_at=at(row.created_at),
        revoked_at=to_datetime(row.revoked_at),
        expires_at=to_datetime(row.expires_at),
        last_used_at=to_datetime(row.last_used_at),
    )


class TokenQueries(StoreBase):
    """API tokens of every project."""

    def count_admins(self, project_id: str) -> int:
        """How many live admin tokens a project has."""
        with self.read() as conn:
            query = select(func.count()).where(
                t.tokens.c.project_id == project_id,
                t.tokens.c.role == Role.ADMIN.value,
                t.tokens.c.revoked_at.is_(None),
            )
            return int(conn.execute(query).scalar_one())

    def count_tokens(self) -> int:
        """How many tokens exist in all projects (zero on a fresh database)."""
        with self.read() as conn:
            return int(conn.execute(select(func.count()).select_from(t.tokens)).scalar_one())

    def create_token(
        self,
        project_id: str,
        name: str,
        role: Role,
        secret_hash: str,
        expires_in: float | None = None,
        *,
        audit: AuditEntry | None = None,
    ) -> Token:
        """Store a token by the hash of its secret, expiring `expires_in` seconds from now.

        With `audit`, the row (naming the new token) is written in the same transaction.
        """
        with self.write() as tx:
            tid = new_id("token")
            expires_at = None if expires_in is None else tx.now + expires_in
            try:
                tx.conn.execute(
                    insert(t.tokens).values(
                        id=tid,
                        project_id=project_id,
                        name=name,
                        role=role.value,
                        secret_hash=secret_hash,
                        created_at=tx.now,
                        expires_at=expires_at,
                    )
                )
            except IntegrityError as exc:
                raise Conflict("a token with this secret already exists") from exc
            if audit is not None:
                tx.audit(
                    audit.about(
                        tid,
                        project_id,
                        name=name,
                        role=role.value,
                        expires_at=expires_at,
                    )
                )
            return Token(
                id=tid,
                project_id=project_id,
                name=name,
                role=role,
                created_at=at(tx.now),
                expires_at=to_datetime(expires_at),
            )

    def token_by_hash(self, secret_hash: str) -> Token | None:
        """The live token whose secret hashes to `secret_hash`."""
        with self.read() as conn:
            row = conn.execute(
                select(t.tokens).where(
                    t.tokens.c.secret_hash == secret_hash, t.tokens.c.revoked_at.is_(None)
                )
            ).first()
        return None if row is None else _token(row)

    def rotate_token(
        self,
        project_id: str,
        token_id: str,
        secret_hash: str,
        *,
        audit: AuditEntry | None = None,
    ) -> Token:
        """Replace a live token by a new one (same name, role and expiry) and revoke it.

        With `audit`, the row (naming both tokens) is written in the same transaction.
        """
        with self.write() as tx:
            old = tx.conn.execute(
                select(t.tokens)
                .where(
                    t.tokens.c.id == token_id,
                    t.tokens.c.project_id == project_id,
                    t.tokens.c.revoked_at.is_(None),
                )
                .with_for_update()
            ).first()
            if old is None:
                raise NotFound(f"no live token {token_id}", id=token_id)
            tid = new_id("token")
            tx.conn.execute(
                insert(t.tokens).values(
                    id=tid,
                    project_id=project_id,
                    name=old.name,
                    role=old.role,
                    secret_hash=secret_hash,
                    created_at=tx.now,
                    expires_at=old.expires_at,
                )
            )
            tx.conn.execute(
                update(t.tokens).where(t.tokens.c.id == token_id).values(revoked_at=tx.now)
            )
            tx.keys.add(tokens_key())  # every process drops its cached tokens at commit
            if audit is not None:
                tx.audit(audit.about(token_id, name=old.name, role=old.role, successor=tid))
            return _token(tx.conn.execute(select(t.tokens).where(t.tokens.c.id == tid)).one())

    def touch_token(self, token_id: str, every: float) -> None:
        """Set a token's `last_used_at` to now, unless it was set less than `every` s ago."""
        with self.write() as tx:
            tx.conn.execute(
                update(t.tokens)
                .where(
                    t.tokens.c.id == token_id,
                    (t.tokens.c.last_used_at.is_(None))
                    | (t.tokens.c.last_used_at < tx.now - every),
                )
                .values(last_used_at=tx.now)
            )

    def list_tokens(
        self, project_id: str, *, after: str | None = None, limit: int = 50
    ) -> list[Token]:
        """Up to `limit` tokens of a project, oldest first, newer than the id `after`."""
        query = (
            select(t.tokens)
            .where(t.tokens.c.project_id == project_id)
            .order_by(t.tokens.c.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(t.tokens.c.id > after)
        with self.read() as conn:
            rows = conn.execute(query).all()
        return [_token(r) for r in rows]

    def revoke_token(
        self, project_id: str, token_id: str, *, audit: AuditEntry | None = None
    ) -> Token:
        """Revoke a token of the project; Conflict for its last live admin token.

        With `audit`, a revocation that happened is recorded in the same transaction.
        """
        with self.write() as tx:
            # Lock the live admin tokens: two admins revoking each other at once cannot
            # both see the other as the one left.
            admins = (
                tx.conn.execute(
                    select(t.tokens.c.id)
                    .where(
                        t.tokens.c.project_id == project_id,
                        t.tokens.c.role == Role.ADMIN.value,
                        t.tokens.c.revoked_at.is_(None),
                    )
                    .with_for_update()
                )
                .scalars()
                .all()
            )
            if list(admins) == [token_id]:
                raise Conflict(
                    "this is the project's last admin token: create another admin token "
                    "before revoking it",
                    id=token_id,
                    reason="last_admin",
                )
            revoked = tx.conn.execute(
                update(t.tokens)
                .where(
                    t.tokens.c.id == token_id,
                    t.tokens.c.project_id == project_id,
                    t.tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=tx.now)
            ).rowcount
            tx.keys.add(tokens_key())  # every process drops its cached tokens at commit
            row = tx.conn.execute(
                select(t.tokens).where(
                    t.tokens.c.id == token_id, t.tokens.c.project_id == project_id
                )
            ).first()
            if audit is not None and revoked and row is not None:
                tx.audit(audit.about(token_id, name=row.name, role=row.role))
        if row is None:
            raise NotFound(f"no token {token_id}", id=token_id)
        return _token(row)

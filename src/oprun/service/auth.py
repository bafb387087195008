"""Who is calling, and may they: tokens, roles and the first admin token."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from oprun.domain.audit import AuditEntry, AuditKind
from oprun.domain.errors import AccessDenied, AuthenticationError, Throttled, ValidationError
from oprun.domain.models import Page, Project, Token
from oprun.domain.roles import Permission, Role
from oprun.domain.throttle import FailureRule, retry_after_header
from oprun.service import cursor
from oprun.service.audit import FailureAudit, entry
from oprun.service.throttle import FailureThrottle
from oprun.store import Store
from oprun.store.notify import tokens_key

log = logging.getLogger("oprun.auth")
TOKEN_PREFIX = "oprun_"
LAST_USED_EVERY = 60.0
"""Seconds between two writes of a token's `last_used_at`."""
REVOKE_ECHO_SECONDS = 2.0
"""How long a revocation waits for its NOTIFY to come back before it answers."""
KNOWN_FOR = 3600.0
"""How long a token that authenticated here stays known, so a throttled address can use it."""
DEFAULT_RULE = FailureRule(limit=20, window=60.0)


def hash_secret(secret: str) -> str:
    """The stored form of a token secret (tokens have 256 random bits: no slow hash needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh token secret."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """The caller: a token's id, name, project and role; and where this request came from."""

    token_id: str
    name: str
    project_id: str
    role: Role
    client: str | None = None
    """The request's client address (the connection's peer), for the audit log."""
    request_id: str | None = None
    """The request's `X-Request-ID`, for the audit log."""

    def calling(self, client: str | None, request_id: str | None) -> Principal:
        """The same token, calling from `client` in the request `request_id`."""
        return replace(self, client=client, request_id=request_id)

    def require(self, permission: Permission) -> None:
        """Raise `AccessDenied` unless the role allows `permission`."""
        if not self.role.allows(permission):
            raise AccessDenied(
                f"role {self.role.value!r} may not {permission.value}",
                role=self.role.value,
                needs=permission.value,
            )


class TokenExpired(AuthenticationError):
    """The token has expired (a 401; the token is kept for the audit log, never sent)."""

    def __init__(self, token: Token) -> None:
        expired = token.expires_at.isoformat() if token.expires_at else ""
        super().__init__(f"token expired at {expired}", expired_at=expired)
        self.token = token


class Authenticator:
    """Checks bearer secrets against the store, with a short cache.

    A revocation anywhere publishes `tokens_key()`: every process (PostgreSQL NOTIFY
    reaches all of them) drops its whole cache when it arrives. While this process may
    miss keys (its listener is reconnecting) the cache is not used at all.

    Failed authentications are counted per client address (`FailureThrottle`): past the
    rule's limit, the address is answered 429 `THROTTLED` with `Retry-After` instead of
    401. While throttled, a token this process has seen authenticate in the last
    `KNOWN_FOR` seconds is still checked as usual (so one bad script does not lock out
    everyone behind the same NAT); any other token is refused with one SHA-256 and no
    database lookup.
    """

    def __init__(
        self,
        store: Store,
        cache_seconds: float,
        failures: FailureRule = DEFAULT_RULE,
        audit: FailureAudit | None = None,
    ) -> None:
        self._store = store
        self._ttl = cache_seconds
        self.throttle = FailureThrottle(failures)
        self.audit = audit or FailureAudit(store, time.monotonic)
        """Where failed authentications are recorded (bounded) in the audit log."""
        self._known: dict[str, float] = {}
        """Digests of tokens that authenticated here, and until when they count as known."""
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._generation = 0
        """Bumped by every flush; a lookup that raced a flush is not cached."""
        self._flushed = threading.Condition()
        self._touched: dict[str, float] = {}
        store.notifier.subscribe(tokens_key(), self.forget)

    def authenticate(
        self,
        secret: str | None,
        client: str | None = None,
        *,
        request_id: str | None = None,
        via: str = "bearer",
    ) -> Principal:
        """The principal of a bearer secret, or `AuthenticationError`.

        With `client` (the caller's address) a wrong secret counts against it, and a
        throttled address gets `Throttled` instead (see the class). A missing secret
        is not a failure: it guesses nothing (a browser before sign-in sends none).
        With `client`, a failure is also recorded in the audit log (`FailureAudit`,
        bounded), with `request_id` and `via` (`bearer`, `session` or `sign-in`).
        """
        if not secret:
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = hash_secret(secret)
        now = time.monotonic()
        if client is None:
            return self._check(digest, now)
        wait = self.throttle.retry_after(client, now)
        if wait is not None:
            with self._flushed:
                known = self._known.get(digest, 0.0) > now
            if not known:
                after = self.throttle.fail(client, "unknown", now)
                self.audit.failed(client, "unknown", request_id=request_id, via=via, throttled=True)
                raise self._throttled(after or wait)
        try:
            principal = self._check(digest, now)
        except AuthenticationError as exc:
            reason = "expired" if "expired_at" in exc.details else "unknown"
            after = self.throttle.fail(client, reason, now)
            self._audit_failure(exc, client, request_id, via, throttled=wait is not None)
            if wait is not None:
                raise self._throttled(after or wait) from None
            raise
        with self._flushed:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[digest] = now + KNOWN_FOR
        return principal

    def known(self, secret: str | None, client: str | None) -> Principal | None:
        """The principal of a secret this process knows, without a database call.

        None when answering needs more than memory: the secret is not cached (or
        the cache cannot be trusted now), its `last_used_at` is due, or `client` is
        being throttled. Ask `authenticate` then; it gives the same answer otherwise.
        """
        if not secret or not self._store.notifier.hears_everything:
            return None
        digest = hash_secret(secret)
        now = time.monotonic()
        if client is not None and self.throttle.retry_after(client, now) is not None:
            return None
        with self._flushed:
            hit = self._cache.get(digest)
            if hit is None or hit[0] <= now:
                return None
            principal = hit[1]
            if now - self._touched.get(principal.token_id, -LAST_USED_EVERY) >= LAST_USED_EVERY:
                return None
            if client is not None:
                self._known[digest] = now + KNOWN_FOR
        return principal

    def _audit_failure(
        self,
        exc: AuthenticationError,
        client: str | None,
        request_id: str | None,
        via: str,
        *,
        throttled: bool,
    ) -> None:
        token = exc.token if isinstance(exc, TokenExpired) else None
        self.audit.failed(
            client,
            "unknown" if token is None else "expired",
            request_id=request_id,
            via=via,
            token=token,
            throttled=throttled,
        )

    @staticmethod
    def _throttled(wait: float) -> Throttled:
        seconds = retry_after_header(wait)
        return Throttled(
            f"too many failed authentications from this address: retry in {seconds} s",
            retry_after=seconds,
        )

    def _check(self, digest: str, now: float) -> Principal:
        """The principal of a secret's digest (cache, else the store), or 401."""
        trusted = self._store.notifier.hears_everything
        with self._flushed:
            hit = self._cache.get(digest) if trusted else None
            generation = self._generation
        if hit is not None and hit[0] > now:
            self._touch(hit[1].token_id, now)
            return hit[1]
        token = self._store.token_by_hash(digest)
        if token is None:
            raise AuthenticationError("invalid or revoked token")
        keep = self._ttl
        if token.expires_at is not None:
            left = token.expires_at.timestamp() - self._store.now()  # the database's clock
            if left <= 0:
                raise TokenExpired(token)
            keep = min(keep, left)
        principal = Principal(token.id, token.name, token.project_id, token.role)
        with self._flushed:
            if len(self._cache) > 10_000:
                self._cache.clear()
            if trusted and generation == self._generation:
                self._cache[digest] = (now + keep, principal)
        self._touch(principal.token_id, now)
        return principal

    def _touch(self, token_id: str, now: float) -> None:
        # last_used_at is written at most once a minute per token and process (and the
        # store skips it when another process wrote it in the last minute).
        with self._flushed:
            if now - self._touched.get(token_id, -LAST_USED_EVERY) < LAST_USED_EVERY:
                return
            if len(self._touched) > 10_000:
                self._touched.clear()
            self._touched[token_id] = now
        self._store.touch_token(token_id, LAST_USED_EVERY)

    def generation(self) -> int:
        """How many flushes this process has seen (pass it to `wait_flush`)."""
        with self._flushed:
            return self._generation

    def forget(self) -> None:
        """Drop cached tokens (a token was revoked, here or in another process)."""
        with self._flushed:
            self._cache.clear()
            self._generation += 1
            self._flushed.notify_all()

    def wait_flush(self, since: int, timeout: float) -> bool:
        """Wait until a flush after generation `since` arrives; False on timeout."""
        with self._flushed:
            return self._flushed.wait_for(lambda: self._generation > since, timeout)


class TokenService:
    """Tokens and projects."""

    def __init__(self, store: Store, authenticator: Authenticator) -> None:
        self._store = store
        self._auth = authenticator

    def create(
        self, principal: Principal, name: str, role: Role, expires_in: float | None = None
    ) -> tuple[Token, str]:
        """A new token in the caller's project; returns it with its secret (shown once).

        With `expires_in` (seconds) it answers 401 "expired" after that.
        """
        principal.require(Permission.MANAGE)
        if not name.strip():
            raise ValidationError("token name must not be empty", field="name")
        secret = new_secret()
        token = self._store.create_token(
            principal.project_id,
            name,
            role,
            hash_secret(secret),
            expires_in,
            audit=entry(principal, AuditKind.TOKEN_CREATED),
        )
        return token, secret

    def page(
        self, principal: Principal, page_cursor: str | None = None, limit: int | None = None
    ) -> Page[Token]:
        """A page of the caller's project's tokens, oldest first (revoked ones included)."""
        principal.require(Permission.MANAGE)

        def fetch(after: Any, size: int) -> list[Token]:
            return self._store.list_tokens(principal.project_id, after=after, limit=size)

        return cursor.paged(page_cursor, limit, fetch, key=lambda token: token.id)

    def revoke(self, principal: Principal, token_id: str) -> Token:
        """Revoke a token of the caller's project."""
        principal.require(Permission.MANAGE)
        before = self._auth.generation()
        token = self._store.revoke_token(
            principal.project_id, token_id, audit=entry(principal, AuditKind.TOKEN_REVOKED)
        )
        # The revocation's own NOTIFY coming back shows the database has handed it to
        # every listening process; answer after that (bounded: a listener that is away
        # does not use its cache anyway).
        if not self._auth.wait_flush(before, REVOKE_ECHO_SECONDS):
            self._auth.forget()
        return token

    def rotate(self, principal: Principal, token_id: str) -> tuple[Token, str]:
        """A new secret for a token: its successor (same name, role, expiry) and its secret.

        The old token is revoked in the same transaction, everywhere before this answers.
        """
        principal.require(Permission.MANAGE)
        before = self._auth.generation()
        secret = new_secret()
        token = self._store.rotate_token(
            principal.project_id,
            token_id,
            hash_secret(secret),
            audit=entry(principal, AuditKind.TOKEN_ROTATED),
        )
        if not self._auth.wait_flush(before, REVOKE_ECHO_SECONDS):
            self._auth.forget()
        return token, secret

    def current_project(self, principal: Principal) -> Project:
        """The caller's project."""
        return self._store.get_project(principal.project_id)

    def create_project(self, principal: Principal, name: str) -> tuple[Project, str]:
        """A new project and the secret of its first admin token.

        Only admins of the server's first project (the one bootstrapped) may: an admin of
        any other project administers that project, not the server.
        """
        principal.require(Permission.MANAGE)
        if principal.project_id != self._store.first_project().id:
            raise AccessDenied(
                "only admin tokens of the server's first project may create projects",
                role=principal.role.value,
                needs="server admin",
            )
        if not name.strip():
            raise ValidationError("project name must not be empty", field="name")
        created = entry(principal, AuditKind.PROJECT_CREATED)
        project = self._store.create_project(name, audit=created)
        secret = new_secret()
        self._store.create_token(
            project.id,
            "admin",
            Role.ADMIN,
            hash_secret(secret),
            audit=created.as_kind(AuditKind.TOKEN_CREATED).about(
                None, project.id, via="project.created"
            ),
        )
        return project, secret


def bootstrap(store: Store, secret: str | None) -> tuple[Project, str] | None:
    """On an empty database, create the `default` project and its first admin token.

    Uses `secret` (`OPRUN_BOOTSTRAP_TOKEN`) when given. On a database with tokens, an
    unknown `secret` becomes an admin of the first project only if that project has no
    live admin token; otherwise it is ignored with a warning. Returns the project and the
    secret when it created a token, None otherwise.
    """
    if store.count_tokens():
        if secret and store.token_by_hash(hash_secret(secret)) is None:
            project = store.first_project()
            if store.count_admins(project.id):
                # Never add an admin silently: a stale or leaked variable in one host's
                # environment would otherwise grant a new admin at every restart. Not an
                # error either, so a stale variable cannot keep every API process down.
                log.warning(
                    "event=bootstrap_ignored reason=%r",
                    "OPRUN_BOOTSTRAP_TOKEN matches no token and the first project has "
                    "admins: ignored (create admin tokens with `oprun tokens create`)",
                )
                return None
            # The first project has no admin left (an older server let it revoke itself):
            # the bootstrap secret is how an operator takes it back.
            store.create_token(
                project.id,
                "bootstrap",
                Role.ADMIN,
                hash_secret(secret),
                audit=_BOOTSTRAP.about(None, project.id),
            )
            return project, secret
        return None
    project = store.create_project(
        "default", audit=AuditEntry(AuditKind.PROJECT_CREATED, None, details={"via": "bootstrap"})
    )
    secret = secret or new_secret()
    store.create_token(
        project.id,
        "admin",
        Role.ADMIN,
        hash_secret(secret),
        audit=_BOOTSTRAP.about(None, project.id),
    )
    return project, secret


_BOOTSTRAP = AuditEntry(AuditKind.TOKEN_CREATED, None, details={"via": "bootstrap"})
"""The server's own start made it: no actor, no request."""

"""Who is calling, and may they: tokens, roles and the first admin token."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from oprun.domain.errors import AccessDenied, AuthenticationError, ValidationError
from oprun.domain.models import Project, Token
from oprun.domain.roles import Permission, Role
from oprun.store import Store
from oprun.store.notify import tokens_key

TOKEN_PREFIX = "oprun_"
REVOKE_ECHO_SECONDS = 2.0
"""How long a revocation waits for its NOTIFY to come back before it answers."""


def hash_secret(secret: str) -> str:
    """The stored form of a token secret (tokens have 256 random bits: no slow hash needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh token secret."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """The caller: a token's id, name, project and role."""

    token_id: str
    name: str
    project_id: str
    role: Role

    def require(self, permission: Permission) -> None:
        """Raise `AccessDenied` unless the role allows `permission`."""
        if not self.role.allows(permission):
            raise AccessDenied(
                f"role {self.role.value!r} may not {permission.value}",
                role=self.role.value,
                needs=permission.value,
            )


class Authenticator:
    """Checks bearer secrets against the store, with a short cache.

    A revocation anywhere publishes `tokens_key()`: every process (PostgreSQL NOTIFY
    reaches all of them) drops its whole cache when it arrives. While this process may
    miss keys (its listener is reconnecting) the cache is not used at all.
    """

    def __init__(self, store: Store, cache_seconds: float) -> None:
        self._store = store
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._generation = 0
        """Bumped by every flush; a lookup that raced a flush is not cached."""
        self._flushed = threading.Condition()
        store.notifier.subscribe(tokens_key(), self.forget)

    def authenticate(self, secret: str | None) -> Principal:
        """The principal of a bearer secret, or `AuthenticationError`."""
        if not secret:
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = hash_secret(secret)
        now = time.monotonic()
        trusted = self._store.notifier.hears_everything
        with self._flushed:
            hit = self._cache.get(digest) if trusted else None
            generation = self._generation
        if hit is not None and hit[0] > now:
            return hit[1]
        token = self._store.token_by_hash(digest)
        if token is None:
            raise AuthenticationError("invalid or revoked token")
        principal = Principal(token.id, token.name, token.project_id, token.role)
        with self._flushed:
            if len(self._cache) > 10_000:
                self._cache.clear()
            if trusted and generation == self._generation:
                self._cache[digest] = (now + self._ttl, principal)
        return principal

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

    def create(self, principal: Principal, name: str, role: Role) -> tuple[Token, str]:
        """A new token in the caller's project; returns it with its secret (shown once)."""
        principal.require(Permission.MANAGE)
        if not name.strip():
            raise ValidationError("token name must not be empty", field="name")
        secret = new_secret()
        token = self._store.create_token(principal.project_id, name, role, hash_secret(secret))
        return token, secret

    def list(self, principal: Principal) -> list[Token]:
        """The tokens of the caller's project."""
        principal.require(Permission.MANAGE)
        return self._store.list_tokens(principal.project_id)

    def revoke(self, principal: Principal, token_id: str) -> Token:
        """Revoke a token of the caller's project."""
        principal.require(Permission.MANAGE)
        before = self._auth.generation()
        token = self._store.revoke_token(principal.project_id, token_id)
        # The revocation's own NOTIFY coming back shows the database has handed it to
        # every listening process; answer after that (bounded: a listener that is away
        # does not use its cache anyway).
        if not self._auth.wait_flush(before, REVOKE_ECHO_SECONDS):
            self._auth.forget()
        return token

    def current_project(self, principal: Principal) -> Project:
        """The caller's project."""
        return self._store.get_project(principal.project_id)

    def create_project(self, principal: Principal, name: str) -> tuple[Project, str]:
        """A new project and the secret of its first admin token."""
        principal.require(Permission.MANAGE)
        if not name.strip():
            raise ValidationError("project name must not be empty", field="name")
        project = self._store.create_project(name)
        secret = new_secret()
        self._store.create_token(project.id, "admin", Role.ADMIN, hash_secret(secret))
        return project, secret


def bootstrap(store: Store, secret: str | None) -> tuple[Project, str] | None:
    """On an empty database, create the `default` project and its first admin token.

    Uses `secret` (`OPRUN_BOOTSTRAP_TOKEN`) when given. Returns the project and the
    secret when it created them, None when tokens already existed.
    """
    if store.count_tokens():
        if secret and store.token_by_hash(hash_secret(secret)) is None:
            # A new bootstrap secret on an existing database joins the first project.
            project = store.first_project()
            store.create_token(project.id, "bootstrap", Role.ADMIN, hash_secret(secret))
            return project, secret
        return None
    project = store.create_project("default")
    secret = secret or new_secret()
    store.create_token(project.id, "admin", Role.ADMIN, hash_secret(secret))
    return project, secret

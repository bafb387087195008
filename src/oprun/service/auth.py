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

TOKEN_PREFIX = "oprun_"


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
    """Checks bearer secrets against the store, with a short cache."""

    def __init__(self, store: Store, cache_seconds: float) -> None:
        self._store = store
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def authenticate(self, secret: str | None) -> Principal:
        """The principal of a bearer secret, or `AuthenticationError`."""
        if not secret:
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = hash_secret(secret)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        token = self._store.token_by_hash(digest)
        if token is None:
            raise AuthenticationError("invalid or revoked token")
        principal = Principal(token.id, token.name, token.project_id, token.role)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        return principal

    def forget(self) -> None:
        """Drop cached tokens (after a revocation in this process)."""
        with self._lock:
            self._cache.clear()


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
        token = self._store.revoke_token(principal.project_id, token_id)
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

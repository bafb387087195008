"""Token lifecycle rules in the service: the last admin, bootstrap, projects, revocation."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from oprun.cli.tokens import duration_seconds
from oprun.domain.errors import AccessDenied, AuthenticationError, Conflict, NotFound
from oprun.domain.models import Token
from oprun.domain.roles import Role
from oprun.sdk import _endpoints as E
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap, hash_secret
from oprun.store import Store, open_store

ADMIN = "oprun_token_rules_unit_admin"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'oprun.db'}")
    bootstrap(opened, ADMIN)
    yield opened
    opened.close()


@pytest.fixture
def services(store: Store, tmp_path: Path) -> Services:
    url = f"sqlite:///{tmp_path / 'oprun.db'}"
    return Services.build(store, Settings(database_url=url, bootstrap_token=ADMIN))


def test_the_last_admin_token_cannot_be_revoked(services: Services) -> None:
    admin = services.auth.authenticate(ADMIN)
    with pytest.raises(Conflict, match="last admin") as refused:
        services.tokens.revoke(admin, admin.token_id)
    assert refused.value.details["reason"] == "last_admin"
    other, secret = services.tokens.create(admin, "second", Role.ADMIN)
    services.tokens.revoke(admin, admin.token_id)  # another admin is left: allowed
    second = services.auth.authenticate(secret)
    with pytest.raises(Conflict):
        services.tokens.revoke(second, other.id)
    viewer, _ = services.tokens.create(second, "v", Role.VIEWER)
    services.tokens.revoke(second, viewer.id)  # non-admin tokens go as before


def test_a_revoked_token_is_refused_at_once_though_it_was_cached(services: Services) -> None:
    admin = services.auth.authenticate(ADMIN)
    token, secret = services.tokens.create(admin, "ops", Role.OPERATOR)
    services.auth.authenticate(secret)  # cached now
    services.tokens.revoke(admin, token.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        services.auth.authenticate(secret)


def test_an_unknown_bootstrap_token_on_a_database_with_admins_is_ignored_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="oprun.auth")
    assert bootstrap(store, "oprun_another_secret") is None
    assert store.token_by_hash(hash_secret("oprun_another_secret")) is None
    assert "bootstrap_ignored" in caplog.text
    assert bootstrap(store, ADMIN) is None  # the known one: nothing to do, no warning
    assert caplog.text.count("bootstrap_ignored") == 1


def test_only_admins_of_the_first_project_create_projects(services: Services) -> None:
    root = services.auth.authenticate(ADMIN)
    project, secret = services.tokens.create_project(root, "team")
    tenant_admin = services.auth.authenticate(secret)
    assert tenant_admin.project_id == project.id
    with pytest.raises(AccessDenied, match="first project"):
        services.tokens.create_project(tenant_admin, "another")
    _, op_secret = services.tokens.create(root, "ops", Role.OPERATOR)
    with pytest.raises(AccessDenied):
        services.tokens.create_project(services.auth.authenticate(op_secret), "x")


def test_an_expired_token_answers_unauthenticated_saying_expired(services: Services) -> None:
    admin = services.auth.authenticate(ADMIN)
    token, secret = services.tokens.create(admin, "short", Role.VIEWER, expires_in=0.5)
    assert token.expires_at is not None and token.expires_at > token.created_at
    services.auth.authenticate(secret)  # cached, but not past its expiry
    time.sleep(0.6)
    with pytest.raises(AuthenticationError, match="expired") as expired:
        services.auth.authenticate(secret)
    assert expired.value.details["expired_at"] == token.expires_at.isoformat()
    lasting, _ = services.tokens.create(admin, "lasting", Role.VIEWER)
    assert lasting.expires_at is None


def test_last_used_is_written_once_a_minute_at_most(services: Services, store: Store) -> None:
    admin = services.auth.authenticate(ADMIN)
    token, secret = services.tokens.create(admin, "ops", Role.OPERATOR)
    assert _token(store, token.id).last_used_at is None
    services.auth.authenticate(secret)
    first = _token(store, token.id).last_used_at
    assert first is not None
    services.auth.forget()  # a cache miss too: still no second write within the minute
    services.auth.authenticate(secret)
    assert _token(store, token.id).last_used_at == first


def _token(store: Store, token_id: str) -> Token:
    return next(t for t in store.list_tokens(store.first_project().id) if t.id == token_id)


def test_expires_in_reads_seconds_and_units() -> None:
    assert duration_seconds("3600") == 3600
    assert duration_seconds("90d") == 90 * 86400
    assert duration_seconds("12h") == 43200 and duration_seconds("30m") == 1800
    for bad in ("", "0", "-5m", "soon", "inf", "3w"):
        with pytest.raises(typer.BadParameter):
            duration_seconds(bad)


def test_the_sdk_sends_action_digest_only_when_set() -> None:
    plain = E.invoke(E.invocation("resize", {"width": 3}))
    assert plain.json is not None and "action_digest" not in plain.json
    pinned = E.invoke(E.invocation("resize", action_digest="sha256:abc"))
    assert pinned.json is not None and pinned.json["action_digest"] == "sha256:abc"
    bulk = E.invoke_many([E.invocation("resize"), E.invocation("r", action_digest="sha256:1")])
    assert bulk.json is not None
    assert [("action_digest" in i) for i in bulk.json["invocations"]] == [False, True]


def test_the_token_cache_is_not_used_while_the_process_may_miss_revocations(
    services: Services, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = []
    real = store.token_by_hash
    monkeypatch.setattr(store, "token_by_hash", lambda digest: lookups.append(1) or real(digest))
    services.auth.forget()
    services.auth.authenticate(ADMIN)
    services.auth.authenticate(ADMIN)
    assert len(lookups) == 1  # cached
    # A PostgreSQL listener that lost its connection would not hear a revocation.
    monkeypatch.setattr(type(store.notifier), "hears_everything", property(lambda _: False))
    services.auth.authenticate(ADMIN)
    services.auth.authenticate(ADMIN)
    assert len(lookups) == 3


def test_rotation_replaces_a_token_with_the_same_name_role_and_expiry(services: Services) -> None:
    admin = services.auth.authenticate(ADMIN)
    old, old_secret = services.tokens.create(admin, "ci", Role.OPERATOR, expires_in=3600)
    services.auth.authenticate(old_secret)  # cached
    new, new_secret = services.tokens.rotate(admin, old.id)
    assert (new.name, new.role, new.expires_at) == (old.name, old.role, old.expires_at)
    assert new.id != old.id and new_secret != old_secret
    with pytest.raises(AuthenticationError):
        services.auth.authenticate(old_secret)
    assert services.auth.authenticate(new_secret).token_id == new.id
    with pytest.raises(NotFound):
        services.tokens.rotate(admin, old.id)  # revoked: nothing to rotate
    # Rotating the only admin token leaves an admin: allowed.
    rotated, secret = services.tokens.rotate(admin, admin.token_id)
    assert services.auth.authenticate(secret).role is Role.ADMIN and rotated.role is Role.ADMIN

"""Token revocation reaches every API process before the revoking request answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from oprun.testing import Server


@pytest.fixture
def two_servers(postgres_url, tmp_path) -> Iterator[tuple[Server, Server]]:
    """Two API processes over one PostgreSQL database (the same bootstrap admin)."""
    a = Server(database_url=postgres_url, log_path=tmp_path / "a.log").start()
    b = Server(database_url=postgres_url, token=a.token, log_path=tmp_path / "b.log").start()
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_token_revoked_on_one_process_is_refused_at_once_on_another(two_servers) -> None:
    a, b = two_servers
    for attempt in range(5):  # a few rounds: a race would show in one of them
        made = httpx.post(
            f"{a.url}/v1/tokens",
            json={"name": f"ops{attempt}", "role": "admin"},
            headers=_auth(a.token),
        )
        assert made.status_code == 201, made.text
        secret, token_id = made.json()["secret"], made.json()["token"]["id"]
        # Warm B's cache with the token, then revoke it on A.
        for _ in range(3):
            assert httpx.get(f"{b.url}/v1/tokens", headers=_auth(secret)).status_code == 200
        revoked = httpx.delete(f"{a.url}/v1/tokens/{token_id}", headers=_auth(a.token))
        assert revoked.status_code == 200, revoked.text
        # At once, on B: no read, and above all no new admin token minted with it.
        minted = httpx.post(
            f"{b.url}/v1/tokens", json={"name": "sneaky", "role": "admin"}, headers=_auth(secret)
        )
        assert minted.status_code == 401, minted.text
        assert httpx.get(f"{b.url}/v1/tokens", headers=_auth(secret)).status_code == 401


def test_a_token_rotated_on_one_process_is_refused_at_once_on_another(two_servers) -> None:
    a, b = two_servers
    made = httpx.post(
        f"{a.url}/v1/tokens", json={"name": "ci", "role": "operator"}, headers=_auth(a.token)
    )
    assert made.status_code == 201, made.text
    old, token_id = made.json()["secret"], made.json()["token"]["id"]
    assert httpx.get(f"{b.url}/v1/operations", headers=_auth(old)).status_code == 200
    rotated = httpx.post(f"{a.url}/v1/tokens/{token_id}:rotate", headers=_auth(a.token))
    assert rotated.status_code == 201, rotated.text
    assert httpx.get(f"{b.url}/v1/operations", headers=_auth(old)).status_code == 401
    new = rotated.json()["secret"]
    assert httpx.get(f"{b.url}/v1/operations", headers=_auth(new)).status_code == 200

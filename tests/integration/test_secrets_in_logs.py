"""A database error never puts a bound value in a response or a log line, on each backend.

Two statements fail in the database under a real server: an invocation's insert, whose
parameters hold a secret (refused by a constraint the test adds, so PostgreSQL's error
quotes the failing row in its DETAIL), and a token lookup by its hash (its table moved
away). Each answers 500 in the error shape; neither the body nor the server's log,
traceback included, holds the parameter, the token or its hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from oprun.testing import Server
from tests.integration.conftest import Tenant


@contextlib.contextmanager
def _sql(server: Server) -> Iterator[object]:
    """A connection of the test's own to the server's database (autocommit)."""
    url = make_url(server.database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database or "", isolation_level=None, timeout=30)
        try:
            yield conn
        finally:
            conn.close()
    else:
        with psycopg.connect(server.database_url, autocommit=True) as pg:
            yield pg


def _is_sqlite(server: Server) -> bool:
    return make_url(server.database_url).get_backend_name() == "sqlite"


def _log(server: Server, marker: str) -> str:
    """The server's log once it holds `marker` (a line about the failure)."""
    assert server.log_path is not None
    deadline = time.monotonic() + 10
    while True:
        text = server.log_path.read_text(errors="replace")
        if marker in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def _crashed(response: httpx.Response) -> None:
    assert response.status_code == 500, response.text
    assert response.json()["error"]["code"] == "INTERNAL"


@pytest.fixture
def admin(tenant: Tenant) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=tenant.url, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=30
    ) as client:
        yield client


def test_a_refused_insert_leaks_no_parameter_value(
    shared_server: Server, tenant: Tenant, admin: httpx.Client
) -> None:
    action = {
        "name": "leaky",
        "entrypoint": "tests.integration.actions:echo",
        "parameters": [{"name": "value", "type": "string"}],
    }
    assert admin.post("/v1/actions", json=action).status_code == 201
    secret = f"leakcheck-{uuid.uuid4().hex}"
    with _sql(shared_server) as conn:
        if _is_sqlite(shared_server):
            add = (
                "CREATE TRIGGER refuse_leakcheck BEFORE INSERT ON operations "
                "WHEN NEW.parameters LIKE '%leakcheck-%' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
            drop = "DROP TRIGGER refuse_leakcheck"
        else:
            add = (
                "ALTER TABLE operations ADD CONSTRAINT refuse_leakcheck "
                "CHECK (parameters::text NOT LIKE '%leakcheck-%') NOT VALID"
            )
            drop = "ALTER TABLE operations DROP CONSTRAINT refuse_leakcheck"
        conn.execute(add)  # type: ignore[attr-defined]
        try:
            response = admin.post(
                "/v1/operations", json={"action": "leaky", "parameters": {"value": secret}}
            )
        finally:
            conn.execute(drop)  # type: ignore[attr-defined]
    _crashed(response)
    assert secret not in response.text
    log = _log(shared_server, "refuse_leakcheck" if not _is_sqlite(shared_server) else "refused")
    assert "event=unhandled" in log and "path=/v1/operations" in log  # the failure is logged
    assert secret.split("-")[1] not in log


def test_a_failed_token_lookup_leaks_neither_the_token_nor_its_hash(
    shared_server: Server, admin: httpx.Client
) -> None:
    made = admin.post("/v1/tokens", json={"name": "fresh", "role": "viewer"})
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]  # never used: no process has it cached
    digest = hashlib.sha256(secret.encode()).hexdigest()
    with _sql(shared_server) as conn:
        conn.execute("ALTER TABLE tokens RENAME TO tokens_away")  # type: ignore[attr-defined]
        try:
            response = httpx.get(
                f"{shared_server.url}/v1/projects/current",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=30,
            )
        finally:
            conn.execute("ALTER TABLE tokens_away RENAME TO tokens")  # type: ignore[attr-defined]
    _crashed(response)
    assert secret not in response.text and digest not in response.text
    log = _log(shared_server, "path=/v1/projects/current")
    assert "event=unhandled" in log
    assert digest not in log and secret[-20:] not in log

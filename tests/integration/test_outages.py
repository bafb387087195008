"""Outages: a database that goes away or is locked answers 503, and a crash keeps the connection.

The PostgreSQL server of the machine is shared by every test, so it is never stopped:
the oprun server reaches it through a TCP proxy of the test's own, which the test
cuts (every connection closed, new ones refused) and restores.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from oprun.api.app import create_app
from oprun.service import Settings, open_services
from oprun.testing import Server, free_port
from tests.conftest import PG_ADMIN_URL
from tests.integration._tcp_proxy import TcpProxy

ACTION = {"name": "echo", "entrypoint": "tests.integration.actions:echo"}


def _client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60
    )


def _assert_unavailable(response: httpx.Response) -> dict:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "UNAVAILABLE"
    return body["error"]


def _eventually(call, want: int, within: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        response = call()
        if response.status_code == want or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_database_that_goes_away_answers_503_and_the_server_recovers_without_restart(
    postgres_url, tmp_path
):
    host, port = PG_ADMIN_URL.rsplit("@", 1)[1].split("/", 1)[0].split(":")
    proxy = TcpProxy((host, int(port))).start()
    proxied = postgres_url.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
    server = Server(database_url=proxied, log_path=tmp_path / "server.log").start()
    try:
        with _client(server) as api:
            assert api.post("/v1/actions", json=ACTION).status_code == 201
            assert api.post("/v1/operations", json={"action": "echo"}).status_code == 201
            assert api.get("/v1/readyz").status_code == 200

            proxy.cut()
            error = _assert_unavailable(api.post("/v1/operations", json={"action": "echo"}))
            assert "database" in error["message"]
            ready = _assert_unavailable(api.get("/v1/readyz"))
            assert ready["details"]["check"] == "database"
            assert api.get("/v1/healthz").status_code == 200
            # Reads are refused the same way, not with a 500.
            _assert_unavailable(api.get("/v1/actions/echo"))

            proxy.start()
            invoked = _eventually(lambda: api.post("/v1/operations", json={"action": "echo"}), 201)
            assert invoked.status_code == 201, invoked.text
            assert api.get("/v1/readyz").status_code == 200
        log = (tmp_path / "server.log").read_text()
        assert "event=database_unavailable" in log and "Traceback" not in log
    finally:
        server.stop()
        proxy.cut()


def test_a_locked_sqlite_database_answers_503_to_writes_until_the_lock_is_released(tmp_path):
    path = tmp_path / "oprun.db"
    # The server waits 1 s for a lock (the URL's `timeout`), not the default 30 s.
    server = Server(
        database_url=f"sqlite:///{path}?timeout=1", log_path=tmp_path / "server.log"
    ).start()
    try:
        with _client(server) as api:
            assert api.post("/v1/actions", json=ACTION).status_code == 201
            locker = sqlite3.connect(path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                started = time.monotonic()
                error = _assert_unavailable(api.post("/v1/operations", json={"action": "echo"}))
                assert time.monotonic() - started < 10
                assert error["details"]["reason"] == "busy"
                assert api.get("/v1/readyz").status_code == 200  # readers are not locked out
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            assert api.post("/v1/operations", json={"action": "echo"}).status_code == 201
        assert "event=database_unavailable" in (tmp_path / "server.log").read_text()
    finally:
        server.stop()


def test_readiness_names_a_schema_older_than_this_code_and_accepts_a_newer_one(tmp_path):
    path = tmp_path / "oprun.db"
    server = Server(database_url=f"sqlite:///{path}", log_path=tmp_path / "server.log").start()
    try:
        ready = httpx.get(f"{server.url}/v1/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        head = ready.json()["schema"]
        assert ready.json()["status"] == "ready"
        with sqlite3.connect(path) as db:  # as if this code's last migrations were not applied
            db.execute("UPDATE alembic_version SET version_num = '0001'")
        error = _assert_unavailable(httpx.get(f"{server.url}/v1/readyz", timeout=30))
        assert error["details"] == {"check": "schema", "schema": "0001", "expected": head}
        assert "oprun db upgrade" in error["message"]
        assert httpx.get(f"{server.url}/v1/healthz", timeout=30).status_code == 200
        with sqlite3.connect(path) as db:  # as if a newer oprun migrated it (rolling upgrade)
            db.execute("UPDATE alembic_version SET version_num = '9999_newer'")
        ready = httpx.get(f"{server.url}/v1/readyz", timeout=30)
        assert ready.status_code == 200 and ready.json()["schema"] == "9999_newer"
    finally:
        server.stop()


@contextlib.contextmanager
def _serving(app, port: int) -> Iterator[None]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_500_leaves_the_next_request_on_the_same_connection_working(tmp_path):
    services, _ = open_services(
        Settings(database_url=f"sqlite:///{tmp_path / 'oprun.db'}", bootstrap_token="t" * 32)
    )
    app = create_app(services, run_reaper=False)

    def crash() -> None:
        raise RuntimeError("a bug the handlers do not know")

    app.add_api_route("/v1/test-crash", crash)  # no route of oprun crashes on purpose
    port = free_port()
    try:
        with _serving(app, port), httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            with client.stream("GET", "/v1/test-crash") as crashed:
                # Read where the connection comes from before the body: a server that
                # closes after its 500 lets the client close the socket with the body.
                first = crashed.extensions["network_stream"].get_extra_info("client_addr")
                crashed.read()
            assert crashed.status_code == 500
            assert crashed.json()["error"]["code"] == "INTERNAL"
            assert "a bug" not in crashed.text  # no internals in the answer
            time.sleep(0.2)  # long enough for a server that closes to have closed
            after = client.get("/v1/healthz")
            assert after.status_code == 200
            second = after.extensions["network_stream"].get_extra_info("client_addr")
            assert second == first, "the connection was not kept alive after the 500"
    finally:
        services.close()

"""Failed authentications are throttled per client address on a real server (issue 11)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oprun.testing import Server
from tests.conftest import fresh_database

LIMIT = 20
WINDOW = 3.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with fresh_database("sqlite", tmp_path) as url:
        srv = Server(
            database_url=url,
            log_path=tmp_path / "server.log",
            environment={
                "OPRUN_AUTH_FAILURE_LIMIT": str(LIMIT),
                "OPRUN_AUTH_FAILURE_WINDOW": str(WINDOW),
            },
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


def _throttled(response: httpx.Response) -> float:
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "THROTTLED"
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= WINDOW + 1 and body["error"]["details"]["retry_after"] == wait
    return wait


def test_random_tokens_are_throttled_valid_tokens_still_work_and_the_log_names_no_token(
    server: Server,
) -> None:
    admin = {"Authorization": f"Bearer {server.token}"}
    guesses = [f"oprun_{secrets.token_urlsafe(32)}" for _ in range(2000)]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v1/tokens", headers=admin).status_code == 200
        statuses = []
        last = None
        for guess in guesses:
            last = http.get("/v1/operations", headers={"Authorization": f"Bearer {guess}"})
            statuses.append(last.status_code)
        assert statuses[:LIMIT] == [401] * LIMIT
        assert set(statuses[LIMIT:]) == {429}, "every guess past the limit is throttled"
        assert last is not None
        wait = _throttled(last)
        # Meanwhile a token this server knows still works from the same address.
        assert http.get("/v1/tokens", headers=admin).status_code == 200
        # After Retry-After (without guessing meanwhile), a wrong token is 401 again.
        time.sleep(wait + 0.2)
        again = http.get("/v1/operations", headers={"Authorization": "Bearer oprun_nope"})
        assert again.status_code == 401, again.text
    log = Path(str(server.log_path)).read_text()
    failed = [line for line in log.splitlines() if "event=auth_failed" in line]
    assert failed and all("client=127.0.0.1" in line for line in failed)
    assert len(failed) < 200, "under attack the log writes about one line a second per address"
    assert not any(guess in log for guess in guesses)
    assert not re.search(r"oprun_[A-Za-z0-9_-]{20,}", "\n".join(failed))


def test_bad_sign_ins_in_the_web_form_are_throttled_too(server: Server) -> None:
    origin = {"Origin": server.url}
    with httpx.Client(base_url=server.url, timeout=30, headers=origin) as http:
        answers = [
            http.post("/sign-in", data={"token": f"oprun_bad_{i}", "next": "/jobs"})
            for i in range(LIMIT + 5)
        ]
        assert [a.status_code for a in answers[:LIMIT]] == [401] * LIMIT
        refused = answers[-1]
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "Too many failed sign-ins" in refused.text
        assert "oprun_bad_" not in refused.text
        good = http.post("/sign-in", data={"token": server.token, "next": "/jobs"})
        assert good.status_code == 429, "a token never seen here waits like any other"
        page = http.get("/jobs", headers={"Cookie": "oprun_session=oprun_stale_cookie"})
        assert page.status_code == 429 and "Too many failed attempts" in page.text
        wait = int(page.headers["Retry-After"])
        assert wait >= 1
        time.sleep(wait + 0.2)
        good = http.post("/sign-in", data={"token": server.token, "next": "/jobs"})
        assert good.status_code == 303 and "oprun_session" in good.headers["set-cookie"]
    assert "event=auth_failed" in Path(str(server.log_path)).read_text()

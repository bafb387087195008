"""Fixtures shared by every test layer: databases on each backend."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest

PG_ADMIN_URL = os.environ.get(
    "OPRUN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_POSTGRES = os.environ.get("OPRUN_REQUIRE_POSTGRES") == "1"


@cache
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None when it can."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).strip()}"
    return None


def require_postgres() -> None:
    """Skip with the reason when PostgreSQL is missing; fail instead when it is mandatory."""
    problem = postgres_problem()
    if problem is None:
        return
    if REQUIRE_POSTGRES:
        pytest.fail(f"{problem} (OPRUN_REQUIRE_POSTGRES=1 makes PostgreSQL tests mandatory)")
    pytest.skip(problem)


@contextlib.contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new, empty database on `backend` (a PostgreSQL one is dropped after)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'oprun.db'}"
        return
    require_postgres()
    name = f"oprun_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(tmp_path) -> Iterator[str]:
    """A fresh PostgreSQL database, dropped after the test."""
    with fresh_database("postgres", tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> Iterator[str]:
    """A fresh SQLite file."""
    with fresh_database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """A fresh database on each backend."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(autouse=True)
def _no_user_profiles(tmp_path_factory, monkeypatch) -> None:
    """No test (nor a CLI it runs) reads the developer's ~/.config/oprun/config.toml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg-config"))
    monkeypatch.delenv("OPRUN_PROFILE", raising=False)


# -- figures ------------------------------------------------------------------------------
@pytest.fixture
def figure(request) -> Callable[[str], None]:
    """Record a measured figure; every test's figures are printed at the end of the run.

    They travel in the test report (`user_properties`), so they reach the terminal
    from pytest-xdist's workers too, where a test's own output does not.
    """

    def say(line: str) -> None:
        request.node.user_properties.append(("figure", f"{request.node.name}: {line}"))

    return say


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the tests measured, in test order."""
    lines = [
        value
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "figure"
    ]
    if lines:
        terminalreporter.section("figures")
        for line in sorted(lines):
            terminalreporter.write_line(line)


# -- order (xdist balance) ----------------------------------------------------------------
LONG_MODULES = {
    "tests/integration/test_stress.py": 195,
    "tests/integration/test_retention.py": 118,
    "tests/e2e/test_cli.py": 105,
    "tests/integration/test_openjd_flow.py": 90,
    "tests/integration/test_flow.py": 85,
    "tests/integration/test_outage_recovery.py": 84,
    "tests/integration/test_openapi_fuzz.py": 78,
    "tests/integration/test_creation_races.py": 71,
    "tests/integration/test_rehearsal.py": 69,
    "tests/e2e/test_web.py": 66,
    "tests/integration/test_store_silence.py": 57,
    "tests/integration/test_access_matrix.py": 53,
    "tests/integration/test_poisoned_output.py": 51,
    "tests/integration/test_store.py": 45,
    "tests/integration/test_outages.py": 44,
    "tests/integration/test_upgrades.py": 39,
    "tests/integration/test_backups.py": 38,
    "tests/integration/test_bad_input.py": 36,
    "tests/e2e/test_cli_openjd.py": 34,
    "tests/integration/test_paging.py": 33,
    "tests/integration/test_token_lifecycle.py": 32,
    "tests/integration/test_session_actions.py": 32,
    "tests/e2e/test_cli_audit.py": 32,
    "tests/integration/test_openjd_session.py": 31,
    "tests/integration/test_failover.py": 31,
    "tests/integration/test_cost_metrics.py": 31,
    "tests/integration/test_audit.py": 27,
    "tests/integration/test_scheduling.py": 27,
    "tests/e2e/test_cli_profiles.py": 26,
    "tests/docs/test_docs.py": 24,
}
"""Seconds the long modules took, each run alone (2-core machine, busy with other work too).

The suite runs a module to each of two processes at a time (`--dist loadfile`), taking
the next module as one frees up. Left in pytest-xdist's order (most tests first), the
long modules of a few tests each came last, and one process ran the last of them alone
while the other had finished. Longest first, the short ones fill in at the end.
"""


LAST_MODULES = ("tests/integration/test_outage_recovery.py",)
"""Proofs that no lease lapses over a database outage or a server clock step, with leases
of 2 s: they start last, beside the short modules, not beside the thousand-race stress
module, whose load once kept a worker silent past a lease. They take longest, so the
other process may idle a while at the end: a minute of wall time for a proof that
measures the product, not the machine's contention."""


def pytest_configure(config: pytest.Config) -> None:
    """pytest-xdist takes the modules in collection order (set below), not by test count."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules longest first (`LONG_MODULES`), then by test count; `LAST_MODULES` last.

    It runs after pytest's own reordering (by fixture), which it keeps within each module.
    """
    module_of = {id(item): item.nodeid.split("::", 1)[0] for item in items}
    count = Counter(module_of.values())
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(module_of[id(item)], index)

    def weight(item: pytest.Item) -> tuple[bool, int, int, int]:
        module = module_of[id(item)]
        last = module in LAST_MODULES
        return (last, -LONG_MODULES.get(module, 0), -count[module], first[module])

    items.sort(key=weight)

"""The README's Security section says what the code does: roles and limits, from their source."""

from __future__ import annotations

import re
from pathlib import Path

from oprun.domain import limits
from oprun.domain.roles import Role
from oprun.service.auth import DEFAULT_RULE

ROOT = Path(__file__).resolve().parents[2]


def _security() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[
        readme.index("## Security") : readme.index("\n## ", readme.index("## Security") + 1)
    ]


def _role_rows(text: str) -> list[str]:
    return re.findall(r"^\| `[a-z]+` \|.*\|$", text, flags=re.M)


def test_the_readme_roles_table_is_the_api_references_and_names_every_role() -> None:
    rows = _role_rows(_security())
    api = (ROOT / "docs" / "api.md").read_text()
    roles_part = api[api.index("## Roles") : api.index("\n## ", api.index("## Roles") + 1)]
    assert rows == _role_rows(roles_part)
    assert [re.match(r"\| `([a-z]+)`", row).group(1) for row in rows] == [  # type: ignore[union-attr]
        "viewer",
        "operator",
        "worker",
        "deployer",
        "admin",
    ]
    assert {row.split("`")[1] for row in rows} == {role.value for role in Role}


def _number(value: int) -> str:
    return f"{value:,}"


def test_the_readme_limits_are_the_codes() -> None:
    text = " ".join(_security().split())
    said = {
        "a request body of at most 1 MiB": limits.MAX_REQUEST_BYTES == 1024 * 1024,
        "a request head of 64 KiB": limits.MAX_HEADER_BYTES == 64 * 1024,
        "header of 4 KiB": limits.MAX_AUTHORIZATION_BYTES == 4096,
        f"{_number(limits.MAX_BULK_INVOKE)} invocations in a bulk invoke": True,
        f"{limits.MAX_PAGE_SIZE} items a page": True,
        f"{limits.MAX_WORKER_QUEUES} queues, {limits.MAX_WORKER_ACTIONS} actions and "
        f"{limits.MAX_CAPABILITIES} capabilities, {limits.MAX_TAGS} tags": True,
        f"{limits.MAX_ACTION_PARAMETERS} parameters, {_number(limits.MAX_ALLOWED_VALUES)} "
        f"allowed values and {_number(limits.MAX_COMMAND_ARGS)} command arguments": True,
        f"{_number(limits.MAX_HELD)} held items": True,
        f"names of {limits.MAX_NAME_LENGTH} characters": True,
        "a parameter value of 64 KiB": limits.MAX_PARAMETER_BYTES == 64 * 1024,
        "a result of 256 KiB": limits.MAX_RESULT_BYTES == 256 * 1024,
        f"long polls of {limits.MAX_WAIT_SECONDS:g} s": True,
        "a log line 16 KiB": limits.MAX_LOG_LINE_BYTES == 16 * 1024,
        f"after {DEFAULT_RULE.limit} failed authentications within {DEFAULT_RULE.window:g} s": True,
    }
    for phrase, holds in said.items():
        assert phrase in text and holds, phrase

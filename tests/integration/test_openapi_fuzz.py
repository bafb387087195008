"""The OpenAPI document is the truth: schemathesis over every operation on both backends.

Bounded (a few examples per operation, derandomized so a run is repeatable), with
positive and negative data: no answer is a 5xx and every status is one the document
lists for its operation. Each operation runs as a tenant of its own project on the
module's shared server. The event stream is left out (it never ends by design).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.integration.conftest import Tenant

EXAMPLES = 8
"""Examples per operation and generation mode: the whole run stays within a minute or so."""
LEFT_OUT = frozenset({"streamEvents"})


def _exercise(operation: Any, mode: GenerationMode, auth: dict[str, str]) -> str | None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            headers=auth, checks=[not_a_server_error, status_code_conformance], timeout=30
        )

    try:
        run()
    except Unsatisfiable:
        return None  # no negative data exists for an operation that takes nothing
    except Exception as exc:  # a failed check: report it with the operation, go on
        return f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:2000]
    return None


def test_every_operation_answers_only_documented_statuses_and_never_a_server_error(
    tenant: Tenant,
) -> None:
    schema = schemathesis.openapi.from_url(f"{tenant.url}/openapi.json")
    auth = {"Authorization": f"Bearer {tenant.token}"}
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") in LEFT_OUT:
            continue
        tested += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _exercise(operation, mode, auth)
            if failure is not None:
                failures.append(failure)
    assert tested >= 32
    assert failures == [], "\n\n".join(failures)

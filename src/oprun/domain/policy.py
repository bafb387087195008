"""An operation's policies, copied from its action when it is invoked.

An operation keeps them as plain JSON (columns `policy` and `requirements`), so
that later versions of its action do not change how it runs: how it retries,
when it quarantines a worker, and what a worker needs to take its tasks. This
module is the one place that writes and reads that form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oprun.domain.models import ActionDefinition, ActionKind, RetryPolicy

DEFAULT_QUARANTINE_AFTER = 3
"""Failures in a row before quarantine, for operations whose policy does not say."""


def operation_policy(definition: ActionDefinition) -> dict[str, Any]:
    """What an operation keeps of its action's retry and quarantine policies."""
    return {
        "retry": definition.retry.model_dump(mode="json"),
        "quarantine_after": definition.quarantine_after,
    }


def requirements_of(definition: ActionDefinition) -> dict[str, Any] | None:
    """What a worker needs to take the operation's tasks (None: any worker will do).

    The action's requirements, and its kind unless it is a Python action (every
    worker runs those).
    """
    found: dict[str, Any] = {}
    if not definition.requirements.is_empty():
        found.update(definition.requirements.model_dump(mode="json"))
    if definition.kind is not ActionKind.PYTHON:
        found["kind"] = definition.kind.value
    return found or None


def retry_policy(policy: Mapping[str, Any] | None) -> RetryPolicy:
    """An operation's retry policy, from its kept policies."""
    return RetryPolicy.model_validate((policy or {}).get("retry", {}))


def quarantine_after(policy: Mapping[str, Any] | None) -> int:
    """An operation's failures in a row before quarantine (0: never), from its kept policies."""
    return int((policy or {}).get("quarantine_after", DEFAULT_QUARANTINE_AFTER))

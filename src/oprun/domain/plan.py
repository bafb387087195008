"""The work of an operation, step by step: which tasks exist and in what order they may run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAIN_STEP = "main"
"""The one step of an action that has no steps of its own (every python action)."""


@dataclass(frozen=True)
class StepPlan:
    """One step: its name, the steps it waits for, and the parameters of each of its tasks.

    `single_step` plans a Python action; `oprun.openjd.plan_job` plans a job template.
    """

    name: str
    depends_on: tuple[str, ...] = ()
    """Names of the steps this one waits for (OpenJD's `dependencies: [{dependsOn: ...}]`)."""
    tasks: tuple[dict[str, Any], ...] = field(default_factory=lambda: ({},))
    """Each task's parameters: the operation's for a Python action; for an OpenJD step,
    Deadline's tagged union (`{"Frame": {"int": "3"}}`), `({},)` without a parameter space."""


def single_step(parameters: dict[str, Any]) -> list[StepPlan]:
    """The plan of an action without steps: one task carrying the operation's parameters."""
    return [StepPlan(MAIN_STEP, (), (parameters,))]


def dependencies(plan: Sequence[StepPlan]) -> dict[str, list[str]] | None:
    """What the store keeps of a plan's order: step -> steps it waits for (None: no order)."""
    if not any(step.depends_on for step in plan):
        return None
    return {step.name: list(step.depends_on) for step in plan}

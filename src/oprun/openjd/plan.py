"""Planning a job: its steps in dependency order, each expanded into its tasks.

    plans = plan_job(template, {"Frames": "1-100"})
    for step in plans:            # every step after the steps it depends on
        step.name, step.depends_on, step.tasks   # tasks: ({"Frame": {"int": "1"}}, ...)

Parameter spaces are expanded by openjd-model's `StepParameterSpaceIterator`: ranges,
lists, `combination` products and associations, and TASK_CHUNKING's `CHUNK[INT]`
(a chunk is tagged `chunkInt`, its value a range expression such as `"1-10"`).
Adaptive chunking (`targetRuntimeSeconds`) is planned with fixed chunks of
`defaultTaskCount`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openjd.model import StepDependencyGraph, StepParameterSpaceIterator

from oprun.domain.errors import TooLarge, ValidationError
from oprun.domain.plan import StepPlan
from oprun.openjd.job import create_job, tag_task_parameters
from oprun.openjd.template import decode

MAX_TASKS_PER_STEP = 100_000
"""A step whose parameter space has more tasks than this is refused."""


def plan_job(template: Mapping[str, Any], job_parameters: Mapping[str, Any]) -> list[StepPlan]:
    """The job's steps in a valid topological order, each with all of its tasks.

    Each task's parameters are Deadline's tagged union (`oprun.openjd.TaskParameters`);
    a step without a parameter space has the one task `{}`.

    Raises:
        ValidationError: the template is invalid or the job parameters are not
            (missing, unknown, out of range); the model's message is quoted.
        TooLarge: a step has more than `MAX_TASKS_PER_STEP` tasks.
    """
    job = create_job(template, job_parameters).job
    plans = []
    for step in StepDependencyGraph(job=job).topo_sorted():
        try:
            space = StepParameterSpaceIterator(space=step.parameterSpace)
        except ValueError as exc:
            raise ValidationError(
                f"step {step.name!r} has an invalid parameter space: {exc}", step=step.name
            ) from None
        count = len(space)
        if count > MAX_TASKS_PER_STEP:
            raise TooLarge(
                f"step {step.name!r} has {count} tasks; the limit is {MAX_TASKS_PER_STEP}",
                step=step.name,
                tasks=count,
                limit=MAX_TASKS_PER_STEP,
            )
        plans.append(
            StepPlan(
                name=step.name,
                depends_on=tuple(d.dependsOn for d in step.dependencies or ()),
                tasks=tuple(tag_task_parameters(task) for task in space),
            )
        )
    return plans


def job_environment_names(template: Mapping[str, Any]) -> list[str]:
    """Names of the job environments, in the order they are entered."""
    return [env.name for env in decode(template).jobEnvironments or ()]


def step_environment_names(template: Mapping[str, Any], step: str) -> list[str]:
    """Names of `step`'s environments, in the order they are entered.

    Raises:
        ValidationError: the template has no step called `step`.
    """
    for candidate in decode(template).steps:
        if candidate.name == step:
            return [env.name for env in candidate.stepEnvironments or ()]
    raise ValidationError(f"job template has no step {step!r}", step=step)

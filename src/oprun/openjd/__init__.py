"""Open Job Description (OpenJD) building blocks: templates, parameters, job plans.

Domain level: no HTTP, no SQL. Templates are validated with `openjd-model`; the
worker runs them with `openjd-sessions` (see `oprun.worker.openjd.session`).
"""

from oprun.openjd.job import OpenJDJob, TaskParameters, create_job, task_parameter_set
from oprun.openjd.plan import (
    MAX_TASKS_PER_STEP,
    job_environment_names,
    plan_job,
    step_environment_names,
)
from oprun.openjd.template import (
    COMMAND_STEP_NAME,
    SUPPORTED_EXTENSIONS,
    command_template,
    load_template,
    parameter_specs,
)

__all__ = [
    "COMMAND_STEP_NAME",
    "MAX_TASKS_PER_STEP",
    "SUPPORTED_EXTENSIONS",
    "OpenJDJob",
    "TaskParameters",
    "command_template",
    "create_job",
    "job_environment_names",
    "load_template",
    "parameter_specs",
    "plan_job",
    "step_environment_names",
    "task_parameter_set",
]

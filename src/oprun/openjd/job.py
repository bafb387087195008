"""A template and job parameter values turned into an openjd-model `Job`.

Also the conversion between openjd's task parameter sets and Deadline's tagged
union (`{"Frame": {"int": "3"}}`), the wire form of a task's parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openjd.model import (
    DecodeValidationError,
    Job,
    JobParameterValues,
    JobTemplate,
    ParameterValue,
    ParameterValueType,
    TaskParameterSet,
    create_job_with_symbol_tables,
    preprocess_job_parameters,
)

from oprun.domain.errors import ValidationError
from oprun.openjd.template import decode

if TYPE_CHECKING:
    from openjd.expr import SerializedSymbolTable

TaskParameters = dict[str, dict[str, str]]
"""A task's parameters as Deadline's tagged union: `{"Frame": {"int": "3"}}`."""

TAGS: dict[ParameterValueType, str] = {
    ParameterValueType.INT: "int",
    ParameterValueType.FLOAT: "float",
    ParameterValueType.STRING: "string",
    ParameterValueType.PATH: "path",
    ParameterValueType.CHUNK_INT: "chunkInt",
}
"""openjd task parameter type -> tag of Deadline's `TaskParameterValue` union."""

_TYPES_BY_TAG = {tag: kind for kind, tag in TAGS.items()}


@dataclass(frozen=True)
class OpenJDJob:
    """A validated template instantiated with its job parameter values."""

    template: JobTemplate
    job: Job
    parameter_values: JobParameterValues
    extensions: tuple[str, ...] = ()
    job_symbol_table: SerializedSymbolTable | None = None
    """Job scope for EXPR templates (None otherwise): pass to job environments."""
    step_symbol_tables: dict[str, SerializedSymbolTable] = field(default_factory=dict)
    """Step scope for EXPR templates, by step name: pass to step environments and tasks."""


def create_job(template: Mapping[str, Any], job_parameters: Mapping[str, Any]) -> OpenJDJob:
    """Validate `job_parameters` against `template` with openjd-model and create the job.

    Values may be typed (`5`, `1.5`, `True`, lists for EXPR list types) or strings.
    Defaults are filled in; PATH values are kept as given (no template directory).

    Raises:
        ValidationError: the template is invalid, or a parameter is missing, unknown
            or violates its constraints; the model's message is quoted and
            `details["parameter"]` names the first parameter it mentions.
    """
    job_template = decode(template)
    names = [d.name for d in job_template.parameterDefinitions or ()]
    try:
        values = preprocess_job_parameters(
            job_template=job_template,
            job_parameter_values=_inputs(job_parameters),
            job_template_dir=Path(),
            current_working_dir=Path(),
            allow_job_template_dir_walk_up=True,
        )
        created = create_job_with_symbol_tables(
            job_template=job_template, job_parameter_values=values
        )
    except (ValueError, DecodeValidationError) as exc:
        raise parameter_error(str(exc), names) from None
    extensions = tuple(str(getattr(e, "value", e)) for e in job_template.extensions or ())
    expr = "EXPR" in extensions
    return OpenJDJob(
        template=job_template,
        job=created.job,
        parameter_values=values,
        extensions=extensions,
        job_symbol_table=created.job_symbol_table if expr else None,
        step_symbol_tables=dict(created.step_symbol_tables) if expr else {},
    )


def parameter_error(text: str, names: list[str]) -> ValidationError:
    """A `ValidationError` for job parameter values, quoting openjd-model's `text`."""
    text = text.strip()
    found = sorted(
        (m.start(), name)
        for name in names
        if (m := re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text)) is not None
    )
    details: dict[str, Any] = {"model_error": text, "problem": text}
    if found:
        details["parameter"] = found[0][1]
    return ValidationError(f"job parameters are not valid: {text}", **details)


def tag_task_parameters(parameters: TaskParameterSet) -> TaskParameters:
    """Task parameter values from openjd-model as Deadline's tagged union."""
    return {name: {TAGS[value.type]: str(value.value)} for name, value in parameters.items()}


def task_parameter_set(parameters: Mapping[str, Mapping[str, str]]) -> TaskParameterSet:
    """Deadline's tagged union back to openjd task parameter values.

    Raises:
        ValidationError: a value is not a one-key mapping with a known tag.
    """
    result: TaskParameterSet = {}
    for name, tagged in parameters.items():
        if not isinstance(tagged, Mapping) or len(tagged) != 1:
            raise ValidationError(
                f"task parameter {name!r} must be one tagged value like {{'int': '3'}}",
                parameter=name,
            )
        ((tag, value),) = tagged.items()
        kind = _TYPES_BY_TAG.get(tag)
        if kind is None:
            raise ValidationError(
                f"task parameter {name!r} has unknown tag {tag!r}; expected one of "
                f"{sorted(_TYPES_BY_TAG)!r}",
                parameter=name,
            )
        result[name] = ParameterValue(type=kind, value=str(value))
    return result


def _inputs(job_parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Values as openjd-model takes them: strings for the scalar types, else native."""
    inputs: dict[str, Any] = {}
    for name, value in job_parameters.items():
        if value is None:
            continue  # not given: openjd applies the default or reports it missing
        if isinstance(value, bool | list | dict):
            inputs[name] = value
        else:
            inputs[name] = str(value)
    return inputs


__all__ = [
    "TAGS",
    "OpenJDJob",
    "TaskParameters",
    "create_job",
    "parameter_error",
    "tag_task_parameters",
    "task_parameter_set",
]

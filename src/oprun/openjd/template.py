"""Open Job Description job templates: loading, validation, the `command:` shorthand.

A template is validated with `openjd-model` (specification `jobtemplate-2023-09` and
the extensions in `SUPPORTED_EXTENSIONS`) and stored as the plain dict the user wrote.
Every failure is a `ValidationError` whose message quotes the model's own text and
whose details name the field path (`steps[0].script.actions.onRun`) when it has one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from openjd.model import (
    DecodeValidationError,
    DocumentType,
    JobTemplate,
    decode_job_template,
    document_string_to_object,
)

from oprun.domain.errors import ValidationError
from oprun.domain.params import ParameterSpec, ParameterType

SPECIFICATION_VERSION = "jobtemplate-2023-09"
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    "TASK_CHUNKING",
    "REDACTED_ENV_VARS",
    "FEATURE_BUNDLE_1",
    "EXPR",
)
"""OpenJD extensions a template may request (the ones Deadline Cloud templates use, plus EXPR)."""

COMMAND_STEP_NAME = "run"
"""The step name of a template made from the `command: [argv...]` shorthand."""

_PARAM_REF = re.compile(r"\{\{\s*(?:Raw)?Param\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_TASK_PARAM_REF = re.compile(r"\{\{\s*Task\.(?:Raw)?Param\.")
_ERROR_HEADER = re.compile(r"^\d+ validation errors? for \w+$")

_PARAMETER_TYPES: dict[str, ParameterType] = {
    "INT": "int",
    "FLOAT": "float",
    "STRING": "string",
    "PATH": "path",
    "BOOL": "bool",
    "RANGE_EXPR": "string",
}


def load_template(source: str | Mapping[str, Any]) -> dict[str, Any]:
    """Parse and validate a job template given as YAML or JSON text or a mapping.

    Returns:
        The template as a plain, JSON-serialisable dict (what oprun stores).

    Raises:
        ValidationError: the text is not a YAML/JSON mapping, the document is not
            JSON-serialisable, or openjd-model rejects it; the message quotes the
            model and `details["field"]` names the first offending field path.
    """
    if isinstance(source, str):
        document_type = DocumentType.JSON if source.lstrip().startswith("{") else DocumentType.YAML
        try:
            document: Any = document_string_to_object(document=source, document_type=document_type)
        except DecodeValidationError as exc:
            raise model_error("job template is not valid", exc) from None
    elif isinstance(source, Mapping):
        document = source
    else:
        raise ValidationError(
            f"job template must be YAML/JSON text or a mapping, not {type(source).__name__}"
        )
    try:
        plain = json.loads(json.dumps(document, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"job template is not JSON-serialisable: {exc}") from None
    decode(plain)
    return plain  # type: ignore[no-any-return]


def decode(template: Mapping[str, Any]) -> JobTemplate:
    """The openjd-model `JobTemplate` for a template dict.

    Raises:
        ValidationError: openjd-model rejects the template (its message quoted).
    """
    try:
        return decode_job_template(
            template=dict(template), supported_extensions=SUPPORTED_EXTENSIONS
        )
    except DecodeValidationError as exc:
        raise model_error("job template is not valid", exc) from None
    except NotImplementedError as exc:
        raise ValidationError(f"job template is not supported: {exc}") from None


def command_template(name: str, argv: list[str]) -> dict[str, Any]:
    """The one-step job template that runs `argv` (the `command: [argv...]` shorthand).

    The step is called `run`; its one `onRun` action runs `argv[0]` with `argv[1:]`.
    Every job parameter referenced as `{{Param.X}}` (or `{{RawParam.X}}`) in `argv`
    is declared as a required STRING parameter, so the template validates and an
    invocation must supply it.

    Raises:
        ValidationError: `argv` is empty, refers to task parameters (the shorthand
            has no parameter space), or the result does not validate.
    """
    if not argv or not all(isinstance(a, str) for a in argv) or not argv[0].strip():
        raise ValidationError(
            "command must be a non-empty list of strings", field="command", value=argv
        )
    for arg in argv:
        if _TASK_PARAM_REF.search(arg):
            raise ValidationError(
                "command cannot refer to {{Task.Param.*}}: the shorthand has no parameter "
                "space; write a job template with a parameterSpace instead",
                field="command",
                value=arg,
            )
    names = list(dict.fromkeys(m for arg in argv for m in _PARAM_REF.findall(arg)))
    template: dict[str, Any] = {
        "specificationVersion": SPECIFICATION_VERSION,
        "name": name,
        "steps": [
            {
                "name": COMMAND_STEP_NAME,
                "script": {
                    "actions": {"onRun": {"command": argv[0], "args": list(argv[1:])}},
                },
            }
        ],
    }
    if names:
        template["parameterDefinitions"] = [{"name": n, "type": "STRING"} for n in names]
    if len(argv) == 1:
        del template["steps"][0]["script"]["actions"]["onRun"]["args"]
    decode(template)
    return template


def parameter_specs(template: Mapping[str, Any]) -> list[ParameterSpec]:
    """The template's job parameters as oprun `ParameterSpec`s.

    INT, FLOAT, STRING and PATH keep their type, default, `minValue`/`maxValue`
    (as `minimum`/`maximum`) and `allowedValues`; EXPR's BOOL becomes `bool`,
    RANGE_EXPR `string` and the LIST types `json`. A parameter without a default is
    required. `minLength`/`maxLength` have no place in `ParameterSpec`: openjd-model
    enforces them when the job is planned (`plan_job`).

    Raises:
        ValidationError: the template does not validate.
    """
    specs = []
    for definition in decode(template).parameterDefinitions or ():
        kind = _PARAMETER_TYPES.get(definition.type.name, "json")
        default = _plain(getattr(definition, "default", None), kind)
        allowed = getattr(definition, "allowedValues", None)
        specs.append(
            ParameterSpec(
                name=definition.name,
                type=kind,
                required=default is None,
                default=default,
                minimum=_number(getattr(definition, "minValue", None)),
                maximum=_number(getattr(definition, "maxValue", None)),
                allowed=[_plain(v, kind) for v in allowed] if allowed is not None else None,
                description=definition.description or "",
            )
        )
    return specs


def model_error(context: str, exc: Exception) -> ValidationError:
    """A `ValidationError` quoting an openjd-model error, with the field paths it names."""
    text = str(exc).strip()
    errors = _field_errors(text)
    details: dict[str, Any] = {"model_error": text}
    if errors:
        details["field"] = errors[0]["field"]
        details["errors"] = errors
    return ValidationError(f"{context}: {text}", **details)


def _field_errors(text: str) -> list[dict[str, str]]:
    """Parse openjd-model's errors: a `path -> to -> field:` line, then a tab and the message."""
    errors: list[dict[str, str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("\t") or not line.endswith(":") or _ERROR_HEADER.match(line):
            continue
        if i + 1 < len(lines) and lines[i + 1].startswith("\t"):
            field = ".".join(part.strip() for part in line[:-1].split("->"))
            errors.append({"field": field, "message": lines[i + 1].strip()})
    return errors


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # a format string (FEATURE_BUNDLE_1): checked by openjd-model


def _plain(value: Any, kind: ParameterType) -> Any:
    """A default or allowed value as the plain Python value of its oprun type."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_plain(v, "json") for v in value]
    if kind == "int":
        return int(value)
    if kind == "float" or isinstance(value, Decimal):
        return float(value)
    if kind in ("string", "path"):
        return str(value)
    return value

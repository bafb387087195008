"""Typed action parameters: their specs, inference from Python signatures, validation."""

from __future__ import annotations

import inspect
import json
import math
import pathlib
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oprun.domain.errors import ValidationError
from oprun.domain.limits import MAX_ALLOWED_VALUES, MAX_PARAMETER_BYTES

ParameterType = Literal["int", "float", "string", "path", "bool", "json"]

_MISSING: Any = object()


class ParameterSpec(BaseModel):
    """One typed parameter of an action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: ParameterType
    required: bool = True
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    allowed: list[Any] | None = Field(default=None, max_length=MAX_ALLOWED_VALUES)
    description: str = ""

    def coerce(self, value: Any) -> Any:
        """Return `value` as this parameter's type, or raise `ValidationError` naming it."""
        value = _coerce(self.name, self.type, value)
        if self.allowed is not None and value not in self.allowed:
            raise _invalid(self.name, f"must be one of {self.allowed!r}, got {value!r}", value)
        if self.type in ("int", "float"):
            if self.minimum is not None and value < self.minimum:
                raise _invalid(self.name, f"must be >= {self.minimum:g}, got {value!r}", value)
            if self.maximum is not None and value > self.maximum:
                raise _invalid(self.name, f"must be <= {self.maximum:g}, got {value!r}", value)
        if len(json.dumps(value)) > MAX_PARAMETER_BYTES:
            raise _invalid(self.name, f"is larger than {MAX_PARAMETER_BYTES} bytes", None)
        return value


def _invalid(name: str, problem: str, value: Any) -> ValidationError:
    return ValidationError(f"parameter {name!r} {problem}", parameter=name, problem=problem)


def _coerce(name: str, kind: ParameterType, value: Any) -> Any:
    """Accept the value itself, or its string form (as a CLI passes it)."""
    if kind == "json":
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise _invalid(name, f"must be a bool, got {value!r}", value)
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _invalid(name, f"must be an int, got {value!r}", value)
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _invalid(name, f"must be a finite float, got {value!r}", value)
            return float(value)
        if isinstance(value, str):
            try:
                parsed = float(value.strip())
            except ValueError:
                pass
            else:
                if math.isfinite(parsed):
                    return parsed
        raise _invalid(name, f"must be a float, got {value!r}", value)
    if not isinstance(value, str):
        raise _invalid(name, f"must be a {kind}, got {value!r}", value)
    return value


def validate_parameters(specs: list[ParameterSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check `values` against `specs`: every value typed, none unknown, none missing.

    Returns the complete parameter set with defaults filled in.
    """
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise ValidationError(
            f"unknown parameter {unknown[0]!r}; expected one of {sorted(by_name)!r}",
            parameter=unknown[0],
            problem="unknown",
        )
    result: dict[str, Any] = {}
    for spec in specs:
        if spec.name in values:
            result[spec.name] = spec.coerce(values[spec.name])
        elif spec.required:
            raise ValidationError(
                f"missing required parameter {spec.name!r} ({spec.type})",
                parameter=spec.name,
                problem="missing",
            )
        else:
            result[spec.name] = spec.default
    return result


def tagged(value: Any, kind: ParameterType) -> dict[str, str]:
    """A value as Deadline's tagged union (`{"int": "5"}`); bool and json as strings of JSON."""
    if kind in ("int", "float"):
        return {kind: repr(value) if kind == "float" else str(value)}
    if kind in ("string", "path"):
        return {kind: str(value)}
    return {kind: json.dumps(value)}


_HINTS: dict[Any, ParameterType] = {
    int: "int",
    float: "float",
    str: "string",
    bool: "bool",
    pathlib.Path: "path",
    dict: "json",
    list: "json",
    Any: "json",
}


def specs_from_signature(fn: Callable[..., Any], *, skip_first: bool = True) -> list[ParameterSpec]:
    """Infer parameter specs from a function's annotations and defaults.

    The first positional parameter is the context and is skipped.
    """
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    params = list(sig.parameters.values())
    if skip_first and params:
        params = params[1:]
    specs = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = hints.get(p.name, Any)
        origin = typing.get_origin(hint) or hint
        kind = _HINTS.get(origin, "json")
        has_default = p.default is not inspect.Parameter.empty
        default = p.default if has_default else None
        if isinstance(default, pathlib.Path):
            default = str(default)
        specs.append(
            ParameterSpec(name=p.name, type=kind, required=not has_default, default=default)
        )
    return specs

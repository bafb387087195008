r"""What a request may carry to storage: the one rule for text and numbers.

Both backends must be able to store every value: PostgreSQL refuses a NUL character in
text and JSON, neither backend can encode a lone UTF-16 surrogate (`"\ud800"`, which
Python's JSON parser lets through), and integer columns are 64-bit at most. So:

- text a client sends (names, parameters, filters, capabilities, ...) with a NUL or a
  lone surrogate is refused (400 naming the field): `refuse`;
- text an action produced (log lines, progress messages, results, error messages) is
  kept, escaped (`oprun.domain.escaping`), then cut to its field's limit: `escape` writes a NUL as `\x00`, a surrogate that stands for an
  undecodable byte (Python's `surrogateescape`, U+DC80..U+DCFF) as that byte `\xNN`,
  and any other lone surrogate as `\udNNN`: visible, and the original bytes can be
  read back from it (unless the text already held such a sequence literally);
- integers outside 64-bit signed and floats that are NaN or infinite are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, ClassVar, get_args

from pydantic import BaseModel, ValidationInfo, ValidatorFunctionWrapHandler, field_validator
from pydantic_core import PydanticCustomError

from oprun.domain.escaping import UNSTORABLE, fit
from oprun.domain.escaping import escape as escape  # re-exported: the rule lives here
from oprun.domain.escaping import unstorable as unstorable

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
"""Integer columns: counts, versions and exit codes are 32-bit, sequences and ids 64-bit."""


class Unstorable(ValueError):
    """A value no backend can store; `where` is its path inside the field ("" for itself)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{escape(where) + ': ' if where else ''}{problem}")
        self.where = where
        self.problem = problem


def _text_problem(text: str) -> str | None:
    if text.isascii():  # nearly all text: no surrogate, and `in` is far faster than a search
        return "must not contain a NUL character" if "\x00" in text else None
    found = UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain a NUL character"
    return "must not contain a lone UTF-16 surrogate"


def _number_problem(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return "integer out of range (64-bit signed)"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (no NaN or Infinity)"
    return None


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def walk(value: Any, on_text: Callable[[str], str], where: str = "", *, keep: bool = False) -> Any:
    """`value` with `on_text` applied to every string (dict keys too); numbers checked.

    Lists, tuples and dicts are rebuilt only when a string in them changed. An `Input`
    model is left alone (it checks its own fields); another model's fields are checked. Raises `Unstorable` for a
    number out of range, or when `on_text` does; with `keep` (an action's result), such
    a number is kept as its JSON text (`"NaN"`, `"1180591620717411303424"`).
    """
    if isinstance(value, str):
        try:
            return on_text(value)
        except Unstorable as exc:
            raise Unstorable(where, exc.problem) from None
    if isinstance(value, dict):
        out = {
            walk(k, on_text, _join(where, k), keep=keep): walk(
                v, on_text, _join(where, k), keep=keep
            )
            for k, v in value.items()
        }
        same = len(out) == len(value) and all(
            a is c and b is d for (a, b), (c, d) in zip(out.items(), value.items(), strict=False)
        )
        return value if same else out
    if isinstance(value, list | tuple):
        items = [walk(v, on_text, _join(where, i), keep=keep) for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if isinstance(value, BaseModel) and not isinstance(value, Storable):
        # A nested model that is not an `Input` (a parameter spec): hold its fields too.
        for name, field in value:
            walk(field, on_text, _join(where, name), keep=keep)
        return value
    problem = _number_problem(value)
    if problem and keep:
        return json.dumps(value)
    if problem:
        raise Unstorable(where, problem)
    return value


def refuse(text: str) -> str:
    """`text` itself, or `Unstorable` when it holds a NUL or a lone surrogate."""
    problem = _text_problem(text)
    if problem:
        raise Unstorable("", problem)
    return text


def escape_all(value: Any) -> Any:
    """`value` (decoded JSON) with every string and key escaped; numbers left as they are."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escape_all(k): escape_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_all(v) for v in value]
    return value


def read_json(text: str) -> Any:
    """JSON as stored, made readable whatever it holds.

    A lone surrogate an older server let into a SQLite JSON column (as a `\ud800`
    escape) comes back escaped, not as text no response can encode.
    """
    value = json.loads(text)
    return escape_all(value) if "\\ud" in text else value


def storable(value: Any, *, output: bool, result: bool) -> Any:
    """A model field's `value` held to the rule: refused, or (`output`) escaped.

    `result` (an action's result, in `output`) keeps out-of-range numbers as text.
    Raises pydantic's error, so the field is named in the 400.
    """
    try:
        return walk(value, escape if output else refuse, keep=output and result)
    except Unstorable as exc:
        raise PydanticCustomError("unstorable", "{problem}", {"problem": str(exc)}) from None


@cache
def number_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of `model` typed as a number (int or float, optional or not), never bool."""

    def kinds(annotation: Any) -> set[Any]:
        args = get_args(annotation)
        return set().union(*(kinds(a) for a in args)) if args else {annotation}

    return frozenset(
        name
        for name, field in model.model_fields.items()
        if (found := kinds(field.annotation)) & {int, float} and bool not in found
    )


def no_bool_for_a_number(model: type[BaseModel], field: str | None, value: Any) -> Any:
    """`value`, unless it is a boolean for a number field (pydantic would read `true` as 1)."""
    if isinstance(value, bool) and field in number_fields(model):
        raise PydanticCustomError("number_type", "Input should be a number, not a boolean")
    return value


@cache
def max_chars(model: type[BaseModel], field: str | None) -> int | None:
    """The `max_length` of `model`'s `field` (None: it has none)."""
    info = model.model_fields.get(field or "")
    for constraint in info.metadata if info else ():
        limit = getattr(constraint, "max_length", None)  # annotated_types.MaxLen
        if isinstance(limit, int):
            return limit
    return None


def fit_output(model: type[Storable], field: str | None, value: Any) -> Any:
    """Text of an action's output escaped, then cut to the field's limit (not refused).

    A text field is cut to its `max_length` in characters; each text of a list field
    `model.line_bytes` names, to that many bytes of UTF-8. Escaping first makes the
    limit hold on what is stored.
    """
    if isinstance(value, str):
        return fit(value, chars=max_chars(model, field))
    limit = model.line_bytes.get(field or "")
    if limit is not None and isinstance(value, list):
        return [fit(v, utf8_bytes=limit) if isinstance(v, str) else v for v in value]
    return value


def _plainly_storable(value: Any) -> bool:
    """Whether `value` holds to the rule at a glance, as most field values do.

    A field validator runs for every field of every request: checking so costs a
    fraction of `walk`, which keeps every such value as it is.
    """
    kind = type(value)
    if value is None or kind is bool:
        return True
    if isinstance(value, int) and kind is int:
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, list) and kind is list:  # a batch's requests check their own fields
        return all(isinstance(item, Storable) for item in value)
    return _plain_text(value)


def _plain_text(value: Any) -> bool:
    """Whether `value` is text no rule touches: ASCII (so no surrogate), without a NUL."""
    return isinstance(value, str) and type(value) is str and value.isascii() and "\x00" not in value


def _plain_text_within(model: type[Storable], field: str | None, value: Any) -> bool:
    """Whether `value` is text `fit_output` would leave as it is: plain, and short."""
    if not _plain_text(value):
        return False
    limit = max_chars(model, field)
    return limit is None or len(value) <= limit


class Storable(BaseModel):
    """A model whose every field holds to the rule (the base of every request model).

    With `action_output`, its text is escaped instead of refused and cut to each
    field's limit once escaped (`fit_output`), and its `result` field keeps
    out-of-range numbers as text.
    """

    action_output: ClassVar[bool] = False
    line_bytes: ClassVar[Mapping[str, int]] = {}
    """With `action_output`: list fields whose every text is cut to this many bytes."""

    @field_validator("*", mode="wrap")
    @classmethod
    def _storable(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        output, result = cls.action_output, info.field_name == "result"
        value = no_bool_for_a_number(cls, info.field_name, value)
        if output and not _plain_text_within(cls, info.field_name, value):
            # Before pydantic's own checks too: a length limit refuses a lone surrogate
            # ("unable to parse raw data as a unicode string") that output must keep,
            # and an action's text is cut to the limit, escaped, rather than refused.
            value = storable(fit_output(cls, info.field_name, value), output=output, result=result)
        value = handler(value)
        if _plainly_storable(value):
            return value
        return storable(value, output=output, result=result)

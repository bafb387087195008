"""A session action's `definition` in words: what kind of action it is and what it acts on.

The definition is Deadline Cloud's tagged union: exactly one key, ``taskRun``,
``envEnter``, ``envExit``, ``syncInputJobAttachments`` (or a tag a newer server
adds). The CLI and the web UI show it as a short kind and a subject::

    {"envEnter": {"environmentId": "JobEnv"}}                       envEnter  JobEnv
    {"taskRun": {"stepId": "render", "parameters":
                 {"frame": {"int": "7"}, "eye": {"string": "left"}}}}  taskRun   render frame=7 eye=left
    {"syncInputJobAttachments": {}}                                  syncInputs

Reading never fails: a definition of an unexpected shape still gets a kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

RunnableKind = Literal["envEnter", "envExit", "taskRun"]
"""The definition tags of what a worker session runs itself (the other tags are file syncs)."""

KINDS: dict[str, str] = {
    "taskRun": "taskRun",
    "envEnter": "envEnter",
    "envExit": "envExit",
    "syncInputJobAttachments": "syncInputs",
    "syncOutputJobAttachments": "syncOutputs",
}
"""The short kind of each definition tag (the tag itself for a tag not listed)."""

TITLES: dict[str, str] = {
    "taskRun": "Task run",
    "envEnter": "Env enter",
    "envExit": "Env exit",
    "syncInputs": "Sync inputs",
    "syncOutputs": "Sync outputs",
}
"""How people read each kind (the web UI)."""


@dataclass(frozen=True)
class Described:
    """A session action's kind and what it acts on, read from its definition."""

    kind: str
    """``taskRun``, ``envEnter``, ``envExit``, ``syncInputs``, ``syncOutputs``, another tag, or
    ``unknown`` for an empty definition."""
    environment_id: str | None = None
    step_id: str | None = None
    task_id: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    """The task's parameter values as text, in the definition's order."""

    @property
    def title(self) -> str:
        """The kind in words: ``Task run``, ``Env enter``, ..."""
        return TITLES.get(self.kind, self.kind)

    @property
    def parameters_text(self) -> str:
        """``frame=7 eye=left`` (empty when there are none)."""
        return " ".join(f"{name}={value}" for name, value in self.parameters)

    @property
    def subject(self) -> str:
        """What it acts on: the environment, or the step and the task's parameters."""
        if self.environment_id is not None:
            return self.environment_id
        return " ".join(part for part in (self.step_id or "", self.parameters_text) if part)

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}".strip()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def parameter_text(value: Any) -> str:
    """A tagged parameter value (``{"int": "7"}``) as its text (``7``); anything else as JSON."""
    if isinstance(value, Mapping) and len(value) == 1:
        (inner,) = value.values()
        if isinstance(inner, str):
            return inner
    return json.dumps(value, ensure_ascii=False, default=str)


def describe(definition: Mapping[str, Any]) -> Described:
    """What a session action's `definition` says it does."""
    if not definition:
        return Described(kind="unknown")
    tag = next(iter(definition))
    kind = KINDS.get(tag, tag)
    body = definition[tag]
    if not isinstance(body, Mapping):
        return Described(kind=kind)
    params = body.get("parameters")
    parameters = (
        tuple((str(name), parameter_text(value)) for name, value in params.items())
        if isinstance(params, Mapping)
        else ()
    )
    return Described(
        kind=kind,
        environment_id=_text(body.get("environmentId")),
        step_id=_text(body.get("stepId")),
        task_id=_text(body.get("taskId")),
        parameters=parameters,
    )

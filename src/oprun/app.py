"""`App`: the registry of actions a user defines in their own module.

    from oprun import App

    app = App("media")

    @app.action(timeout=600)
    def resize(ctx, width: int, height: int = 480) -> dict:
        "Resize the input images."
        ...

The decorator returns the function unchanged, so a worker's child process can
import it again by its entrypoint (`module:qualname`). Importing this module is
cheap: it pulls in the domain models and nothing of the server or the HTTP client.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar, overload

from oprun.domain.models import ActionDefinition, ActionKind, Requirements, RetryPolicy
from oprun.domain.params import specs_from_signature

F = TypeVar("F", bound=Callable[..., Any])

_MAX_DESCRIPTION = 4096


class App:
    """A named set of actions, served by the workers that are given it."""

    def __init__(self, name: str) -> None:
        """Create an empty registry called `name` (it names the set, not a project)."""
        self.name = name
        self._definitions: dict[str, ActionDefinition] = {}

    @overload
    def action(self, fn: F, /) -> F: ...

    @overload
    def action(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        queue: str = "default",
        max_attempts: int = 3,
        cacheable: bool = False,
        description: str | None = None,
        retry: RetryPolicy | None = None,
        requirements: Requirements | None = None,
        quarantine_after: int = 3,
    ) -> Callable[[F], F]: ...

    def action(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        queue: str = "default",
        max_attempts: int = 3,
        cacheable: bool = False,
        description: str | None = None,
        retry: RetryPolicy | None = None,
        requirements: Requirements | None = None,
        quarantine_after: int = 3,
    ) -> Any:
        """Register a function as an action; use as `@app.action` or `@app.action(...)`.

        Args:
            fn: the function, when used without parentheses.
            name: the action's name; the function's name by default.
            timeout: seconds one attempt may run before it fails with `TIMEOUT`.
            queue: the queue its operations wait in.
            max_attempts: how many times a task may run before it fails for good.
            cacheable: an identical invocation of an already succeeded run is a no-op.
            description: shown in the UI; the function's docstring by default.
            retry: which failures run again and after what backoff (by default only
                `CRASHED`; interruptions always run again while attempts remain).
            requirements: what a worker must have (cpus, memory_mb, gpus, tags).
            quarantine_after: failures in a row of one operation's tasks on one worker
                before that worker takes no more of them (0: never).

        The function takes a `oprun.Context` first, then its parameters, whose
        types and defaults come from its annotations. It is returned unchanged.

        Raises:
            TypeError: `fn` takes no context argument or is not a module-level function.
            ValueError: an action of that name is already registered here.
            pydantic.ValidationError: a setting is out of range (e.g. `max_attempts=0`).
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            definition = ActionDefinition(
                name=name or func.__name__,
                kind=ActionKind.PYTHON,
                entrypoint=entrypoint_of(func),
                parameters=specs_from_signature(func),
                timeout=timeout,
                queue=queue,
                max_attempts=max_attempts,
                cacheable=cacheable,
                description=_description(func, description),
                retry=retry or RetryPolicy(),
                requirements=requirements or Requirements(),
                quarantine_after=quarantine_after,
            )
            if definition.name in self._definitions:
                raise ValueError(f"app {self.name!r} already has an action {definition.name!r}")
            self._definitions[definition.name] = definition
            return func

        if fn is not None:
            return register(fn)
        return register

    def definitions(self) -> list[ActionDefinition]:
        """Every registered action, in the order they were defined."""
        return list(self._definitions.values())

    def get(self, name: str) -> ActionDefinition:
        """The definition of action `name`; raises `KeyError` naming the known ones."""
        try:
            return self._definitions[name]
        except KeyError:
            known = ", ".join(sorted(self._definitions)) or "none"
            raise KeyError(f"app {self.name!r} has no action {name!r} (has: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __len__(self) -> int:
        return len(self._definitions)

    def __repr__(self) -> str:
        return f"App({self.name!r}, actions={sorted(self._definitions)!r})"


def entrypoint_of(fn: Callable[..., Any]) -> str:
    """The `module:qualname` under which a worker's child process imports `fn`.

    A function of a script run as `__main__` is named by the module the script
    is importable as (its `-m` name, else its file's stem, as `sys.path[0]` is
    the script's folder and the child gets the same path).

    Raises:
        TypeError: `fn` is nested in a function, or takes no context argument.
    """
    if not callable(fn) or not hasattr(fn, "__qualname__"):
        raise TypeError(f"an action must be a function, got {fn!r}")
    qualname: str = fn.__qualname__
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise TypeError(
            f"action {qualname!r} must be defined at module level, so a worker can import it"
        )
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if not params:
        raise TypeError(f"action {qualname!r} must take the context as its first argument")
    return f"{_module_name(fn.__module__)}:{qualname}"


def _module_name(module: str) -> str:
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    path = getattr(main, "__file__", None)
    if path:
        return pathlib.Path(path).stem
    return module


def _description(fn: Callable[..., Any], given: str | None) -> str:
    text = given if given is not None else (inspect.getdoc(fn) or "")
    return text[:_MAX_DESCRIPTION]


def load_object(spec: str) -> Any:
    """The object at `module:attribute` (a dotted attribute path), or `module` itself.

    The current directory is importable first, as it is for ``python -m`` and
    uvicorn: a worker started next to ``media.py`` finds ``media:app``. Worker
    child processes inherit this import path.

    Raises:
        ValueError: `spec` names no module.
        ImportError: the module cannot be imported (the message says which, and why).
        LookupError: the module has no such attribute.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ValueError(f"expected MODULE:ATTRIBUTE, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import {module_name!r}: {exc}", name=module_name) from exc
    found: Any = module
    for part in attr.split(".") if attr else ():
        try:
            found = getattr(found, part)
        except AttributeError:
            raise LookupError(f"module {module_name!r} has no attribute {attr!r}") from None
    return found


def load_app(spec: str) -> App:
    """Import an `App` from `module:attribute`, or the only `App` in `module`.

    The current directory is importable first (see `load_object`).

    Raises:
        ValueError: `spec` names no module.
        ImportError: the module cannot be imported.
        LookupError: the attribute is missing, or `module` holds no single `App`.
        TypeError: the attribute is not an `App`.
    """
    module_name, _, attr = spec.partition(":")
    found = load_object(spec)
    if attr:
        if not isinstance(found, App):
            raise TypeError(f"{spec!r} is a {type(found).__name__}, not an oprun App")
        return found
    apps = [v for v in vars(found).values() if isinstance(v, App)]
    if len(apps) != 1:
        raise LookupError(
            f"module {module_name!r} has {len(apps)} oprun Apps; name one as {module_name}:NAME"
        )
    return apps[0]

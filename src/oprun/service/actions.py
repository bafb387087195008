"""Use cases on actions: save versions, read them."""

from __future__ import annotations

from collections.abc import Callable

from oprun.domain.audit import AuditKind
from oprun.domain.errors import AccessDenied, ValidationError
from oprun.domain.models import Action, ActionDefinition, ActionKind, Page
from oprun.domain.roles import Permission
from oprun.service import cursor
from oprun.service.audit import entry
from oprun.service.auth import Principal
from oprun.store import Store


def check_definition(definition: ActionDefinition) -> ActionDefinition:
    """Reject definitions a worker could not run, naming the field; return it normalised.

    An openjd action's template is validated with openjd-model (the 400 quotes the
    model's error); the `command` shorthand becomes a one-step template; the job
    parameters the template declares become the action's parameters.
    """
    if definition.kind is ActionKind.PYTHON:
        entry = definition.entrypoint or ""
        module, _, attr = entry.partition(":")
        if not module or not attr:
            raise ValidationError(
                "a python action needs entrypoint 'package.module:function'", field="entrypoint"
            )
        if definition.template is not None or definition.command is not None:
            raise ValidationError("template and command are for openjd actions", field="template")
    else:
        definition = _openjd(definition)
    names = [p.name for p in definition.parameters]
    if len(names) != len(set(names)):
        raise ValidationError("parameter names must be unique", field="parameters")
    return definition


def _openjd(definition: ActionDefinition) -> ActionDefinition:
    # openjd-model takes 0.2 s to import: a server only pays for it once it needs it.
    from oprun.openjd.template import command_template, load_template, parameter_specs

    if (definition.template is None) == (definition.command is None):
        raise ValidationError(
            "an openjd action needs exactly one of template and command", field="template"
        )
    if definition.command is not None:
        template = command_template(definition.name, definition.command)
    else:
        assert definition.template is not None
        template = load_template(definition.template)
    declared = parameter_specs(template)
    if definition.parameters and definition.parameters != declared:
        raise ValidationError(
            "an openjd action's parameters come from its template's parameterDefinitions; "
            "leave parameters out",
            field="parameters",
        )
    return definition.model_copy(update={"template": template, "parameters": declared})


def runs_the_same(old: ActionDefinition, new: ActionDefinition) -> bool:
    """Whether `new` runs what `old` runs: same kind, entrypoint, template and command.

    Both must have passed `check_definition` (templates normalised).
    """
    return (old.kind, old.entrypoint, old.template, old.command) == (
        new.kind,
        new.entrypoint,
        new.template,
        new.command,
    )


def require_kind_right(principal: Principal, definition: ActionDefinition) -> None:
    """Refuse an `openjd` action (a template or command) to a token that may not DEPLOY.

    A worker token defines `python` actions only: its app's functions, which workers
    import and call. An `openjd` action runs a command line on every worker that claims
    it, so a worker token that could save one (even under a new name) could have an
    operator run anything across the fleet; it needs a deployer or admin token.
    """
    if definition.kind is ActionKind.PYTHON or principal.role.allows(Permission.DEPLOY):
        return
    raise AccessDenied(
        f"role {principal.role.value!r} may not define openjd action {definition.name!r} "
        "(it runs a command on the workers); an admin or deployer token may",
        role=principal.role.value,
        needs=Permission.DEPLOY.value,
        action=definition.name,
    )


def change_guard(
    principal: Principal,
) -> Callable[[ActionDefinition | None, ActionDefinition], None]:
    """The check `save_action` applies to the latest version, under the action's lock.

    Anyone with DEFINE may add a python action or a version that runs the same code (a
    worker registering its app at start; `require_kind_right` keeps openjd actions to
    DEPLOY); changing what an existing action runs needs DEPLOY.
    """

    def guard(latest: ActionDefinition | None, new: ActionDefinition) -> None:
        if latest is None or runs_the_same(latest, new) or principal.role.allows(Permission.DEPLOY):
            return
        raise AccessDenied(
            f"role {principal.role.value!r} may not change what action {new.name!r} runs "
            "(kind, entrypoint, template or command); an admin or deployer token may",
            role=principal.role.value,
            needs=Permission.DEPLOY.value,
            action=new.name,
        )

    return guard


class ActionService:
    """Defining and reading actions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def save(self, principal: Principal, definition: ActionDefinition) -> tuple[Action, bool]:
        """Save a version; returns it and whether it is new (same digest: not new)."""
        principal.require(Permission.DEFINE)
        require_kind_right(principal, definition)
        return self._store.save_action(
            principal.project_id,
            check_definition(definition),
            guard=change_guard(principal),
            actor=principal.token_id,
            audit=entry(principal, AuditKind.ACTION_SAVED),
        )

    def get(self, principal: Principal, name: str, version: int | None = None) -> Action:
        """One version (default the latest)."""
        principal.require(Permission.READ)
        return self._store.get_action(principal.project_id, name, version)

    def page(
        self, principal: Principal, page_cursor: str | None, limit: int | None
    ) -> Page[Action]:
        """The latest version of each action, by name."""
        principal.require(Permission.READ)
        project = principal.project_id
        return cursor.paged(
            page_cursor,
            limit,
            lambda after, size: self._store.list_actions(project, after, size),
            key=lambda action: action.name,
        )

    def versions(
        self, principal: Principal, name: str, page_cursor: str | None, limit: int | None
    ) -> Page[Action]:
        """Every version of one action, newest first."""
        principal.require(Permission.READ)
        project = principal.project_id
        return cursor.paged(
            page_cursor,
            limit,
            lambda after, size: self._store.list_action_versions(project, name, after, size),
            key=lambda action: action.version,
            kind=int,
        )

"""Token roles and what each may do."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    """Something a request wants to do."""

    READ = "read"
    INVOKE = "invoke"
    """Invoke, cancel, retry and delete operations."""
    DEFINE = "define"
    """Register new python actions, and new versions that run the same code as the latest."""
    DEPLOY = "deploy"
    """Define openjd actions (commands, templates) and change what an existing action runs."""
    MANAGE = "manage"
    """Create queues and tokens."""
    WORK = "work"
    """Register as a worker, claim, heartbeat and report."""


class Role(StrEnum):
    """The role of an API token within its project."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    WORKER = "worker"
    DEPLOYER = "deployer"

    def allows(self, permission: Permission) -> bool:
        """Whether a token with this role may do `permission`."""
        return permission in ROLE_PERMISSIONS[self]


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.INVOKE}),
    Role.ADMIN: frozenset(Permission),
    # A worker reads what it runs and registers the python actions it serves; it may not
    # define a command (openjd) or change what an existing action runs (an operator's next
    # invocation would run it on every worker).
    Role.WORKER: frozenset({Permission.READ, Permission.WORK, Permission.DEFINE}),
    Role.DEPLOYER: frozenset({Permission.READ, Permission.DEFINE, Permission.DEPLOY}),
}

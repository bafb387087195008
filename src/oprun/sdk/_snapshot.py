"""What `Operation` and `AsyncOperation` share: a read-only view of one operation record.

A snapshot is the operation as the server described it at one moment. It never
changes: methods that talk to the server return a new snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NoReturn

from oprun.domain import models
from oprun.domain.errors import ValidationError
from oprun.domain.status import OperationStatus

IMMUTABLE_HINT = "is an immutable snapshot; use the one poll() returns: op = op.poll()"


STATUS_ALIASES: dict[str, OperationStatus] = {
    # Datature's operation statuses
    "QUEUED": OperationStatus.QUEUED,
    "RUNNING": OperationStatus.RUNNING,
    "FINISHED": OperationStatus.SUCCEEDED,
    "ERRORED": OperationStatus.FAILED,
    "CANCELLED": OperationStatus.CANCELED,
    # Tamr's and Roboto's
    "PENDING": OperationStatus.QUEUED,
    "COMPLETED": OperationStatus.SUCCEEDED,
    "DEADLY": OperationStatus.FAILED,
}
"""Other platforms' status names (any case) and the oprun status each stands for."""


def status_of(name: OperationStatus | str, *, aliases: bool = False) -> OperationStatus:
    """The status `name` stands for; with `aliases`, Datature's, Tamr's and Roboto's names too.

    Raises:
        ValidationError: `name` is no status (a typo fails loudly).
    """
    if isinstance(name, OperationStatus):
        return name
    if name in OperationStatus.__members__:
        return OperationStatus(name)
    key = str(name).strip().upper()
    if aliases and key in OperationStatus.__members__:
        return OperationStatus(key)
    if aliases and key in STATUS_ALIASES:
        return STATUS_ALIASES[key]
    known = ", ".join(OperationStatus)
    raise ValidationError(f"status must be one of {known}, got {name!r}", field="status")


def statuses(
    raise_on: Iterable[OperationStatus | str], *, aliases: bool = False
) -> frozenset[OperationStatus]:
    """`raise_on` as a set of statuses (names are checked, so a typo fails loudly).

    With `aliases`, other platforms' names are understood too (`STATUS_ALIASES`).
    """
    if isinstance(raise_on, str):
        raise_on = (raise_on,)
    return frozenset(status_of(s, aliases=aliases) for s in raise_on)


class OperationSnapshot:
    """The fields of one operation at one moment, read-only.

    Named as the seed SDKs name them: Tamr's `state`, matrice's `action_type`,
    `project_id`, `user_id`, `step_code` and `service_name`, Datature's `kind` and
    `progress` counts, Roboto's `provenance` and status `history`.
    """

    __slots__ = ("_model",)
    _model: models.Operation

    def __init__(self, model: models.Operation) -> None:
        object.__setattr__(self, "_model", model)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} {IMMUTABLE_HINT}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} {IMMUTABLE_HINT}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, OperationSnapshot)
        return self._model == other._model

    def __hash__(self) -> int:
        return hash((self._model.id, self._model.status, self._model.updated_at))

    def __repr__(self) -> str:
        percent = self._model.progress.percent
        return (
            f"{type(self).__name__}(id={self.id!r}, kind={self.kind!r}, status={self.state!r}, "
            f"step_code={self.step_code!r}, percent={percent!r})"
        )

    # -- the record -------------------------------------------------------------------
    @property
    def model(self) -> models.Operation:
        """The domain record this snapshot wraps (`oprun.domain.models.Operation`)."""
        return self._model

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, as the API sends it."""
        return self._model.model_dump(mode="json")

    @property
    def id(self) -> str:
        """The operation's id (``op_...``)."""
        return self._model.id

    @property
    def status(self) -> OperationStatus:
        """The status when this snapshot was taken."""
        return self._model.status

    @property
    def state(self) -> str:
        """The status as a plain string (Tamr's name for it), e.g. ``"RUNNING"``."""
        return self._model.status.value

    @property
    def done(self) -> bool:
        """Whether the operation had ended (SUCCEEDED, FAILED or CANCELED)."""
        return self._model.status.is_terminal()

    def succeeded(self) -> bool:
        """Whether the operation had ended with SUCCEEDED."""
        return self._model.status is OperationStatus.SUCCEEDED

    @property
    def kind(self) -> str:
        """The name of the action it runs."""
        return self._model.kind

    @property
    def action_type(self) -> str:
        """Alias of `kind` (matrice's name for it)."""
        return self._model.kind

    @property
    def action_id(self) -> str:
        """The id of the action it runs (matrice's `action_id` is this snapshot's `id`)."""
        return self._model.action_id

    @property
    def action_version(self) -> int:
        """The version of the action it runs."""
        return self._model.action_version

    @property
    def project_id(self) -> str:
        """The project it belongs to."""
        return self._model.project_id

    @property
    def project(self) -> str:
        """Alias of `project_id`."""
        return self._model.project_id

    @property
    def queue(self) -> str:
        """The queue its work waits in."""
        return self._model.queue

    @property
    def created_by(self) -> str:
        """Who invoked it (the token's name)."""
        return self._model.created_by

    @property
    def user_id(self) -> str:
        """Alias of `created_by` (matrice's name for it)."""
        return self._model.created_by

    @property
    def step_code(self) -> str | None:
        """The phase inside RUNNING (``DOWNLOADING``, ``PROCESSING``, ... or the action's own)."""
        return self._model.step_code

    @property
    def progress(self) -> models.Progress:
        """Percent, message and counts of tasks by status."""
        return self._model.progress

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameter values it runs with (defaults filled in)."""
        return self._model.parameters

    @property
    def result(self) -> Any:
        """What the action returned (JSON), once SUCCEEDED."""
        return self._model.result

    @property
    def error(self) -> models.OperationError | None:
        """Why it failed, once FAILED."""
        return self._model.error

    @property
    def exit_reason(self) -> str | None:
        """Why it ended, in a word, when the server says."""
        return self._model.exit_reason

    @property
    def idempotency_key(self) -> str | None:
        """The key it was invoked with."""
        return self._model.idempotency_key

    @property
    def timeout(self) -> float | None:
        """Seconds the whole operation may take."""
        return self._model.timeout

    @property
    def attempts(self) -> int:
        """Attempts made so far."""
        return self._model.attempts

    @property
    def max_attempts(self) -> int:
        """Attempts allowed."""
        return self._model.max_attempts

    @property
    def worker_id(self) -> str | None:
        """The worker running (or that ran) it."""
        return self._model.worker_id

    @property
    def service(self) -> str | None:
        """Alias of `worker_id`: the worker that serves it."""
        return self._model.worker_id

    @property
    def service_name(self) -> str | None:
        """Alias of `worker_id` (matrice's name for it)."""
        return self._model.worker_id

    @property
    def created_at(self) -> datetime:
        """When it was invoked."""
        return self._model.created_at

    @property
    def updated_at(self) -> datetime:
        """When it last changed."""
        return self._model.updated_at

    @property
    def started_at(self) -> datetime | None:
        """When its work started."""
        return self._model.started_at

    @property
    def ended_at(self) -> datetime | None:
        """When it ended."""
        return self._model.ended_at

    @property
    def provenance(self) -> models.Provenance:
        """Which action version it runs and who or what started it."""
        return self._model.provenance

    @property
    def history(self) -> list[models.StatusRecord]:
        """Every status it went through, with time and detail."""
        return self._model.history


class NoOpSnapshot:
    """The read-only side of a no-op: nothing ran because the result was up to date.

    The server answers an invocation with 204 No Content when the action is
    `cacheable` and an identical invocation has already succeeded.
    """

    __slots__ = ("_kind",)
    _kind: str | None

    def __init__(self, kind: str | None = None) -> None:
        object.__setattr__(self, "_kind", kind)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, NoOpSnapshot)
        return self._kind == other._kind

    def __hash__(self) -> int:
        return hash((type(self), self._kind))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self._kind!r})"

    @property
    def id(self) -> None:
        """A no-op has no operation, hence no id."""
        return None

    @property
    def kind(self) -> str | None:
        """The name of the action that was invoked, when known."""
        return self._kind

    @property
    def status(self) -> OperationStatus:
        """Always SUCCEEDED: the result is up to date."""
        return OperationStatus.SUCCEEDED

    @property
    def state(self) -> str:
        """Always ``"SUCCEEDED"``."""
        return OperationStatus.SUCCEEDED.value

    @property
    def done(self) -> bool:
        """Always true."""
        return True

    def succeeded(self) -> bool:
        """Always true."""
        return True

    @property
    def step_code(self) -> None:
        """A no-op has no step."""
        return None

    @property
    def progress(self) -> models.Progress:
        """Complete."""
        return models.Progress(percent=100.0)

    @property
    def result(self) -> None:
        """A no-op carries no result: fetch it from the operation that produced it."""
        return None

    @property
    def error(self) -> None:
        """A no-op never fails."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the no-op."""
        return {"id": None, "kind": self._kind, "status": self.state, "noop": True}


def pick(name: str, value: float | None, alias: str, alias_value: float | None) -> float | None:
    """One of two spellings of an argument (``timeout`` / ``timeout_seconds``), not both."""
    if alias_value is None:
        return value
    if value is not None:
        raise TypeError(f"give {name} or {alias}, not both")
    return alias_value

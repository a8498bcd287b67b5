"""Exceptions raised by pgconductor, and the one place SQLSTATEs become them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg


class PgConductorError(Exception):
    """Base class of every pgconductor error."""


class InvalidInput(PgConductorError, ValueError):
    """Bad input refused before anything was written; `input` names it."""

    def __init__(self, input: str, problem: str) -> None:
        super().__init__(f"invalid {input}: {problem}")
        self.input = input
        self.problem = problem


class UnknownTask(InvalidInput):
    """A task name the Conductor does not know (it was given its task list)."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__("task_name", f"unknown task {name!r}; known tasks: {sorted(known)}")
        self.name = name


class NotSupported(PgConductorError):
    """The installed extension version does not support this yet (SQLSTATE 0A000)."""


class FakeTimeNotAllowed(PgConductorError):
    """Fake time was asked for in a database that does not allow it (SQLSTATE PGC02)."""


class LeaseExpired(PgConductorError):
    """The worker is not registered or its lease expired (SQLSTATE PGC03); it registers again."""


class ExtensionNotAvailable(PgConductorError):
    """The extension files are not installed on the Postgres server."""


class UnknownExecution(PgConductorError, LookupError):
    """No execution has this id (never existed, or removed by retention)."""


class ExecutionFailed(PgConductorError):
    """The execution ended failed; carries the stored error of its last attempt."""

    def __init__(self, execution_id: UUID, error: dict[str, Any] | None) -> None:
        error = error or {}
        self.execution_id = execution_id
        self.error_type: str = str(error.get("type", "Error"))
        self.error_message: str = str(error.get("message", ""))
        self.traceback: str | None = error.get("traceback")
        super().__init__(f"execution {execution_id} failed: {self.error_type}: {self.error_message}")


class ExecutionCancelled(ExecutionFailed):
    """The execution was cancelled; `error_message` is the reason."""


class WaitTimeout(PgConductorError, TimeoutError):
    """`wait_for` gave up before the execution finished (it keeps going)."""


class InvalidResult(PgConductorError):
    """A handler returned something that is not JSON or does not match `returns`."""


class Cancelled(PgConductorError):
    """Raised inside a handler whose execution was cancelled (by ctx.step / ctx.checkpoint);
    the execution ends cancelled and is not retried."""


class Released(PgConductorError):
    """Raised by ctx.step / ctx.checkpoint when the worker is stopping: the execution goes
    back to pending (attempt not counted, steps kept) and resumes on another worker."""


class WindowClosed(Released):
    """Raised by ctx.step / ctx.checkpoint when the task's time window has closed: the
    execution waits (attempt not counted, steps kept) until `opens_at`, the next opening."""

    def __init__(self, message: str, opens_at: datetime) -> None:
        super().__init__(message)
        self.opens_at = opens_at


class ChildFailed(PgConductorError):
    """Raised by ctx.invoke when the child execution failed for good or was cancelled;
    `status` is "failed" or "cancelled", `error_type`/`error_message` its stored error.
    The parent may catch it; uncaught, it fails the parent's attempt."""

    def __init__(self, step: str, child_id: UUID, status: str, error: dict[str, Any] | None) -> None:
        error = error or {}
        self.step = step
        self.child_id = child_id
        self.status = status
        self.error_type: str = str(error.get("type", "Error"))
        self.error_message: str = str(error.get("message", ""))
        super().__init__(
            f"child {child_id} of step {step!r} {status}: {self.error_type}: {self.error_message}"
        )


class ChildTimeout(PgConductorError, TimeoutError):
    """Raised by ctx.invoke when `timeout_ms` passed before the child finished (the child
    keeps running; its later outcome is not seen by the parent)."""

    def __init__(self, step: str, child_id: UUID, timeout_ms: int | None) -> None:
        self.step = step
        self.child_id = child_id
        super().__init__(f"child {child_id} of step {step!r} did not finish within {timeout_ms} ms")


def translate(exc: psycopg.Error) -> Exception:
    """Map a database error to the pgconductor exception users branch on."""
    state = exc.sqlstate
    diag = exc.diag
    if state == "PGC01":
        detail = diag.message_detail or ""
        name = detail.split(" = ", 1)[0] if " = " in detail else "input"
        message = diag.message_primary or str(exc)
        problem = message.split(": ", 2)[-1]
        err: Exception = InvalidInput(name, f"{problem} ({detail})" if detail else problem)
    elif state == "PGC02":
        err = FakeTimeNotAllowed(f"{diag.message_primary} ({diag.message_hint})")
    elif state == "PGC03":
        err = LeaseExpired(f"{diag.message_primary} ({diag.message_detail})")
    elif state == "0A000":
        err = NotSupported(f"{diag.message_primary} ({diag.message_detail})")
    else:
        return exc
    err.__cause__ = exc
    return err

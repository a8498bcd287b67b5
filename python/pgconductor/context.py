"""What a handler sees: its event, its context and the cancellation signal."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from .errors import PgConductorError

logger = logging.getLogger("pgconductor")


@dataclass(slots=True)
class TaskEvent:
    """The event a handler runs for: `name` is "pgconductor.invoke" for invocations."""

    name: str
    payload: Any


class AbortSignal:
    """Set when the execution is cancelled or the worker must stop it."""

    __slots__ = ("_event", "_loop", "aborted", "reason")

    def __init__(self) -> None:
        self.aborted = False
        self.reason: str | None = None
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def abort(self, reason: str) -> None:
        """Mark the signal aborted (first reason wins) and wake waiters."""
        if self.aborted:
            return
        self.aborted = True
        self.reason = reason
        if self._event is not None:
            self._event.set()

    async def wait(self) -> str | None:
        """Wait until aborted; returns the reason."""
        if not self.aborted:
            if self._event is None:
                self._event = asyncio.Event()
            await self._event.wait()
        return self.reason


class TaskContext:
    """The `ctx` of a handler: ids, attempt, logger, signal and the Conductor's context."""

    __slots__ = ("_logger", "_values", "attempt", "execution_id", "signal", "task_name")

    def __init__(self, execution_id: UUID, task_name: str, attempt: int, values: dict[str, Any]) -> None:
        self.execution_id = execution_id
        self.task_name = task_name
        self.attempt = attempt
        self.signal = AbortSignal()
        self._values = values
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry task, execution id and attempt."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logger,
                {
                    "task": self.task_name,
                    "execution_id": str(self.execution_id),
                    "attempt": self.attempt,
                },
            )
        return self._logger

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"ctx has no attribute {name!r} (Conductor context keys: {sorted(self._values)})"
            ) from None


class BatchContext:
    """The `ctx` of a batch handler: logger and signal. Durable helpers (step, sleep, invoke,
    checkpoint) act on one execution and are not available for a group."""

    __slots__ = ("_logger", "executions", "signal", "task_name")

    def __init__(self, task_name: str, executions: list[tuple[UUID, int]]) -> None:
        self.task_name = task_name
        self.executions = executions  # (execution id, attempt) of each event, in event order
        self.signal = AbortSignal()
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def execution_ids(self) -> list[UUID]:
        return [execution_id for execution_id, _ in self.executions]

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the task and the group's execution ids."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logger,
                {"task": self.task_name, "execution_ids": [str(i) for i in self.execution_ids]},
            )
        return self._logger

    def _unavailable(self, name: str) -> PgConductorError:
        return PgConductorError(
            f"ctx.{name} is not available in batch handlers (task {self.task_name!r}): "
            "it acts on one execution, and a batch handler runs a group"
        )

    async def step(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unavailable("step")

    async def sleep(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unavailable("sleep")

    async def invoke(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unavailable("invoke")

    async def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unavailable("checkpoint")

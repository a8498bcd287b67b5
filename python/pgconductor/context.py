"""What a handler sees: its event, its context and the cancellation signal."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID

import pydantic

from .errors import Cancelled, InvalidInput, InvalidResult, LeaseExpired, PgConductorError, Released
from .task import check_name, to_json

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


class SleepRequested(BaseException):
    """Raised by ctx.sleep to hand the execution back until its wake-up time. A
    BaseException, so that handlers catching Exception do not swallow it."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name, seconds)
        self.name = name
        self.seconds = seconds


class StepStore(Protocol):
    """What a context needs from its worker: whether it is stopping, and saving steps."""

    @property
    def stopping(self) -> bool: ...

    async def save_step(
        self, execution_id: UUID, attempt: int, name: str, result_json: str
    ) -> dict[str, Any]: ...


class TaskContext:
    """The `ctx` of a handler: ids, attempt, logger, signal, durable steps and checkpoints,
    and every key of the Conductor's context as an attribute."""

    __slots__ = (
        "_cancel_reason",
        "_lease_lost",
        "_logger",
        "_steps",
        "_store",
        "_values",
        "attempt",
        "execution_id",
        "signal",
        "task_name",
    )

    def __init__(
        self,
        execution_id: UUID,
        task_name: str,
        attempt: int,
        values: dict[str, Any],
        steps: dict[str, Any] | None = None,
        store: StepStore | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.task_name = task_name
        self.attempt = attempt
        self.signal = AbortSignal()
        self._values = values
        self._steps: dict[str, Any] = dict(steps or {})
        self._store = store
        self._cancel_reason: str | None = None
        self._lease_lost = False
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    def cancel_requested(self, reason: str) -> None:
        """The execution was cancelled: set the signal; the next step/checkpoint raises."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        self.signal.abort(reason)

    def lease_lost(self) -> None:
        """The worker lost its lease: this attempt may run elsewhere too."""
        self._lease_lost = True
        self.signal.abort("lease lost")

    def _check(self) -> None:
        if self._cancel_reason is not None:
            raise Cancelled(self._cancel_reason)
        if self._lease_lost:
            raise LeaseExpired(f"execution {self.execution_id}: the worker lost its lease")
        if self._store is not None and self._store.stopping:
            raise Released(f"execution {self.execution_id}: the worker is stopping")

    async def checkpoint(self) -> None:
        """Return at once, unless the execution was cancelled (raises Cancelled: it ends
        cancelled) or the worker is stopping (raises Released: it goes back to pending,
        the attempt not counted, and resumes elsewhere with its steps)."""
        self._check()

    async def sleep(self, name: str, delay: float | timedelta) -> None:
        """Sleep durably: the execution becomes waiting and the worker is freed; it resumes
        (from the start of the handler, its earlier steps returning their saved results)
        after `delay` (milliseconds, or a timedelta), and this call then returns at once.
        Not counted as an attempt. `name` identifies the sleep like a step name."""
        check_name("sleep name", name, 200)
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, int | float) and not isinstance(delay, bool):
            seconds = delay / 1000
        else:
            raise InvalidInput("delay", f"must be milliseconds or a timedelta, got {delay!r}")
        if not 0 <= seconds <= 3_153_600_000:
            raise InvalidInput("delay", f"must be between 0 and 100 years, got {delay!r}")
        self._check()
        if name in self._steps:
            return
        raise SleepRequested(name, seconds)

    async def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` (sync or async) at most once per execution and return its JSON result;
        on every later run (retry, resume) return the saved result without calling it.
        A step that raised runs again on the next attempt. Reusing a name returns the
        first result. A step is also a checkpoint, before it runs."""
        check_name("step name", name, 200)
        self._check()
        if name in self._steps:
            return self._steps[name]
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, pydantic.BaseModel):
            result = result.model_dump(mode="json")
        try:
            text = to_json(result)
        except (TypeError, ValueError) as exc:
            raise InvalidResult(f"step {name!r} returned a value that is not valid JSON: {exc}") from exc
        if self._store is None:
            raise PgConductorError("ctx.step needs a worker (this context has none)")
        saved = await self._store.save_step(self.execution_id, self.attempt, name, text)
        if not saved["held"]:
            self._lease_lost = True
            raise LeaseExpired(f"execution {self.execution_id} is no longer held by this worker")
        value = saved["result"]
        self._steps[name] = value
        if saved["cancel_reason"] is not None:
            self.cancel_requested(saved["cancel_reason"])
        return value

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

    def cancel_requested(self, reason: str) -> None:
        self.signal.abort(reason)

    def lease_lost(self) -> None:
        self.signal.abort("lease lost")

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

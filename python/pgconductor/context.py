"""What a handler sees: its event, its context and the cancellation signal."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import pydantic

from .errors import (
    Cancelled,
    ChildFailed,
    ChildTimeout,
    InvalidInput,
    InvalidResult,
    LeaseExpired,
    PgConductorError,
    Released,
    WindowClosed,
)
from .task import TaskDefinition, check_name, to_json

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


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called from the thread that runs `loop` (blocking there would deadlock)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class SleepRequested(BaseException):
    """Raised by ctx.sleep to hand the execution back until its wake-up time. A
    BaseException, so that handlers catching Exception do not swallow it."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name, seconds)
        self.name = name
        self.seconds = seconds


class WaitRequested(BaseException):
    """Raised by ctx.invoke once the database has made the execution wait for its child:
    the worker reports nothing for it. A BaseException, like SleepRequested."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class StepStore(Protocol):
    """What a context needs from its worker: whether it is stopping, saving steps,
    starting children and asking the database whether the execution may go on."""

    @property
    def stopping(self) -> bool: ...

    async def save_step(
        self, execution_id: UUID, run: int, name: str, result_json: str
    ) -> dict[str, Any]: ...

    def child_definition(self, task: str | TaskDefinition[Any]) -> TaskDefinition[Any]: ...

    async def invoke_child(
        self,
        execution_id: UUID,
        run: int,
        name: str,
        definition: TaskDefinition[Any],
        payload_json: str,
        timeout_ms: int | None,
    ) -> dict[str, Any]: ...

    async def checkpoint(self, execution_id: UUID, run: int) -> dict[str, Any]: ...


class TaskContext:
    """The `ctx` of a handler: ids, attempt, logger, signal, durable steps and checkpoints,
    and every key of the Conductor's context as an attribute."""

    __slots__ = (
        "_cancel_reason",
        "_handed_back",
        "_lease_lost",
        "_logger",
        "_loop",
        "_run_token",
        "_steps",
        "_store",
        "_values",
        "_windowed",
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
        windowed: bool = False,
        run: int | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.task_name = task_name
        self.attempt = attempt
        if store is not None and run is None:
            # The attempt number repeats after a sleep, a wait or a release: quoting it
            # could let a later run's state pass for this one's.
            raise PgConductorError("a TaskContext with a worker needs the claim's run token (run=)")
        self._run_token = attempt if run is None else run  # the claim's run token, quoted to the database
        self.signal = AbortSignal()
        self._values = values
        self._steps: dict[str, Any] = dict(steps or {})
        self._store = store
        self._windowed = windowed  # its task has a time window: checks ask the database
        self._cancel_reason: str | None = None
        self._lease_lost = False
        self._handed_back = False  # ctx.invoke made it wait: this run has nothing more to do
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def cancel_requested(self, reason: str) -> None:
        """The execution was cancelled: set the signal; the next step/checkpoint raises."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        self.signal.abort(reason)

    def lease_lost(self) -> None:
        """The worker lost its lease: this attempt may run elsewhere too."""
        self._lease_lost = True
        self.signal.abort("lease lost")

    @property
    def handed_back(self) -> bool:
        """True once ctx.invoke made the execution wait for its child (this run is over)."""
        return self._handed_back

    def _check(self) -> None:
        if self._handed_back:
            raise PgConductorError(
                f"execution {self.execution_id} waits for its child: this run must end "
                "(do not catch the BaseException ctx.invoke raises)"
            )
        if self._cancel_reason is not None:
            raise Cancelled(self._cancel_reason)
        if self._lease_lost:
            raise LeaseExpired(f"execution {self.execution_id}: the worker lost its lease")
        if self._store is not None and self._store.stopping:
            raise Released(f"execution {self.execution_id}: the worker is stopping")

    def _store_or_fail(self, what: str) -> StepStore:
        if self._store is None:
            raise PgConductorError(f"ctx.{what} needs a worker (this context has none)")
        return self._store

    async def _ask(self) -> None:
        """For tasks with a time window: ask the database whether the execution may go on
        (one round trip); raises WindowClosed when the window has closed."""
        if not self._windowed:
            return
        answer = await self._store_or_fail("checkpoint").checkpoint(self.execution_id, self._run_token)
        if not answer["held"]:
            self._lease_lost = True
            raise LeaseExpired(f"execution {self.execution_id} is no longer held by this worker")
        if answer["cancel_reason"] is not None:
            self.cancel_requested(answer["cancel_reason"])
            self._check()
        if answer["window_opens_at"] is not None:
            opens_at = datetime.fromisoformat(answer["window_opens_at"])
            raise WindowClosed(
                f"execution {self.execution_id}: the window of task {self.task_name!r} is closed "
                f"until {opens_at.isoformat()}",
                opens_at,
            )

    async def checkpoint(self) -> None:
        """Return at once, unless the execution was cancelled (raises Cancelled: it ends
        cancelled), the worker is stopping (raises Released: it goes back to pending, the
        attempt not counted, and resumes elsewhere with its steps) or the task's window has
        closed (raises WindowClosed: it waits until the window opens, attempt not counted).
        Tasks with a window pay one round trip per checkpoint to ask the database."""
        self._check()
        await self._ask()

    def _sleep_seconds(self, name: str, delay: float | timedelta) -> float:
        check_name("sleep name", name, 200)
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, int | float) and not isinstance(delay, bool):
            seconds = delay / 1000
        else:
            raise InvalidInput("delay", f"must be milliseconds or a timedelta, got {delay!r}")
        if not 0 <= seconds <= 3_153_600_000:
            raise InvalidInput("delay", f"must be between 0 and 100 years, got {delay!r}")
        return seconds

    async def sleep(self, name: str, delay: float | timedelta) -> None:
        """Sleep durably: the execution becomes waiting and the worker is freed; it resumes
        (from the start of the handler, its earlier steps returning their saved results)
        after `delay` (milliseconds, or a timedelta), and this call then returns at once.
        Not counted as an attempt. `name` identifies the sleep like a step name."""
        seconds = self._sleep_seconds(name, delay)
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
        await self._ask()
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        return await self._save(name, result)

    async def _save(self, name: str, result: Any) -> Any:
        """Save a step's result (one round trip) and return the stored value."""
        if isinstance(result, pydantic.BaseModel):
            result = result.model_dump(mode="json")
        try:
            text = to_json(result)
        except (TypeError, ValueError) as exc:
            raise InvalidResult(f"step {name!r} returned a value that is not valid JSON: {exc}") from exc
        saved = await self._store_or_fail("step").save_step(self.execution_id, self._run_token, name, text)
        if not saved["held"]:
            self._lease_lost = True
            raise LeaseExpired(f"execution {self.execution_id} is no longer held by this worker")
        value = saved["result"]
        self._steps[name] = value
        if saved["cancel_reason"] is not None:
            self.cancel_requested(saved["cancel_reason"])
        return value

    async def invoke(
        self,
        name: str,
        task: str | TaskDefinition[Any],
        payload: Any = None,
        timeout_ms: int | None = None,
    ) -> Any:
        """Run a child execution of `task` and return its result. The child is created once
        per (execution, `name`), even across retries; meanwhile this execution waits and
        frees its worker (not an attempt), and resumes when the child finishes, its earlier
        steps returning their saved results. Raises ChildFailed when the child failed for
        good or was cancelled, and ChildTimeout (a TimeoutError) when `timeout_ms` passed
        first (the child keeps running). The outcome is saved as the step `name`."""
        check_name("step name", name, 200)
        if timeout_ms is not None and (type(timeout_ms) is not int or timeout_ms <= 0):
            raise InvalidInput("timeout_ms", f"must be None or a positive integer, got {timeout_ms!r}")
        store = self._store_or_fail("invoke")
        definition = store.child_definition(task)
        self._check()
        if name not in self._steps:
            payload_json = to_json(definition.dump_payload({} if payload is None else payload))
            answer = await store.invoke_child(
                self.execution_id, self._run_token, name, definition, payload_json, timeout_ms
            )
            if not answer["held"]:
                self._lease_lost = True
                raise LeaseExpired(f"execution {self.execution_id} is no longer held by this worker")
            if answer.get("cancel_reason") is not None:
                self.cancel_requested(answer["cancel_reason"])
                self._check()
            if answer.get("waiting"):
                self._handed_back = True
                raise WaitRequested(name)
            self._steps[name] = answer["outcome"]
        return self._child_outcome(name, definition, self._steps[name], timeout_ms)

    def _child_outcome(
        self, name: str, definition: TaskDefinition[Any], outcome: Any, timeout_ms: int | None
    ) -> Any:
        if not (isinstance(outcome, dict) and "child_id" in outcome and "status" in outcome):
            raise InvalidInput("name", f"step {name!r} holds a step result, not a child's outcome")
        child_id = UUID(outcome["child_id"])
        status = outcome["status"]
        if status == "completed":
            return definition.parse_result(outcome["result"])
        if status == "timeout":
            raise ChildTimeout(name, child_id, timeout_ms)
        raise ChildFailed(name, child_id, status, outcome.get("error"))

    # --- blocking twins for plain `def` handlers (they run in a worker thread) ---------

    def _refuse_in_loop(self, what: str) -> None:
        """The twins block their thread: on the event loop's own thread they would stall
        every handler of the worker (or deadlock), so they refuse before doing anything."""
        if self._loop is not None and _in_loop(self._loop):
            raise PgConductorError(
                f"ctx.{what}_sync blocks: in an async handler, use `await ctx.{what}(...)`"
            )

    def _run(self, what: str, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a context coroutine on the worker's event loop from a handler thread."""
        loop = self._loop
        if loop is None or not loop.is_running():
            coro.close()
            raise PgConductorError(f"ctx.{what}_sync needs a running worker")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def checkpoint_sync(self) -> None:
        """Blocking twin of `checkpoint`, for plain `def` handlers."""
        self._refuse_in_loop("checkpoint")
        self._check()
        if self._windowed:
            self._run("checkpoint", self._ask())

    def sleep_sync(self, name: str, delay: float | timedelta) -> None:
        """Blocking twin of `sleep`, for plain `def` handlers."""
        self._refuse_in_loop("sleep")
        seconds = self._sleep_seconds(name, delay)
        self._check()
        if name in self._steps:
            return
        raise SleepRequested(name, seconds)

    def step_sync(self, name: str, fn: Callable[[], Any]) -> Any:
        """Blocking twin of `step`, for plain `def` handlers: `fn` runs in the handler's thread."""
        self._refuse_in_loop("step")
        check_name("step name", name, 200)
        self._check()
        if name in self._steps:
            return self._steps[name]
        if self._windowed:
            self._run("step", self._ask())
        result = fn()
        if inspect.isawaitable(result):
            raise InvalidInput("fn", f"step {name!r}: step_sync needs a plain function; use `await ctx.step`")
        return self._run("step", self._save(name, result))

    def invoke_sync(
        self,
        name: str,
        task: str | TaskDefinition[Any],
        payload: Any = None,
        timeout_ms: int | None = None,
    ) -> Any:
        """Blocking twin of `invoke`, for plain `def` handlers."""
        self._refuse_in_loop("invoke")
        return self._run("invoke", self.invoke(name, task, payload, timeout_ms))

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

    def step_sync(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unavailable("step_sync")

    def sleep_sync(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unavailable("sleep_sync")

    def invoke_sync(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unavailable("invoke_sync")

    def checkpoint_sync(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unavailable("checkpoint_sync")

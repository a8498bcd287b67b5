"""One worker: the claim -> run -> flush pipeline of a queue.

Claims run on one connection, result flushes on another, so both overlap with the
handlers. Outcomes are buffered as JSON fragments and written by one
`pgconductor.report` call per flush. Nothing is dropped when a connection fails:
calls are retried after a reconnect with backoff, and claims whose answer was lost
are released by `pgconductor.release_orphans`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg

from . import sql
from .batched import BatchedCall
from .connection import DedicatedConnection
from .context import BatchContext, SleepRequested, TaskContext, TaskEvent, WaitRequested
from .errors import InvalidInput, InvalidResult, LeaseExpired, Released
from .task import Task, TaskDefinition

if TYPE_CHECKING:
    from .conductor import Conductor

logger = logging.getLogger("pgconductor.worker")


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker runs: handlers at once, polling fallback, flush cadence, claim size."""

    concurrency: int = 10
    poll_interval_ms: int = 1000
    flush_interval_ms: int = 50
    fetch_batch_size: int | None = None  # default: concurrency
    flush_batch_size: int = 500
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "poll_interval_ms", "flush_interval_ms", "flush_batch_size"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidInput(name, f"must be a positive integer, got {value!r}")
        if self.fetch_batch_size is not None and (
            type(self.fetch_batch_size) is not int or self.fetch_batch_size < 1
        ):
            raise InvalidInput(
                "fetch_batch_size", f"must be a positive integer, got {self.fetch_batch_size!r}"
            )
        if not isinstance(self.shutdown_timeout_s, int | float) or self.shutdown_timeout_s < 0:
            raise InvalidInput("shutdown_timeout_s", f"must be >= 0, got {self.shutdown_timeout_s!r}")


def _error_json(exc: BaseException) -> str:
    # jsonb refuses NUL characters: an error text must never make a report fail.
    return json.dumps(
        {
            "type": type(exc).__name__,
            "message": str(exc).replace("\x00", "\\0"),
            "traceback": "".join(traceback.format_exception(exc)).replace("\x00", "\\0"),
        }
    )


def _control_flow(exc: BaseException) -> BaseException:
    """The exception that decides a run's outcome: a group raised by an asyncio.TaskGroup
    (or an ExceptionGroup) that carries a wait, a sleep or a release is decided by it."""
    if isinstance(exc, BaseExceptionGroup):
        for kind in (WaitRequested, SleepRequested, Released, asyncio.CancelledError):
            match = exc.subgroup(kind)
            if match is not None:
                leaf: BaseException = match
                while isinstance(leaf, BaseExceptionGroup):
                    leaf = leaf.exceptions[0]
                return leaf
    return exc


RunningKey = tuple[UUID, int]  # (execution id, run): one execution may be claimed again


class Worker:
    """Runs the tasks of one queue: create it with `Conductor.create_worker`, run it with an
    `Orchestrator`."""

    def __init__(
        self,
        conductor: Conductor,
        queue: str,
        tasks: list[Task],
        config: WorkerConfig,
        name: str | None = None,
    ) -> None:
        self.id: UUID = uuid.uuid4()
        self.conductor = conductor
        self.queue = queue
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}
        self.config = config
        self.name = name or f"{queue}-{self.id.hex[:8]}"
        self._batch = min(config.fetch_batch_size or config.concurrency, config.concurrency)
        self._task_names = sorted(self.tasks)
        # Limited and batch tasks make a claim hand out less than asked; limited tasks free
        # slots on completion; partial batch groups come due after their timeout.
        self._limited = any(t.concurrency is not None for t in tasks)
        self._special = self._limited or any(t.batch is not None for t in tasks)
        batch_timeouts = [t.batch["timeout_ms"] for t in tasks if t.batch is not None]
        self._poll_s = config.poll_interval_ms / 1000
        if batch_timeouts:
            self._poll_s = min(self._poll_s, max(0.01, min(batch_timeouts) / 1000))
        # Every running execution -> its handler run (a batch group's members share one).
        self._running: dict[RunningKey, tuple[asyncio.Task[None], TaskContext | BatchContext, bool]] = {}
        self._active = 0  # handler runs in progress: what `concurrency` limits
        # Handler runs claimed and not yet reported, per execution: a parent that waited for a
        # child may be claimed again while its previous run still unwinds (so, a count).
        self._unreported: dict[UUID, int] = {}
        self._buffer: list[tuple[UUID, str]] = []
        self._kick = asyncio.Event()
        self._flush_wake = asyncio.Event()
        self._stopping = False
        self._closing = False
        self._idle = False
        self._executor: ThreadPoolExecutor | None = None
        self.lease_seconds = 60
        self.registered_name = self.name
        self.claimed = self.completed = self.failed = self.released = self.slept = self.waited = 0

    # --- signals from the orchestrator -------------------------------------------

    def wake(self) -> None:
        """New work may be ready (NOTIFY, reconnect): claim now."""
        self._kick.set()

    def request_stop(self) -> None:
        """Stop claiming; running handlers get the shutdown grace period."""
        self._stopping = True
        self._kick.set()

    def cancel_requested(self, execution_id: UUID, reason: str) -> None:
        """Set the signal of a running execution whose cancellation was requested."""
        for (running_id, _), (_, ctx, _) in self._running.items():
            if running_id == execution_id:
                ctx.cancel_requested(reason)

    def lease_lost(self) -> None:
        """The database forgot this worker (its lease lapsed): whatever runs here may run
        elsewhere too, so every handler is told to stop; the worker registers again."""
        for _, ctx, _ in self._running.values():
            ctx.lease_lost()

    @property
    def stopping(self) -> bool:
        """True once the worker stops claiming: steps and checkpoints release executions."""
        return self._stopping

    async def save_step(self, execution_id: UUID, run: int, name: str, result_json: str) -> dict[str, Any]:
        """Save one step result (batched with the saves of other handlers: at most one round trip)."""
        name_json = json.dumps(name)
        return await self._step_saves.submit(
            f'{{"id":"{execution_id}","run":{run},"name":{name_json},"result":{result_json}}}'
        )

    def child_definition(self, task: str | TaskDefinition[Any]) -> TaskDefinition[Any]:
        """The definition of a child task (UnknownTask if the Conductor has a task list without it)."""
        return self.conductor.definition(task)

    async def invoke_child(
        self,
        execution_id: UUID,
        run: int,
        name: str,
        definition: TaskDefinition[Any],
        payload_json: str,
        timeout_ms: int | None,
    ) -> dict[str, Any]:
        """Start a child once per (execution, step) and make the execution wait (batched with
        the children other handlers start: at most one round trip)."""
        item = {
            "id": str(execution_id),
            "run": run,
            "step": name,
            "task_name": definition.name,
            "timeout_ms": timeout_ms,
            "queue": self.conductor.known_queue(definition.name),
        }
        return await self._child_starts.submit(f'{json.dumps(item)[:-1]},"payload":{payload_json}}}')

    async def checkpoint(self, execution_id: UUID, run: int) -> dict[str, Any]:
        """Ask the database whether a held execution may go on (windowed tasks)."""
        async with self.conductor.connection() as conn:
            return await sql.checkpoint(conn, self.id, execution_id, run)

    def held(self) -> list[UUID]:
        """Every execution this worker runs or has yet to report (for the heartbeat)."""
        return list(self._unreported)

    async def register(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Declare this worker and its tasks (idempotent)."""
        tasks = json.dumps([t.registration() for t in self.tasks.values()])
        await sql.register_worker(conn, self.id, self.registered_name, tasks, self.lease_seconds)

    def info(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "queue": self.queue,
            "tasks": self._task_names,
            "running": len(self._running),
            "active_runs": self._active,
            "buffered": len(self._buffer),
            "claimed": self.claimed,
            "completed": self.completed,
            "failed": self.failed,
            "released": self.released,
            "slept": self.slept,
            "waited": self.waited,
        }

    # --- the pipeline --------------------------------------------------------------

    async def run(self, drain: bool = False) -> None:
        """Claim and run until stopped (or, with drain, until nothing is ready); then let
        handlers finish within the grace period, release the rest and flush everything."""
        # A drained worker may be run again (Orchestrator.drain runs rounds): fresh run state.
        self._closing = False
        self._idle = False
        self._kick.clear()
        self._claim_conn = DedicatedConnection(self.conductor.dsn, "claim")
        self._flush_conn = DedicatedConnection(self.conductor.dsn, "flush")
        # Step saves and child starts, each batched across handlers on its own connection.
        self._step_saves = BatchedCall(
            DedicatedConnection(self.conductor.dsn, "steps"),
            lambda c, items: sql.save_steps(c, self.id, items),
        )
        # A child start is idempotent per run (sent again after a lost answer, it answers
        # "waiting" once more), so it is sent again after a lost connection.
        self._child_starts = BatchedCall(
            DedicatedConnection(self.conductor.dsn, "children"),
            lambda c, items: sql.invoke_children(c, self.id, items),
        )
        flusher = asyncio.create_task(self._flush_loop())
        try:
            await self._claim_loop(drain)
            await self._finish_running()
        finally:
            self._closing = True
            self._flush_wake.set()
            await flusher
            await self._claim_conn.close()
            await self._flush_conn.close()
            await self._step_saves.close()
            await self._child_starts.close()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    async def _claim_loop(self, drain: bool) -> None:
        concurrency = self.config.concurrency
        threshold = max(1, self._batch // 4)
        poll_s = self._poll_s
        while not self._stopping:
            free = concurrency - self._active
            if free < threshold:
                # Wait for completions; clear first so an old kick cannot spin the loop.
                self._idle = False
                self._kick.clear()
                if concurrency - self._active < threshold and not self._stopping:
                    await self._wait_kick(poll_s)
                continue
            limit = min(free, self._batch)
            self._kick.clear()
            rows = await self._claim(limit)
            # A full claim: more is likely ready. With limited or batch tasks a claim may hand
            # out less than asked (they take part of it), so any work found means look again.
            started = self._start(rows)
            if started == limit or (self._special and started):
                continue
            self._idle = True
            if drain and not rows and not self._running:
                if await self._drained():
                    return
                continue
            await self._wait_kick(poll_s)

    async def _wait_kick(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._kick.wait(), timeout)
        except TimeoutError:
            pass

    async def _drained(self) -> bool:
        """True when, after flushing every outcome, a claim still finds nothing ready."""
        while self._buffer or self._unreported:
            self._flush_wake.set()
            await asyncio.sleep(0.005)
        rows = await self._claim(self._batch)
        self._start(rows)
        return not rows and not self._running

    async def _claim(self, limit: int) -> list[sql.ClaimedExecution]:
        """One claim; never raises: failures are logged, the connection is reopened after
        a backoff (fresh prepared statements, e.g. after an extension upgrade)."""
        try:
            conn = await self._claim_conn.get()
            if self._claim_conn.lost:
                await sql.release_orphans(conn, self.id, list(self._unreported))
                self._claim_conn.lost = False
            try:
                rows = await sql.claim(conn, self.id, self.queue, self._task_names, limit)
            except LeaseExpired:
                logger.warning("lease expired; registering again", extra={"worker": self.name})
                self.lease_lost()
                await self.register(conn)
                rows = await sql.claim(conn, self.id, self.queue, self._task_names, limit)
        except psycopg.OperationalError as exc:
            await self._claim_conn.failed(exc)
            return []
        except Exception as exc:
            logger.exception("claim failed: %s: %s", type(exc).__name__, exc, extra={"worker": self.name})
            await self._claim_conn.failed(exc)
            return []
        self._claim_conn.succeeded()
        self.claimed += len(rows)
        return rows

    def _start(self, rows: list[sql.ClaimedExecution]) -> int:
        """Start a handler run per execution, or per group for batch tasks; returns how many."""
        groups: dict[tuple[str, int], list[sql.ClaimedExecution]] = {}
        runs = 0
        for row in rows:
            self._unreported[row.id] = self._unreported.get(row.id, 0) + 1
            if row.batch_group is not None:
                groups.setdefault((row.task_name, row.batch_group), []).append(row)
                continue
            task = self.tasks[row.task_name]
            ctx = TaskContext(
                row.id,
                row.task_name,
                row.attempt,
                self.conductor.context,
                row.steps,
                self,
                task.window is not None,
                run=row.run,
            )
            run = asyncio.create_task(self._execute(task, row, ctx))
            self._running[(row.id, row.run)] = (run, ctx, task.is_async)
            runs += 1
        for (task_name, _), members in groups.items():
            task = self.tasks[task_name]
            batch_ctx = BatchContext(task_name, [(r.id, r.attempt) for r in members])
            run = asyncio.create_task(self._execute_group(task, members, batch_ctx))
            for row in members:
                self._running[(row.id, row.run)] = (run, batch_ctx, task.is_async)
            runs += 1
        self._active += runs
        return runs

    async def _execute(self, task: Task, row: sql.ClaimedExecution, ctx: TaskContext) -> None:
        started = time.monotonic()
        head = f'{{"id":"{row.id}","run":{row.run},"outcome":'
        fragment: str | None
        try:
            event = TaskEvent(row.event_name, task.definition.parse_payload(row.payload))
            if task.is_async:
                result = await task.handler(event, ctx)
            else:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._thread_pool(), task.handler, event, ctx
                )
            fragment = f'{head}"completed","result":{task.definition.dump_result(result)}}}'
            self.completed += 1
        except BaseException as raised:
            exc = _control_flow(raised)
            if isinstance(exc, WaitRequested):
                fragment = None  # the database already made it wait for its child
                self.waited += 1
            elif isinstance(exc, SleepRequested):
                fragment = f'{head}"sleep","step":{json.dumps(exc.name)},"seconds":{exc.seconds!r}}}'
                self.slept += 1
            elif isinstance(exc, asyncio.CancelledError | Released):
                fragment = f'{head}"released"}}'
                self.released += 1
            else:
                fragment = f'{head}"failed","error":{_error_json(raised)}}}'
                self.failed += 1
                logger.warning(
                    "execution failed: %s: %s",
                    type(raised).__name__,
                    raised,
                    extra={
                        "task": row.task_name,
                        "execution_id": str(row.id),
                        "attempt": row.attempt,
                        "duration_ms": round((time.monotonic() - started) * 1000, 3),
                    },
                )
        else:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "execution completed",
                    extra={
                        "task": row.task_name,
                        "execution_id": str(row.id),
                        "attempt": row.attempt,
                        "duration_ms": round((time.monotonic() - started) * 1000, 3),
                    },
                )
        if ctx.handed_back:
            fragment = None  # it waits for a child: whatever this run did after that is moot
        self._done([(row, fragment)])

    async def _execute_group(self, task: Task, rows: list[sql.ClaimedExecution], ctx: BatchContext) -> None:
        """Run a batch handler on a group: one result per event (or None); an exception, or
        a result of the wrong length, fails every execution of the group."""
        started = time.monotonic()
        heads = [f'{{"id":"{row.id}","run":{row.run},"outcome":' for row in rows]
        try:
            events = [TaskEvent(row.event_name, task.definition.parse_payload(row.payload)) for row in rows]
            if task.is_async:
                result = await task.handler(events, ctx)
            else:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._thread_pool(), task.handler, events, ctx
                )
            if result is None:
                results = ["null"] * len(rows)
            elif isinstance(result, list | tuple) and len(result) == len(rows):
                results = [task.definition.dump_result(item) for item in result]
            else:
                got = f"{len(result)} results" if isinstance(result, list | tuple) else type(result).__name__
                raise InvalidResult(
                    f"batch task {task.name!r} must return None or a list of {len(rows)} results "
                    f"(one per event), got {got}"
                )
            fragments = [
                f'{head}"completed","result":{text}}}' for head, text in zip(heads, results, strict=True)
            ]
            self.completed += len(rows)
        except asyncio.CancelledError:
            fragments = [f'{head}"released"}}' for head in heads]
            self.released += len(rows)
        except BaseException as exc:  # any other way out fails the group, and is reported
            error = _error_json(exc)
            fragments = [f'{head}"failed","error":{error}}}' for head in heads]
            self.failed += len(rows)
            logger.warning(
                "batch failed: %s: %s",
                type(exc).__name__,
                exc,
                extra={
                    "task": task.name,
                    "execution_ids": [str(row.id) for row in rows],
                    "duration_ms": round((time.monotonic() - started) * 1000, 3),
                },
            )
        self._done(list(zip(rows, fragments, strict=True)))

    def _done(self, outcomes: list[tuple[sql.ClaimedExecution, str | None]]) -> None:
        """Buffer the outcomes of one handler run (None: nothing to report) and free its slot."""
        for row, fragment in outcomes:
            del self._running[(row.id, row.run)]  # each run has its own key (the run token)
            if fragment is None:
                self._unhold(row.id)
                continue
            self._buffer.append((row.id, fragment))
        self._active -= 1
        # The first buffered outcome starts the flusher's interval; idle or full flushes now.
        if (
            len(self._buffer) <= len(outcomes)
            or not self._active
            or len(self._buffer) >= self.config.flush_batch_size
        ):
            self._flush_wake.set()
        if not self._idle or not self._active:
            self._kick.set()

    def _unhold(self, execution_id: UUID) -> None:
        """One run of the execution is over and reported (or has nothing to report)."""
        left = self._unreported.get(execution_id, 0) - 1
        if left > 0:
            self._unreported[execution_id] = left
        else:
            self._unreported.pop(execution_id, None)

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.concurrency, thread_name_prefix=f"pgconductor-{self.queue}"
            )
        return self._executor

    async def _finish_running(self) -> None:
        """Give running handlers the grace period, then cancel the async ones (they report
        released). A plain-def handler cannot be interrupted: releasing it would let another
        worker start it while its thread still runs, so the worker waits for it."""
        if not self._running:
            return
        for _, ctx, _ in self._running.values():
            ctx.signal.abort("worker stopping")
        running = list({run: (run, ctx, is_async) for run, ctx, is_async in self._running.values()}.values())
        _, late = await asyncio.wait([t for t, _, _ in running], timeout=self.config.shutdown_timeout_s)
        threads = [t for t, _, is_async in running if t in late and not is_async]
        for t, _, is_async in running:
            if t in late and is_async:
                t.cancel()
        if threads:
            logger.warning(
                "waiting for plain-def handlers to return (a second signal exits now)",
                extra={"worker": self.name, "count": len(threads)},
            )
        if late:
            await asyncio.wait(late)

    # --- flushing ------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        interval = self.config.flush_interval_ms / 1000
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._flush_wake.clear()
                await self._flush_wake.wait()
                continue
            if not self._closing and self._active and len(self._buffer) < self.config.flush_batch_size:
                self._flush_wake.clear()
                try:
                    await asyncio.wait_for(self._flush_wake.wait(), interval)
                except TimeoutError:
                    pass
            batch, self._buffer = self._buffer, []
            await self._report(batch)

    async def _report(self, batch: list[tuple[UUID, str]]) -> None:
        """Write a batch of outcomes; retried through reconnects until it is applied. A batch
        the database refuses is written one outcome at a time so that one bad outcome cannot
        hold back the others; a refused outcome becomes a failure naming the refusal."""
        try:
            await self._write(batch)
        except psycopg.Error as exc:
            logger.error("report refused (%s); writing outcomes one by one", exc, extra={"worker": self.name})
            for item in batch:
                await self._write_one(item)
        for execution_id, _ in batch:
            self._unhold(execution_id)
        # Finished executions of limited tasks may have freed slots: look again if idle.
        if self._limited and self._idle:
            self._kick.set()

    async def _write(self, batch: list[tuple[UUID, str]]) -> None:
        payload = "[" + ",".join(fragment for _, fragment in batch) + "]"
        while True:
            try:
                conn = await self._flush_conn.get()
                await sql.report(conn, self.id, payload)
            except psycopg.OperationalError as exc:
                await self._flush_conn.failed(exc)
                continue
            self._flush_conn.succeeded()
            self._flush_conn.lost = False
            return

    async def _write_one(self, item: tuple[UUID, str]) -> None:
        try:
            await self._write([item])
            return
        except psycopg.Error as exc:
            refused = exc
        run = json.loads(item[1])["run"]
        fallback = json.dumps(
            {
                "id": str(item[0]),
                "run": run,
                "outcome": "failed",
                "error": {"type": "ReportRefused", "message": f"the database refused the outcome: {refused}"},
            }
        )
        try:
            await self._write([(item[0], fallback)])
        except psycopg.Error as exc:
            # Left to the heartbeat: it releases what this worker holds but no longer tracks.
            logger.error("outcome dropped: %s", exc, extra={"execution_id": str(item[0])})

"""The Orchestrator: runs workers, and beside them the heartbeat, the wake-ups
(LISTEN/NOTIFY), maintenance and signal handling of one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

from . import sql
from .conductor import Conductor
from .connection import BACKOFF_MAX_S, BACKOFF_START_S, DedicatedConnection
from .errors import InvalidInput
from .task import Task
from .worker import Worker, WorkerConfig

logger = logging.getLogger("pgconductor.orchestrator")


class Orchestrator:
    """Runs a process's workers until stopped (SIGTERM/SIGINT, `stop()`) or drained."""

    def __init__(
        self,
        conductor: Conductor,
        workers: list[Worker],
        *,
        lease_seconds: int,
        heartbeat_interval_s: float,
        maintenance_interval_s: float,
        name: str,
    ) -> None:
        self.conductor = conductor
        self.workers = workers
        self.lease_seconds = lease_seconds
        self.heartbeat_interval_s = heartbeat_interval_s
        self.maintenance_interval_s = maintenance_interval_s
        self.name = name
        for worker in workers:
            worker.lease_seconds = lease_seconds
            worker.registered_name = f"{name}/{worker.name}"
        self._duty_conn = DedicatedConnection(conductor.dsn, "heartbeat")
        self._background: list[asyncio.Task[None]] = []
        self._runs: list[asyncio.Task[None]] = []
        self._stopped: asyncio.Future[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._signals = 0
        self._state = "created"

    @classmethod
    def create(
        cls,
        conductor: Conductor,
        tasks: Sequence[Task] | None = None,
        workers: Sequence[Worker] | None = None,
        default_worker: WorkerConfig | None = None,
        *,
        lease_seconds: int = 60,
        heartbeat_interval_s: float = 1.0,
        maintenance_interval_s: float = 60.0,
        name: str | None = None,
    ) -> Orchestrator:
        """Workers for `tasks` (one per queue, with `default_worker` settings) plus `workers`.
        With neither, every task registered on the Conductor runs."""
        chosen = list(workers or [])
        covered = {name for w in chosen for name in w.tasks}
        if tasks is None and not chosen:
            tasks = conductor.tasks
        by_queue: dict[str, list[Task]] = {}
        for task in tasks or ():
            if not isinstance(task, Task):
                raise InvalidInput("tasks", f"must hold tasks created by conductor.task, got {task!r}")
            if task.name not in covered:
                by_queue.setdefault(task.queue, []).append(task)
        for queue, queue_tasks in by_queue.items():
            chosen.append(conductor.create_worker(queue, queue_tasks, default_worker or WorkerConfig()))
        if not chosen:
            raise InvalidInput("tasks", "an Orchestrator needs at least one task or worker")
        if type(lease_seconds) is not int or lease_seconds < 1:
            raise InvalidInput("lease_seconds", f"must be a positive integer, got {lease_seconds!r}")
        if heartbeat_interval_s <= 0 or heartbeat_interval_s * 2 > lease_seconds:
            raise InvalidInput("heartbeat_interval_s", "must be positive and at most half the lease")
        return cls(
            conductor,
            chosen,
            lease_seconds=lease_seconds,
            heartbeat_interval_s=heartbeat_interval_s,
            maintenance_interval_s=maintenance_interval_s,
            name=name or f"{socket.gethostname()}:{os.getpid()}",
        )

    # --- lifecycle -----------------------------------------------------------------

    async def start(self, handle_signals: bool | None = None) -> None:
        """Install/upgrade the extension if needed, register the workers, start everything."""
        await self._start(drain=False, handle_signals=handle_signals)

    async def _start(self, drain: bool, handle_signals: bool | None) -> None:
        if self._state != "created":
            raise InvalidInput("orchestrator", f"cannot start: it is {self._state}")
        self._state = "running"
        self._stopped = asyncio.get_running_loop().create_future()
        await self.conductor.ensure_installed()
        conn = await self._duty_conn.get()
        for worker in self.workers:
            await worker.register(conn)
        await self._maintain()
        listener_ready = asyncio.Event()
        self._background = [
            asyncio.create_task(self._listen(listener_ready)),
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._maintenance_loop()),
        ]
        await listener_ready.wait()
        self._run_workers(drain)
        if handle_signals is None:
            handle_signals = threading.current_thread() is threading.main_thread()
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        logger.info(
            "orchestrator started",
            extra={"orchestrator": self.name, "workers": [w.info() for w in self.workers]},
        )

    def _run_workers(self, drain: bool) -> None:
        self._runs = [asyncio.create_task(w.run(drain=drain)) for w in self.workers]
        for run in self._runs:
            run.add_done_callback(self._worker_ended)

    def _worker_ended(self, run: asyncio.Task[None]) -> None:
        """A worker that dies of an unexpected error stops the whole orchestrator, loudly:
        a process that heartbeats without claiming would hold its executions forever."""
        if run.cancelled() or run.exception() is None or self._state != "running":
            return
        logger.critical("worker crashed; stopping", exc_info=run.exception())
        self._stopping = asyncio.create_task(self.stop())

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning(
                "second signal: exiting now; running executions return by lease", extra={"signal": sig.name}
            )
            os._exit(1)
        logger.info("signal received: stopping gracefully", extra={"signal": sig.name})
        self._stopping = asyncio.create_task(self.stop())

    @property
    def stopped(self) -> asyncio.Future[None]:
        """Resolves when the orchestrator has fully stopped."""
        if self._stopped is None:
            raise InvalidInput("orchestrator", "not started")
        return self._stopped

    async def stop(self) -> None:
        """Graceful stop: no more claims, handlers finish within the grace period, the rest is
        released, every outcome flushed, workers unregistered."""
        if self._state == "created":
            return
        if self._state == "stopping" or self._state == "stopped":
            await self.stopped
            return
        self._state = "stopping"
        try:
            for worker in self.workers:
                worker.request_stop()
            await asyncio.gather(*self._runs, return_exceptions=True)
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            await self._unregister()
        finally:
            await self._duty_conn.close()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self._state = "stopped"
            assert self._stopped is not None
            if not self._stopped.done():
                self._stopped.set_result(None)
            logger.info("orchestrator stopped", extra={"orchestrator": self.name})

    async def _unregister(self) -> None:
        """Remove the workers' rows, retrying through a reconnect for a few seconds; if the
        database stays away, lease recovery returns anything they still held."""
        backoff = BACKOFF_START_S
        for attempt in range(6):
            try:
                async with self.conductor.connection() as conn:
                    for worker in self.workers:
                        await sql.unregister_worker(conn, worker.id)
                return
            except psycopg.OperationalError as exc:
                logger.warning("unregister failed; retrying", extra={"error": str(exc), "attempt": attempt})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def drain(self) -> None:
        """Run until no execution of these workers' tasks is ready, then stop (for tests)."""
        await self._start(drain=True, handle_signals=False)
        try:
            # A worker stops when its own queue has nothing ready, but another worker may make
            # it ready again (a child in another queue, a parent its child woke up): run the
            # workers again until a round in which none of them claimed anything.
            while True:
                claimed = sum(w.claimed for w in self.workers)
                await asyncio.gather(*self._runs)
                if sum(w.claimed for w in self.workers) == claimed or self._state != "running":
                    break
                self._run_workers(drain=True)
        finally:
            await self.stop()

    def info(self) -> dict[str, Any]:
        """State, name and per-worker counters."""
        return {"name": self.name, "state": self._state, "workers": [w.info() for w in self.workers]}

    # --- background duties -----------------------------------------------------------

    async def _listen(self, ready: asyncio.Event) -> None:
        """LISTEN on every worker queue's channel and on cancellations; wake on each."""
        backoff = BACKOFF_START_S
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conductor.dsn, autocommit=True) as conn:
                    by_channel: dict[str, list[Worker]] = {}
                    for worker in self.workers:
                        channel = await sql.queue_channel(conn, worker.queue)
                        by_channel.setdefault(channel, []).append(worker)
                    for channel in [*by_channel, sql.CANCEL_CHANNEL]:
                        await sql.listen(conn, channel)
                    backoff = BACKOFF_START_S
                    ready.set()
                    for worker in self.workers:  # anything missed while not listening
                        worker.wake()
                    async for note in conn.notifies():
                        if note.channel == sql.CANCEL_CHANNEL:
                            self._dispatch_cancel(note.payload)
                        else:
                            for worker in by_channel.get(note.channel, ()):
                                worker.wake()
            except psycopg.OperationalError as exc:
                logger.warning(
                    "listen connection lost; reconnecting", extra={"error": str(exc), "retry_in_s": backoff}
                )
                ready.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _dispatch_cancel(self, payload: str) -> None:
        raw_id, _, reason = payload.partition(" ")
        try:
            execution_id = UUID(raw_id)
        except ValueError:
            return
        for worker in self.workers:
            worker.cancel_requested(execution_id, reason or "cancelled")

    async def _heartbeat_loop(self) -> None:
        """Keep every worker's lease on a connection of its own (a busy application pool
        must not delay it), pass on cancellations, re-register forgotten workers."""
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                conn = await self._duty_conn.get()
                for worker in self.workers:
                    cancelled = await sql.heartbeat(conn, worker.id, worker.held())
                    if cancelled is None:
                        logger.warning("lease lost; registering again", extra={"worker": worker.name})
                        worker.lease_lost()
                        await worker.register(conn)
                        continue
                    for execution_id in cancelled:
                        worker.cancel_requested(execution_id, "cancelled")
                self._duty_conn.succeeded()
            except psycopg.OperationalError as exc:
                await self._duty_conn.failed(exc)
            except Exception:
                logger.exception("heartbeat failed")

    async def _maintain(self) -> None:
        """One maintenance pass in bounded chunks, each its own transaction (skipped while
        another process runs one)."""
        more = True
        while more:
            conn = await self._duty_conn.get()
            more = bool((await sql.maintenance(conn, 1000)).get("more"))

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(self.maintenance_interval_s)
            try:
                await self._maintain()
            except psycopg.OperationalError as exc:
                await self._duty_conn.failed(exc)
            except Exception:
                logger.exception("maintenance failed")

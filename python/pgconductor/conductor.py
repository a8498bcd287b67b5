"""The Conductor: the task registry and every client call (async, with sync twins)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import sql
from .errors import (
    ExecutionCancelled,
    ExecutionFailed,
    ExtensionNotAvailable,
    InvalidInput,
    NotSupported,
    UnknownExecution,
    UnknownTask,
    WaitTimeout,
)
from .task import NUL_ESCAPE, Handler, Invocable, Retention, Task, TaskDefinition, check_name, to_json

if TYPE_CHECKING:
    from .worker import Worker, WorkerConfig

EXTENSION_VERSION = "0.1.0"
ITEM_KEYS = frozenset(
    {
        "payload",
        "dedupe_key",
        "priority",
        "run_at",
        "throttle",
        "debounce",
        "throttle_seconds",
        "debounce_seconds",
        "debounce_max_wait_seconds",
    }
)


def _seconds(input: str, value: object) -> int:
    if type(value) is not int or not 0 < value < 2**31:
        raise InvalidInput(input, f"must be a positive whole number of seconds, got {value!r}")
    return value


def _flow_control(
    input: str, throttle: dict[str, Any] | None, debounce: dict[str, Any] | None
) -> tuple[int | None, int | None, int | None]:
    """Translate throttle/debounce options to the SQL arguments, refusing bad shapes."""
    if throttle is not None and debounce is not None:
        raise InvalidInput(f"{input}throttle", "throttle and debounce cannot be used together")
    if throttle is not None:
        if not isinstance(throttle, dict) or set(throttle) != {"seconds"}:
            raise InvalidInput(f"{input}throttle", f'must be {{"seconds": N}}, got {throttle!r}')
        return _seconds(f"{input}throttle.seconds", throttle["seconds"]), None, None
    if debounce is not None:
        if (
            not isinstance(debounce, dict)
            or "seconds" not in debounce
            or not set(debounce) <= {"seconds", "max_wait"}
        ):
            raise InvalidInput(
                f"{input}debounce", f'must be {{"seconds": N, "max_wait": M}}, got {debounce!r}'
            )
        max_wait = debounce.get("max_wait")
        return (
            None,
            _seconds(f"{input}debounce.seconds", debounce["seconds"]),
            None if max_wait is None else _seconds(f"{input}debounce.max_wait", max_wait),
        )
    return None, None, None


def _check_run_at(input: str, run_at: object) -> datetime | None:
    if run_at is None:
        return None
    if not isinstance(run_at, datetime) or run_at.tzinfo is None:
        raise InvalidInput(input, f"must be a timezone-aware datetime, got {run_at!r}")
    return run_at


def _check_int(input: str, value: object) -> int:
    if type(value) is not int or not -(2**31) <= value < 2**31:
        raise InvalidInput(input, f"must be a 32-bit integer, got {value!r}")
    return value


class Conductor:
    """Registry of tasks and client of the extension's SQL API.

    Create it with `Conductor.create(dsn=...)` or around an existing psycopg
    `AsyncConnectionPool`; close it with `await conductor.close()` or `async with`.
    """

    def __init__(
        self,
        *,
        dsn: str | None,
        pool: AsyncConnectionPool | None,
        tasks: Sequence[TaskDefinition[Any]] | None,
        context: dict[str, Any] | None,
    ) -> None:
        if dsn is None and pool is None:
            raise InvalidInput("dsn", "give a dsn or an existing AsyncConnectionPool")
        self._dsn = dsn
        self._own_pool = pool is None
        # check_connection: a connection broken by a server restart is replaced, not handed out.
        # Autocommit: every client call is one statement, so it needs no COMMIT round trip.
        self._pool = pool or AsyncConnectionPool(
            dsn or "",
            min_size=1,
            max_size=10,
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True},
        )
        self._pool_opened = not self._own_pool
        self._pool_lock = asyncio.Lock()
        self._sync_pool: ConnectionPool | None = None
        self._declared: dict[str, TaskDefinition[Any]] | None = (
            None if tasks is None else {d.name: d for d in tasks}
        )
        self._tasks: dict[str, Task] = {}
        self.context: dict[str, Any] = dict(context or {})

    @classmethod
    def create(
        cls,
        dsn: str | None = None,
        *,
        pool: AsyncConnectionPool | None = None,
        tasks: Sequence[TaskDefinition[Any]] | None = None,
        events: Sequence[Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> Conductor:
        """Build a Conductor. With `tasks`, names outside that list are refused (UnknownTask)."""
        if events:
            raise NotSupported("custom events are not supported by this version")
        for definition in tasks or ():
            if not isinstance(definition, TaskDefinition):
                raise InvalidInput("tasks", f"must hold define_task(...) results, got {definition!r}")
        return cls(dsn=dsn, pool=pool, tasks=tasks, context=context)

    @property
    def dsn(self) -> str:
        """The connection string workers and waiters connect with."""
        if self._dsn is not None:
            return self._dsn
        conninfo = self._pool.conninfo
        if not isinstance(conninfo, str):
            raise InvalidInput("pool", "needs a plain conninfo string (workers open their own connections)")
        return conninfo

    async def __aenter__(self) -> Conductor:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pools this Conductor opened (a pool passed in stays open)."""
        if self._own_pool and self._pool_opened:
            await self._pool.close()
            self._pool_opened = False
        if self._sync_pool is not None:
            self._sync_pool.close()
            self._sync_pool = None

    async def _open(self) -> AsyncConnectionPool:
        if not self._pool_opened:
            async with self._pool_lock:
                if not self._pool_opened:
                    await self._pool.open(wait=True)
                    self._pool_opened = True
        return self._pool

    @asynccontextmanager
    async def connection(
        self, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The caller's connection if given (its transaction), else one from the pool."""
        if conn is not None:
            if not isinstance(conn, psycopg.AsyncConnection):
                raise InvalidInput("conn", "must be a psycopg AsyncConnection (use the _sync twin)")
            yield conn
            return
        pool = await self._open()
        async with pool.connection() as pooled:
            yield pooled

    @contextmanager
    def connection_sync(
        self, conn: psycopg.Connection[Any] | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """Blocking twin of `connection`."""
        if conn is not None:
            if not isinstance(conn, psycopg.Connection):
                raise InvalidInput("conn", "must be a psycopg Connection (use the async call)")
            yield conn
            return
        if self._sync_pool is None:
            self._sync_pool = ConnectionPool(
                self.dsn,
                min_size=1,
                max_size=4,
                open=True,
                check=ConnectionPool.check_connection,
                kwargs={"autocommit": True},
            )
        with self._sync_pool.connection() as pooled:
            yield pooled

    # --- registry ------------------------------------------------------------------

    def known_queue(self, task_name: str) -> str | None:
        """The queue of a task registered on this Conductor, else None (the database decides)."""
        known = self._tasks.get(task_name)
        return known.queue if known is not None else None

    def definition(self, task: str | TaskDefinition[Any]) -> TaskDefinition[Any]:
        """The definition of a task by name; UnknownTask if the Conductor has a task list without it."""
        if isinstance(task, TaskDefinition):
            name = task.name
            if self._declared is not None and name not in self._declared:
                raise UnknownTask(name, list(self._declared))
            return task
        check_name("task_name", task, 200)
        if task in self._tasks:
            return self._tasks[task].definition
        if self._declared is not None:
            if task not in self._declared:
                raise UnknownTask(task, list(self._declared))
            return self._declared[task]
        return TaskDefinition(task)

    def create_task(
        self,
        task: str | TaskDefinition[Any],
        handler: Handler,
        *,
        triggers: Sequence[Invocable] | None = None,
        queue: str = "default",
        max_attempts: int = 3,
        concurrency: int | None = None,
        window: Any = None,
        remove_on_complete: Retention | None = None,
        remove_on_fail: Retention | None = None,
        batch: Any = None,
    ) -> Task:
        """Register `handler` for a task and return its handle."""
        created = Task(
            definition=self.definition(task),
            handler=handler,
            queue=queue,
            max_attempts=max_attempts,
            concurrency=concurrency,
            batch=batch,
            window=window,
            remove_on_complete={"days": 7} if remove_on_complete is None else remove_on_complete,
            remove_on_fail={"days": 30} if remove_on_fail is None else remove_on_fail,
            triggers=tuple(triggers) if triggers is not None else (Invocable(),),
            conductor=self,
        )
        self._tasks[created.name] = created
        return created

    def task(self, task: str | TaskDefinition[Any], **options: Any) -> Callable[[Handler], Task]:
        """Decorator form of `create_task`: `@conductor.task("greet", queue="emails")`."""

        def register(handler: Handler) -> Task:
            return self.create_task(task, handler, **options)

        return register

    @property
    def tasks(self) -> list[Task]:
        """Every task registered with a handler on this Conductor."""
        return list(self._tasks.values())

    def create_worker(
        self,
        queue: str = "default",
        tasks: Sequence[Task] | None = None,
        config: WorkerConfig | None = None,
        name: str | None = None,
    ) -> Worker:
        """A worker for one queue running `tasks` (default: this Conductor's tasks of that queue)."""
        from .worker import Worker, WorkerConfig

        check_name("queue", queue, 48)
        chosen = list(tasks) if tasks is not None else [t for t in self._tasks.values() if t.queue == queue]
        for t in chosen:
            if t.queue != queue:
                raise InvalidInput("tasks", f"task {t.name!r} belongs to queue {t.queue!r}, not {queue!r}")
        return Worker(self, queue, chosen, config or WorkerConfig(), name=name)

    # --- enqueue -------------------------------------------------------------------

    def _invoke_params(
        self,
        task_name: str | TaskDefinition[Any],
        payload: Any,
        queue: str | None,
        dedupe_key: str | None,
        priority: int,
        run_at: datetime | None,
        throttle: dict[str, Any] | None,
        debounce: dict[str, Any] | None,
    ) -> dict[str, Any]:
        definition = self.definition(task_name)
        if queue is None and definition.name in self._tasks:
            queue = self._tasks[definition.name].queue
        if queue is not None:
            check_name("queue", queue, 48)
        if dedupe_key is not None and (not isinstance(dedupe_key, str) or not dedupe_key):
            raise InvalidInput("dedupe_key", f"must be None or a non-empty string, got {dedupe_key!r}")
        throttle_s, debounce_s, max_wait_s = _flow_control("", throttle, debounce)
        if debounce_s is not None and run_at is not None:
            raise InvalidInput("run_at", "cannot be combined with debounce (debounce decides when it runs)")
        return sql.invoke_params(
            definition.name,
            definition.dump_payload({} if payload is None else payload),
            queue,
            dedupe_key,
            _check_int("priority", priority),
            _check_run_at("run_at", run_at),
            throttle_s,
            debounce_s,
            max_wait_s,
        )

    async def invoke(
        self,
        task_name: str | TaskDefinition[Any],
        payload: Any = None,
        *,
        queue: str | None = None,
        dedupe_key: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        throttle: dict[str, Any] | None = None,
        debounce: dict[str, Any] | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> UUID | None:
        """Enqueue one execution; with `conn=`, inside the caller's transaction."""
        params = self._invoke_params(
            task_name, payload, queue, dedupe_key, priority, run_at, throttle, debounce
        )
        async with self.connection(conn) as c:
            return await sql.invoke(c, params)

    def invoke_sync(
        self,
        task_name: str | TaskDefinition[Any],
        payload: Any = None,
        *,
        queue: str | None = None,
        dedupe_key: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        throttle: dict[str, Any] | None = None,
        debounce: dict[str, Any] | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> UUID | None:
        """Blocking twin of `invoke`."""
        params = self._invoke_params(
            task_name, payload, queue, dedupe_key, priority, run_at, throttle, debounce
        )
        with self.connection_sync(conn) as c:
            return sql.invoke_sync(c, params)

    def _items_json(self, definition: TaskDefinition[Any], items: Sequence[dict[str, Any]]) -> str:
        if not isinstance(items, list | tuple):
            raise InvalidInput("items", f"must be a list of dicts, got {type(items).__name__}")
        out: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if type(item) is not dict:
                raise InvalidInput(f"items[{index}]", f"must be a dict, got {type(item).__name__}")
            unknown = item.keys() - ITEM_KEYS
            if unknown:
                raise InvalidInput(f"items[{index}]", f"has unknown keys {sorted(unknown)}")
            if "priority" in item and item["priority"] is not None:
                _check_int(f"items[{index}].priority", item["priority"])
            run_at = item.get("run_at")
            if isinstance(run_at, datetime):
                _check_run_at(f"items[{index}].run_at", run_at)
                item = {**item, "run_at": run_at.isoformat()}
            payload = item.get("payload")
            if (
                "throttle" in item
                or "debounce" in item
                or definition.payload is not None
                or (payload is not None and type(payload) is not dict)
            ):
                item = dict(item)
                throttle_s, debounce_s, max_wait_s = _flow_control(
                    f"items[{index}].", item.pop("throttle", None), item.pop("debounce", None)
                )
                if throttle_s is not None:
                    item["throttle_seconds"] = throttle_s
                if debounce_s is not None:
                    item["debounce_seconds"] = debounce_s
                    item["debounce_max_wait_seconds"] = max_wait_s
                try:
                    item["payload"] = definition.dump_payload(item.get("payload") or {})
                except InvalidInput as exc:
                    raise InvalidInput(f"items[{index}].payload", exc.problem) from exc
            out.append(item)
        try:
            text = json.dumps(out, allow_nan=False)
            if "\\u0000" not in text or not NUL_ESCAPE.search(text):
                return text
        except (TypeError, ValueError):
            pass
        for index, item in enumerate(out):
            try:
                to_json(item)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"items[{index}]", f"is not valid JSON for Postgres: {exc}") from exc
        raise InvalidInput("items", "is not valid JSON for Postgres")

    async def invoke_many(
        self,
        task_name: str | TaskDefinition[Any],
        items: Sequence[dict[str, Any]],
        *,
        queue: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[UUID | None]:
        """Enqueue many executions of one task in one statement; ids in item order."""
        definition = self.definition(task_name)
        if queue is None and definition.name in self._tasks:
            queue = self._tasks[definition.name].queue
        items_json = self._items_json(definition, items)
        async with self.connection(conn) as c:
            return await sql.invoke_many(c, definition.name, items_json, queue)

    def invoke_many_sync(
        self,
        task_name: str | TaskDefinition[Any],
        items: Sequence[dict[str, Any]],
        *,
        queue: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[UUID | None]:
        """Blocking twin of `invoke_many`."""
        definition = self.definition(task_name)
        if queue is None and definition.name in self._tasks:
            queue = self._tasks[definition.name].queue
        items_json = self._items_json(definition, items)
        with self.connection_sync(conn) as c:
            return sql.invoke_many_sync(c, definition.name, items_json, queue)

    # --- control and inspection ----------------------------------------------------

    async def cancel(
        self,
        execution_id: UUID,
        reason: str = "cancelled",
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> bool:
        """Cancel an execution; False if it had already finished (or is unknown)."""
        async with self.connection(conn) as c:
            return await sql.cancel(c, execution_id, reason)

    def cancel_sync(
        self,
        execution_id: UUID,
        reason: str = "cancelled",
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> bool:
        """Blocking twin of `cancel`."""
        with self.connection_sync(conn) as c:
            return sql.cancel_sync(c, execution_id, reason)

    async def get_execution(
        self, execution_id: UUID, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> sql.ExecutionInfo | None:
        """Status, attempts, result and error of an execution; None if unknown."""
        async with self.connection(conn) as c:
            return await sql.get_execution(c, execution_id)

    def get_execution_sync(
        self, execution_id: UUID, *, conn: psycopg.Connection[Any] | None = None
    ) -> sql.ExecutionInfo | None:
        """Blocking twin of `get_execution`."""
        with self.connection_sync(conn) as c:
            return sql.get_execution_sync(c, execution_id)

    def _outcome(self, execution_id: UUID, info: sql.ExecutionInfo | None) -> tuple[bool, Any]:
        """(finished, result) for a waiter; raises the stored failure."""
        if info is None:
            raise UnknownExecution(f"no execution {execution_id} (unknown, or removed by retention)")
        if info.status == "completed":
            definition = (
                self._tasks[info.task_name].definition
                if info.task_name in self._tasks
                else (self._declared.get(info.task_name) if self._declared else None)
            )
            return True, definition.parse_result(info.result) if definition else info.result
        if info.status == "failed":
            raise ExecutionFailed(execution_id, info.error)
        if info.status == "cancelled":
            raise ExecutionCancelled(execution_id, info.error)
        return False, None

    async def wait_for(self, execution_id: UUID, timeout: float = 30.0) -> Any:
        """Wait until the execution finishes: its result, or raise its failure (ExecutionFailed,
        ExecutionCancelled); WaitTimeout after `timeout` seconds (it keeps running)."""
        deadline = time.monotonic() + timeout
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await sql.listen_finished(conn)
            while True:
                done, result = self._outcome(execution_id, await sql.get_execution(conn, execution_id))
                if done:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"execution {execution_id} did not finish within {timeout} s")
                async for _ in conn.notifies(timeout=min(remaining, 1.0), stop_after=1):
                    pass

    def wait_for_sync(self, execution_id: UUID, timeout: float = 30.0) -> Any:
        """Blocking twin of `wait_for`."""
        deadline = time.monotonic() + timeout
        with psycopg.Connection.connect(self.dsn, autocommit=True) as conn:
            sql.listen_finished_sync(conn)
            while True:
                done, result = self._outcome(execution_id, sql.get_execution_sync(conn, execution_id))
                if done:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"execution {execution_id} did not finish within {timeout} s")
                for _ in conn.notifies(timeout=min(remaining, 1.0), stop_after=1):
                    pass

    async def queue_stats(self) -> list[sql.QueueStats]:
        """Per queue and task: counts by status and the oldest pending age."""
        async with self.connection() as c:
            return await sql.queue_stats(c)

    def queue_stats_sync(self) -> list[sql.QueueStats]:
        """Blocking twin of `queue_stats`."""
        with self.connection_sync() as c:
            return sql.queue_stats_sync(c)

    # --- installation --------------------------------------------------------------

    async def ensure_installed(self) -> str:
        """Create the extension, or upgrade it to this package's version; returns the version.
        Raises ExtensionNotAvailable (naming `make install`) when the server lacks the files."""
        async with self.connection() as c:
            versions = await sql.extension_versions(c)
            if versions.available is None:
                raise ExtensionNotAvailable(
                    "the pgconductor extension files are not installed on this Postgres server; "
                    "run `make install` (PGXS, as a user who can write to "
                    "`pg_config --sharedir`/extension) and try again"
                )
            if _version_tuple(versions.available) < _version_tuple(EXTENSION_VERSION):
                raise ExtensionNotAvailable(
                    f"the Postgres server has pgconductor {versions.available} files but this package "
                    f"needs {EXTENSION_VERSION}; run `make install` with this package's sources"
                )
            if versions.installed is None:
                await sql.create_extension(c, EXTENSION_VERSION)
            elif _version_tuple(versions.installed) < _version_tuple(EXTENSION_VERSION):
                await sql.update_extension(c, EXTENSION_VERSION)
            return EXTENSION_VERSION


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())

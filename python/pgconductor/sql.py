"""Every call the Python package makes to the database, one thin typed wrapper each.

Nothing outside this module writes SQL. Each client call has an async function and a
blocking twin that share the statement text; both map SQLSTATEs through
`pgconductor.errors.translate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from .errors import translate

T = TypeVar("T")
AsyncConn = psycopg.AsyncConnection[Any]
SyncConn = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class ClaimedExecution:
    """One execution handed to a worker by `pgconductor.claim`."""

    id: UUID
    task_name: str
    payload: Any
    attempt: int
    max_attempts: int
    event_name: str
    steps: dict[str, Any] | None
    batch_group: int | None
    run: int  # the run token: reports, step saves and child starts quote it


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """One row of the `pgconductor.executions` view."""

    id: UUID
    task_name: str
    queue: str
    status: str
    payload: Any
    result: Any
    error: dict[str, Any] | None
    attempts: int
    max_attempts: int
    priority: int
    run_at: datetime | None  # None: waits for a child without a timeout
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    dedupe_key: str | None
    parent_id: UUID | None
    batch_id: UUID | None
    event_name: str
    worker_id: UUID | None
    cancel_reason: str | None
    expires_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One row of the `pgconductor.queue_stats` view."""

    queue: str
    task_name: str
    pending: int
    running: int
    waiting: int
    completed: int
    failed: int
    cancelled: int
    oldest_pending_age: timedelta | None


@dataclass(frozen=True, slots=True)
class ExtensionVersions:
    """What the server offers (`available`) and what this database has (`installed`)."""

    available: str | None
    installed: str | None


def _reraise(exc: psycopg.Error) -> Exception:
    err = translate(exc)
    return exc if err is exc else err


async def _one(conn: AsyncConn, query: LiteralString, params: Any = None) -> Any:
    try:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    except psycopg.Error as exc:
        raise _reraise(exc) from exc
    return None if row is None else row[0]


def _one_sync(conn: SyncConn, query: LiteralString, params: Any = None) -> Any:
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.Error as exc:
        raise _reraise(exc) from exc
    return None if row is None else row[0]


async def _rows(conn: AsyncConn, cls: type[T], query: LiteralString, params: Any = None) -> list[T]:
    try:
        async with conn.cursor(row_factory=class_row(cls)) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()
    except psycopg.Error as exc:
        raise _reraise(exc) from exc


def _rows_sync(conn: SyncConn, cls: type[T], query: LiteralString, params: Any = None) -> list[T]:
    try:
        with conn.cursor(row_factory=class_row(cls)) as cur:
            cur.execute(query, params)
            return cur.fetchall()
    except psycopg.Error as exc:
        raise _reraise(exc) from exc


# --- client calls (async + sync twin) -------------------------------------------------

INVOKE: LiteralString = """
select pgconductor.invoke(
    task_name => %(task_name)s, payload => %(payload)s, queue => %(queue)s,
    dedupe_key => %(dedupe_key)s, priority => %(priority)s, run_at => %(run_at)s,
    throttle_seconds => %(throttle_seconds)s, debounce_seconds => %(debounce_seconds)s,
    debounce_max_wait_seconds => %(debounce_max_wait_seconds)s)
"""


def invoke_params(
    task_name: str,
    payload: Any,
    queue: str | None,
    dedupe_key: str | None,
    priority: int,
    run_at: datetime | None,
    throttle_seconds: int | None,
    debounce_seconds: int | None,
    debounce_max_wait_seconds: int | None,
) -> dict[str, Any]:
    return {
        "task_name": task_name,
        "payload": Jsonb(payload),
        "queue": queue,
        "dedupe_key": dedupe_key,
        "priority": priority,
        "run_at": run_at,
        "throttle_seconds": throttle_seconds,
        "debounce_seconds": debounce_seconds,
        "debounce_max_wait_seconds": debounce_max_wait_seconds,
    }


async def invoke(conn: AsyncConn, params: dict[str, Any]) -> UUID | None:
    result: UUID | None = await _one(conn, INVOKE, params)
    return result


def invoke_sync(conn: SyncConn, params: dict[str, Any]) -> UUID | None:
    result: UUID | None = _one_sync(conn, INVOKE, params)
    return result


INVOKE_MANY: LiteralString = """
select coalesce(array_agg(i), '{}') from pgconductor.invoke_many(%s, %s::jsonb, %s) i
"""


async def invoke_many(
    conn: AsyncConn, task_name: str, items_json: str, queue: str | None
) -> list[UUID | None]:
    # Binary results: 100,000 uuids decode several times faster than their text form.
    try:
        async with conn.cursor(binary=True) as cur:
            await cur.execute(INVOKE_MANY, (task_name, items_json, queue))
            row = await cur.fetchone()
    except psycopg.Error as exc:
        raise _reraise(exc) from exc
    return [] if row is None else list(row[0])


def invoke_many_sync(conn: SyncConn, task_name: str, items_json: str, queue: str | None) -> list[UUID | None]:
    try:
        with conn.cursor(binary=True) as cur:
            cur.execute(INVOKE_MANY, (task_name, items_json, queue))
            row = cur.fetchone()
    except psycopg.Error as exc:
        raise _reraise(exc) from exc
    return [] if row is None else list(row[0])


CANCEL: LiteralString = "select pgconductor.cancel(%s, %s)"


async def cancel(conn: AsyncConn, execution_id: UUID, reason: str) -> bool:
    return bool(await _one(conn, CANCEL, (execution_id, reason)))


def cancel_sync(conn: SyncConn, execution_id: UUID, reason: str) -> bool:
    return bool(_one_sync(conn, CANCEL, (execution_id, reason)))


GET_EXECUTION: LiteralString = "select * from pgconductor.get_execution(%s)"


async def get_execution(conn: AsyncConn, execution_id: UUID) -> ExecutionInfo | None:
    rows = await _rows(conn, ExecutionInfo, GET_EXECUTION, (execution_id,))
    return rows[0] if rows else None


def get_execution_sync(conn: SyncConn, execution_id: UUID) -> ExecutionInfo | None:
    rows = _rows_sync(conn, ExecutionInfo, GET_EXECUTION, (execution_id,))
    return rows[0] if rows else None


QUEUE_STATS: LiteralString = "select * from pgconductor.queue_stats order by queue, task_name"


async def queue_stats(conn: AsyncConn) -> list[QueueStats]:
    return await _rows(conn, QueueStats, QUEUE_STATS)


def queue_stats_sync(conn: SyncConn) -> list[QueueStats]:
    return _rows_sync(conn, QueueStats, QUEUE_STATS)


FINISHED_CHANNEL = "pgconductor.finished"
CANCEL_CHANNEL = "pgconductor.cancel"
LISTEN_FINISHED: LiteralString = 'listen "pgconductor.finished"'
LISTEN_CANCEL: LiteralString = 'listen "pgconductor.cancel"'


async def listen_finished(conn: AsyncConn) -> None:
    await conn.execute(LISTEN_FINISHED)


def listen_finished_sync(conn: SyncConn) -> None:
    conn.execute(LISTEN_FINISHED)


# --- installation ---------------------------------------------------------------------

VERSIONS: LiteralString = """
select default_version, installed_version from pg_catalog.pg_available_extensions
where name = 'pgconductor'
"""


async def extension_versions(conn: AsyncConn) -> ExtensionVersions:
    cur = await conn.execute(VERSIONS)
    row = await cur.fetchone()
    return ExtensionVersions(None, None) if row is None else ExtensionVersions(row[0], row[1])


async def create_extension(conn: AsyncConn, version: str) -> None:
    await conn.execute(
        psycopg.sql.SQL("create extension if not exists pgconductor version {}").format(
            psycopg.sql.Literal(version)
        )
    )


async def update_extension(conn: AsyncConn, version: str) -> None:
    await conn.execute(
        psycopg.sql.SQL("alter extension pgconductor update to {}").format(psycopg.sql.Literal(version))
    )


# --- time and maintenance (tests and operators) ---------------------------------------

SET_FAKE_TIME: LiteralString = "select pgconductor.set_fake_time(%s)"
CLEAR_FAKE_TIME: LiteralString = "select pgconductor.clear_fake_time()"
NOW: LiteralString = "select pgconductor.now()"
RUN_MAINTENANCE: LiteralString = "select pgconductor.run_maintenance()"


async def set_fake_time(conn: AsyncConn, when: datetime) -> None:
    await _one(conn, SET_FAKE_TIME, (when,))


def set_fake_time_sync(conn: SyncConn, when: datetime) -> None:
    _one_sync(conn, SET_FAKE_TIME, (when,))


async def clear_fake_time(conn: AsyncConn) -> None:
    await _one(conn, CLEAR_FAKE_TIME)


def clear_fake_time_sync(conn: SyncConn) -> None:
    _one_sync(conn, CLEAR_FAKE_TIME)


async def now(conn: AsyncConn) -> datetime:
    result: datetime = await _one(conn, NOW)
    return result


def now_sync(conn: SyncConn) -> datetime:
    result: datetime = _one_sync(conn, NOW)
    return result


async def run_maintenance(conn: AsyncConn) -> dict[str, int]:
    result: dict[str, int] = await _one(conn, RUN_MAINTENANCE)
    return result


def run_maintenance_sync(conn: SyncConn) -> dict[str, int]:
    result: dict[str, int] = _one_sync(conn, RUN_MAINTENANCE)
    return result


# --- worker calls (async only) --------------------------------------------------------

QUEUE_CHANNEL: LiteralString = "select pgconductor.queue_channel(%s)"
REGISTER_WORKER: LiteralString = "select pgconductor.register_worker(%s, %s, %s::jsonb, %s)"
HEARTBEAT: LiteralString = "select pgconductor.heartbeat(%s, %s)"
CLAIM: LiteralString = "select * from pgconductor.claim(%s, %s, %s, %s)"
REPORT: LiteralString = "select pgconductor.report(%s, %s::jsonb)"
RELEASE_ORPHANS: LiteralString = "select pgconductor.release_orphans(%s, %s)"
UNREGISTER_WORKER: LiteralString = "select pgconductor.unregister_worker(%s)"
MAINTENANCE: LiteralString = "select pgconductor.maintenance(%s)"
SAVE_STEPS: LiteralString = "select pgconductor.save_steps(%s, %s::jsonb)"
INVOKE_CHILDREN: LiteralString = "select pgconductor.invoke_children(%s, %s::jsonb)"
CHECKPOINT: LiteralString = "select pgconductor.checkpoint(%s, %s, %s)"


async def queue_channel(conn: AsyncConn, queue: str) -> str:
    result: str = await _one(conn, QUEUE_CHANNEL, (queue,))
    return result


async def listen(conn: AsyncConn, channel: str) -> None:
    await conn.execute(psycopg.sql.SQL("listen {}").format(psycopg.sql.Identifier(channel)))


async def register_worker(
    conn: AsyncConn, worker_id: UUID, name: str, tasks_json: str, lease_seconds: int
) -> None:
    await _one(conn, REGISTER_WORKER, (worker_id, name, tasks_json, lease_seconds))


async def heartbeat(conn: AsyncConn, worker_id: UUID, held: list[UUID]) -> list[UUID] | None:
    result: list[UUID] | None = await _one(conn, HEARTBEAT, (worker_id, held))
    return result


async def claim(
    conn: AsyncConn, worker_id: UUID, queue: str, task_names: Sequence[str], limit: int
) -> list[ClaimedExecution]:
    try:
        async with conn.cursor(row_factory=class_row(ClaimedExecution)) as cur:
            await cur.execute(CLAIM, (worker_id, queue, list(task_names), limit), prepare=True)
            return await cur.fetchall()
    except psycopg.Error as exc:
        raise _reraise(exc) from exc


async def report(conn: AsyncConn, worker_id: UUID, reports_json: str) -> int:
    try:
        cur = await conn.execute(REPORT, (worker_id, reports_json), prepare=True)
        row = await cur.fetchone()
    except psycopg.Error as exc:
        raise _reraise(exc) from exc
    return 0 if row is None else int(row[0])


async def release_orphans(conn: AsyncConn, worker_id: UUID, held: list[UUID]) -> int:
    return int(await _one(conn, RELEASE_ORPHANS, (worker_id, held)))


async def unregister_worker(conn: AsyncConn, worker_id: UUID) -> int:
    return int(await _one(conn, UNREGISTER_WORKER, (worker_id,)))


async def maintenance(conn: AsyncConn, chunk: int) -> dict[str, Any]:
    result: dict[str, Any] = await _one(conn, MAINTENANCE, (chunk,))
    return result


async def invoke_children(conn: AsyncConn, worker_id: UUID, items_json: str) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = await _one(conn, INVOKE_CHILDREN, (worker_id, items_json))
    return answers


async def checkpoint(conn: AsyncConn, worker_id: UUID, execution_id: UUID, run: int) -> dict[str, Any]:
    answer: dict[str, Any] = await _one(conn, CHECKPOINT, (worker_id, execution_id, run))
    return answer


async def save_steps(conn: AsyncConn, worker_id: UUID, steps_json: str) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = await _one(conn, SAVE_STEPS, (worker_id, steps_json))
    return answers

"""Saving step results for many handlers at once.

Handlers of one worker save their steps through one StepWriter: a save that arrives while
another call is in flight waits for it and goes out with the others in the next
`pgconductor.save_steps` call. An idle writer sends a save at once (one round trip); under
load, many saves share one round trip.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from uuid import UUID

import psycopg

from . import sql
from .connection import DedicatedConnection
from .errors import PgConductorError

logger = logging.getLogger("pgconductor.worker")
MAX_BATCH = 500
MAX_BATCH_BYTES = 16 * 1024 * 1024


def _settle(
    future: asyncio.Future[dict[str, Any]],
    answer: dict[str, Any] | None = None,
    exc: BaseException | None = None,
) -> None:
    if future.done():  # its handler may have been cancelled meanwhile
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    elif exc is not None:
        future.set_exception(exc)
    else:
        assert answer is not None
        future.set_result(answer)


def _connection_lost(exc: psycopg.OperationalError, conn: DedicatedConnection) -> bool:
    """Retry only what a new try can fix: a lost connection, a deadlock or serialization
    failure, a server shutting down (SQLSTATE classes 08, 40, 57)."""
    state = exc.sqlstate
    return state is None or state[:2] in ("08", "40", "57") or conn.closed


class StepWriter:
    """Writes step results on its own connection, batching the saves that queue up."""

    def __init__(self, dsn: str, worker_id: UUID) -> None:
        self._conn = DedicatedConnection(dsn, "steps")
        self._worker_id = worker_id
        self._queue: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def save(self, execution_id: UUID, attempt: int, name: str, result_json: str) -> dict[str, Any]:
        """Save one step; returns {"held", "result", "cancel_reason"} (see pgconductor.save_steps)."""
        name_json = json.dumps(name)
        item = f'{{"id":"{execution_id}","attempt":{attempt},"name":{name_json},"result":{result_json}}}'
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return await future

    def _next_batch(self) -> list[tuple[str, asyncio.Future[dict[str, Any]]]]:
        """The queued saves that go out together: at most MAX_BATCH, and MAX_BATCH_BYTES of
        JSON (Postgres limits one jsonb value), but always at least one."""
        size = 0
        count = 0
        for item, _ in self._queue[:MAX_BATCH]:
            size += len(item)
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    async def _write_queued(self) -> None:
        # No await between the emptiness check and returning: a save that finds this task
        # done has its item written by the next task it starts.
        while self._queue:
            batch = self._next_batch()
            try:
                try:
                    answers = await self._write([item for item, _ in batch])
                except (PgConductorError, psycopg.Error):
                    # Refused as a whole: write one by one, so one bad item fails only its saver.
                    for item, future in batch:
                        try:
                            (answer,) = await self._write([item])
                        except (PgConductorError, psycopg.Error) as exc:
                            _settle(future, exc=exc)
                        else:
                            _settle(future, answer)
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    _settle(future, answer)
            except BaseException as exc:
                # Whatever happened, no saver may wait forever.
                for _, future in batch:
                    _settle(future, exc=exc)
                if not isinstance(exc, Exception):
                    raise

    async def _write(self, items: list[str]) -> list[dict[str, Any]]:
        """One save_steps call, retried after a lost connection (a save is idempotent).
        An error the server raises (a refusal, a limit) is not retried."""
        payload = "[" + ",".join(items) + "]"
        while True:
            try:
                conn = await self._conn.get()
                answers = await sql.save_steps(conn, self._worker_id, payload)
            except psycopg.OperationalError as exc:
                if not _connection_lost(exc, self._conn):
                    raise
                await self._conn.failed(exc)
                continue
            self._conn.succeeded()
            return answers

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])
        await self._conn.close()

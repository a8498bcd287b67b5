"""Durable calls of many handlers, batched.

A handler's step save or child start must be committed before the handler goes on, so it
waits for its call. The calls of all handlers of a worker go through a BatchedCall per SQL
function: a call that arrives while another is in flight waits for it and goes out with
the others in the next call of the many-item function (`pgconductor.save_steps`,
`pgconductor.invoke_children`). An idle worker sends each call at once (one round trip);
under load, many calls share one round trip. Each BatchedCall has a dedicated connection
of its own, so at most one call of it is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from .connection import DedicatedConnection
from .errors import PgConductorError

AsyncConn = psycopg.AsyncConnection[Any]
ManyCall = Callable[[AsyncConn, str], Awaitable[list[dict[str, Any]]]]

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


class BatchedCall:
    """Sends JSON items through one many-item SQL function, batching those that queue up;
    each submitter gets the answer for its own item."""

    def __init__(self, conn: DedicatedConnection, call: ManyCall) -> None:
        self._conn = conn  # used by this BatchedCall only: one call in flight at a time
        # (connection, JSON array text) -> one answer per item, in order. The function must
        # answer a call sent again after a lost connection as it did the first time (a step
        # is saved once; a child start answers "waiting" again for the same run).
        self._call = call
        self._queue: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: str) -> dict[str, Any]:
        """Send one item (JSON object text) and return its answer; raises what the database
        raised for it (translated), after the batch was retried item by item."""
        if self._closed:
            raise PgConductorError("the worker has stopped: nothing more is sent")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return await future

    def _next_batch(self) -> list[tuple[str, asyncio.Future[dict[str, Any]]]]:
        """The queued items that go out together: at most MAX_BATCH, and MAX_BATCH_BYTES of
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
        # No await between the emptiness check and returning: a submit that finds this task
        # done has its item sent by the next task it starts.
        while self._queue:
            batch = self._next_batch()
            try:
                try:
                    answers = await self._write([item for item, _ in batch])
                except (PgConductorError, psycopg.Error):
                    # Refused as a whole: send one by one, so one bad item fails only its submitter.
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
                # Whatever happened, no submitter may wait forever.
                for _, future in batch:
                    _settle(future, exc=exc)
                if not isinstance(exc, Exception):
                    raise

    async def _write(self, items: list[str]) -> list[dict[str, Any]]:
        """One call, sent again after a lost connection (the functions are idempotent per
        run). An error the server raises (a refusal, a limit) is not retried."""
        payload = "[" + ",".join(items) + "]"
        while True:
            try:
                conn = await self._conn.get()
                answers = await self._call(conn, payload)
            except psycopg.OperationalError as exc:
                state = exc.sqlstate or ""
                if state[:2] == "40" and not self._conn.closed:
                    # Deadlock or serialization failure: rolled back for sure; try again.
                    await asyncio.sleep(0.01)
                    continue
                if not _connection_lost(exc, self._conn):
                    raise
                await self._conn.failed(exc)
                continue
            self._conn.succeeded()
            return answers

    async def close(self) -> None:
        """Refuse new items, wait until every submitted one has its answer, close."""
        self._closed = True
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])
        await self._conn.close()

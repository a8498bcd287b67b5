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

logger = logging.getLogger("pgconductor.worker")
MAX_BATCH = 500


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

    async def _write_queued(self) -> None:
        # No await between the emptiness check and returning: a save that finds this task
        # done has its item written by the next task it starts.
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                answers = await self._write([item for item, _ in batch])
            except psycopg.Error:
                # Refused as a whole: write one by one, so one bad item fails only its saver.
                for item, future in batch:
                    try:
                        (answer,) = await self._write([item])
                    except psycopg.Error as exc:
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(answer)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():  # its handler may have been cancelled meanwhile
                    future.set_result(answer)

    async def _write(self, items: list[str]) -> list[dict[str, Any]]:
        """One save_steps call, retried through reconnects (a save is idempotent)."""
        payload = "[" + ",".join(items) + "]"
        while True:
            try:
                conn = await self._conn.get()
                answers = await sql.save_steps(conn, self._worker_id, payload)
            except psycopg.OperationalError as exc:
                await self._conn.failed(exc)
                continue
            self._conn.succeeded()
            return answers

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])
        await self._conn.close()

"""A dedicated autocommit connection of a worker (claims, flushes, step saves, duties)
that is reopened with backoff after a failure."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

logger = logging.getLogger("pgconductor.worker")
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0


class DedicatedConnection:
    """A dedicated autocommit connection that is reopened with backoff after a failure."""

    def __init__(self, dsn: str, role: str) -> None:
        self._dsn = dsn
        self._role = role
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._backoff = BACKOFF_START_S
        self.lost = False
        self._connecting = asyncio.Lock()  # two callers never open two connections

    @property
    def closed(self) -> bool:
        """True when there is no open connection (never opened, lost or closed)."""
        return self._conn is None or self._conn.closed

    async def get(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            return self._conn

    async def failed(self, exc: BaseException) -> None:
        """Forget the connection and wait before the next try."""
        self.lost = True
        logger.warning(
            "database connection lost; retrying",
            extra={"connection": self._role, "error": str(exc), "retry_in_s": self._backoff},
        )
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def succeeded(self) -> None:
        self._backoff = BACKOFF_START_S

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

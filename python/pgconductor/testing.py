"""Helpers for tests of code that uses pgconductor: fake time, maintenance, draining."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from . import sql
from .conductor import Conductor
from .orchestrator import Orchestrator
from .task import Task
from .worker import WorkerConfig


def allow_fake_time(dsn: str, dbname: str) -> None:
    """Allow fake time in a test database (new connections see it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("alter database {} set pgconductor.allow_fake_time = on").format(
                psycopg.sql.Identifier(dbname)
            )
        )


async def set_fake_time(conductor: Conductor, when: datetime) -> None:
    """Freeze pgconductor.now() at `when` for every connection of the database."""
    async with conductor.connection() as conn:
        await sql.set_fake_time(conn, when)


async def advance_time(conductor: Conductor, delta: timedelta) -> datetime:
    """Move the (fake) clock forward by `delta`; returns the new time."""
    async with conductor.connection() as conn:
        when = await sql.now(conn) + delta
        await sql.set_fake_time(conn, when)
    return when


async def clear_fake_time(conductor: Conductor) -> None:
    async with conductor.connection() as conn:
        await sql.clear_fake_time(conn)


async def run_maintenance(conductor: Conductor) -> dict[str, Any]:
    async with conductor.connection() as conn:
        return await sql.run_maintenance(conn)


async def drain(
    conductor: Conductor, tasks: list[Task] | None = None, config: WorkerConfig | None = None
) -> Orchestrator:
    """Run the given tasks (default: all of the Conductor's) until nothing is ready."""
    orchestrator = Orchestrator.create(conductor, tasks=tasks, default_worker=config)
    await orchestrator.drain()
    return orchestrator

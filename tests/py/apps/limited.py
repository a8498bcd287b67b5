"""Worker process for tests/py/test_concurrency.py: `pgconductor worker
tests.py.apps.limited:app` runs task "limited" with concurrency LIMIT. Each handler run
records its span (start and end, database clock) in the test's `spans` table.

Environment: PGCONDUCTOR_DSN, LIMIT (task concurrency), SLEEP_S (handler duration),
WORKER_CONCURRENCY (WorkerConfig.concurrency, default 10).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pgconductor import Conductor, Orchestrator, WorkerConfig


def app() -> Orchestrator:
    conductor = Conductor.create(os.environ["PGCONDUCTOR_DSN"])
    sleep_s = float(os.environ.get("SLEEP_S", "0.1"))

    @conductor.task("limited", concurrency=int(os.environ["LIMIT"]))
    async def limited(event: Any, ctx: Any) -> None:
        async with conductor.connection() as conn:
            cur = await conn.execute(
                "insert into spans (execution_id, pid, started_at) values (%s, %s, clock_timestamp())"
                " returning span",
                (ctx.execution_id, os.getpid()),
            )
            row = await cur.fetchone()
        await asyncio.sleep(sleep_s)
        async with conductor.connection() as conn:
            await conn.execute("update spans set ended_at = clock_timestamp() where span = %s", (row[0],))

    return Orchestrator.create(
        conductor,
        default_worker=WorkerConfig(
            concurrency=int(os.environ.get("WORKER_CONCURRENCY", "10")), poll_interval_ms=100
        ),
    )

"""Worker processes for tests/py/test_processes.py.

`pgconductor worker tests.py.apps.procs:app` runs one task, "proc-work", whose handler
records every start in the test's `calls` table (execution_id, pid, what), then sleeps.

Environment:
  PGCONDUCTOR_DSN       the test database
  PROC_SLEEP_S          seconds the handler sleeps after recording its start (default 0)
  PROC_SHUTDOWN_S       WorkerConfig.shutdown_timeout_s (default 30)
  PROC_CONCURRENCY      WorkerConfig.concurrency (default 10)
  PROC_RECORD_ABORT     "1": when ctx.signal is set, record a row with what = 'aborted'
                        (the handler keeps sleeping: it ignores the signal)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pgconductor import Conductor, Orchestrator, WorkerConfig

TASK = "proc-work"


def app() -> Orchestrator:
    dsn = os.environ["PGCONDUCTOR_DSN"]
    sleep_s = float(os.environ.get("PROC_SLEEP_S", "0"))
    shutdown_s = float(os.environ.get("PROC_SHUTDOWN_S", "30"))
    concurrency = int(os.environ.get("PROC_CONCURRENCY", "10"))
    record_abort = os.environ.get("PROC_RECORD_ABORT") == "1"
    conductor = Conductor.create(dsn)

    async def record(execution_id: Any, what: str) -> None:
        async with conductor.connection() as conn:
            await conn.execute(
                "insert into calls (execution_id, pid, what) values (%s, %s, %s)",
                (execution_id, os.getpid(), what),
            )

    async def on_abort(ctx: Any) -> None:
        await ctx.signal.wait()
        await record(ctx.execution_id, "aborted")

    @conductor.task(TASK)
    async def work(event: Any, ctx: Any) -> dict[str, Any]:
        await record(ctx.execution_id, "start")
        watcher = asyncio.create_task(on_abort(ctx)) if record_abort else None
        try:
            if sleep_s:
                await asyncio.sleep(sleep_s)
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
        return {"pid": os.getpid()}

    return Orchestrator.create(
        conductor,
        tasks=[work],
        default_worker=WorkerConfig(concurrency=concurrency, shutdown_timeout_s=shutdown_s),
    )

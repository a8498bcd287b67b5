"""Worker process for tests/py/test_shutdown_checkpoints.py: task "looper" saves one step
("prepare", recorded in the test's `calls` table), then loops LOOP_N times over a
checkpoint and a 10 ms pause. WorkerConfig.shutdown_timeout_s is 60 s, so a prompt exit
after SIGTERM can only come from a release at a checkpoint."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pgconductor import Conductor, Orchestrator, WorkerConfig


def app() -> Orchestrator:
    conductor = Conductor.create(os.environ["PGCONDUCTOR_DSN"])
    loops = int(os.environ.get("LOOP_N", "100000"))

    @conductor.task("looper")
    async def looper(event: Any, ctx: Any) -> dict[str, int]:
        async def prepare() -> int:
            async with conductor.connection() as conn:
                await conn.execute(
                    "insert into calls (execution_id, pid, what) values (%s, %s, 'prepare')",
                    (ctx.execution_id, os.getpid()),
                )
            return os.getpid()

        prepared_by = await ctx.step("prepare", prepare)
        for _ in range(loops):
            await ctx.checkpoint()
            await asyncio.sleep(0.01)
        return {"prepared_by": prepared_by, "finished_by": os.getpid()}

    return Orchestrator.create(conductor, default_worker=WorkerConfig(shutdown_timeout_s=60))

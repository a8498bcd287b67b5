"""Worker application for the benchmarks, started as its own process:
`pgconductor worker bench.app:orchestrator`. Settings come from the environment."""

from __future__ import annotations

import os
import time
from typing import Any

from pgconductor import Conductor, Orchestrator, WorkerConfig


def orchestrator() -> Orchestrator:
    conductor = Conductor.create(os.environ["PGCONDUCTOR_DSN"])
    starts_path = os.environ.get("BENCH_STARTS_FILE")
    starts = open(starts_path, "a", buffering=1) if starts_path else None

    @conductor.task("noop", remove_on_complete=False)
    async def noop(event: Any, ctx: Any) -> None:
        return None

    plain_only = os.environ.get("BENCH_PLAIN_ONLY") == "1"

    @conductor.task("limited", concurrency=int(os.environ.get("BENCH_LIMIT", "5")), remove_on_complete=False)
    async def limited(event: Any, ctx: Any) -> None:
        return None

    @conductor.task("batch", batch={"size": 100, "timeout_ms": 50}, remove_on_complete=False)
    async def batch(events: Any, ctx: Any) -> None:
        return None

    @conductor.task("steps10", remove_on_complete=False)
    async def steps10(event: Any, ctx: Any) -> dict[str, float]:
        # Ten durable steps; the result carries the mean wall time of one step (save included).
        started = time.perf_counter()
        for i in range(10):
            await ctx.step(f"s{i}", lambda i=i: i)
        return {"step_ms": (time.perf_counter() - started) * 100}

    @conductor.task("parent", remove_on_complete=False)
    async def parent(event: Any, ctx: Any) -> Any:
        # One child round trip: invoke, wait without a worker, resume with the child's result.
        return await ctx.invoke("child", "noop", {})

    @conductor.task("probe", remove_on_complete=False)
    async def probe(event: Any, ctx: Any) -> None:
        # Latency probe: record when the handler started, in wall-clock time.
        assert starts is not None
        starts.write(f"{ctx.execution_id} {time.time()}\n")

    config = WorkerConfig(
        concurrency=int(os.environ.get("BENCH_CONCURRENCY", "1000")),
        fetch_batch_size=int(os.environ.get("BENCH_FETCH", "500")),
        flush_batch_size=int(os.environ.get("BENCH_FLUSH_BATCH", "1000")),
        flush_interval_ms=int(os.environ.get("BENCH_FLUSH_MS", "50")),
        poll_interval_ms=int(os.environ.get("BENCH_POLL_MS", "1000")),
    )
    tasks = [noop, probe] if plain_only else None
    return Orchestrator.create(conductor, tasks=tasks, default_worker=config)

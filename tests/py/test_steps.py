"""Durable steps and checkpoints: memoized step results across retries and resumes,
cancellation and graceful shutdown at steps and checkpoints."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgconductor import Conductor, ExecutionCancelled, Orchestrator, WorkerConfig
from pgconductor.testing import advance_time, set_fake_time

DB = psycopg.Connection[tuple[Any, ...]]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def drain(conductor: Conductor) -> None:
    await Orchestrator.create(conductor).drain()


async def test_steps_run_once_across_a_forced_retry(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    calls: Counter[str] = Counter()

    def charge() -> dict[str, Any]:
        calls["charge"] += 1
        return {"charged": 42, "items": [1, {"nested": None}]}

    async def notify() -> None:
        calls["notify"] += 1
        if calls["notify"] == 1:
            raise RuntimeError("mail server down")

    @conductor.task("order")
    async def order(event: Any, ctx: Any) -> Any:
        charged = await ctx.step("charge", charge)
        nothing = await ctx.step("notify", notify)
        return {"charged": charged, "notify": nothing}

    execution_id = await order.invoke({})
    await drain(conductor)  # attempt 1: charge saved, notify raised
    steps = dict(db.execute("select name, result from pgconductor._steps").fetchall())
    assert steps == {"charge": {"charged": 42, "items": [1, {"nested": None}]}}
    await advance_time(conductor, timedelta(seconds=15))
    await drain(conductor)  # attempt 2: charge comes from the database, notify runs again
    assert await conductor.wait_for(execution_id) == {
        "charged": {"charged": 42, "items": [1, {"nested": None}]},
        "notify": None,
    }
    assert calls == {"charge": 1, "notify": 2}


async def test_a_reused_step_name_returns_the_first_result(conductor: Conductor) -> None:
    @conductor.task("twice")
    async def twice(event: Any, ctx: Any) -> list[Any]:
        first = await ctx.step("same", lambda: [1, 2])
        second = await ctx.step("same", lambda: "other")
        return [first, second]

    execution_id = await twice.invoke({})
    await drain(conductor)
    assert await conductor.wait_for(execution_id) == [[1, 2], [1, 2]]


async def test_a_non_json_step_result_fails_with_a_clear_error(conductor: Conductor, db: DB) -> None:
    @conductor.task("bad-step", max_attempts=1)
    async def bad_step(event: Any, ctx: Any) -> None:
        await ctx.step("set", lambda: {1, 2})

    execution_id = await bad_step.invoke({})
    await drain(conductor)
    info = await conductor.get_execution(execution_id)
    assert info is not None and info.status == "failed" and info.error is not None
    assert info.error["type"] == "InvalidResult" and "step 'set'" in info.error["message"]
    assert db.execute("select count(*) from pgconductor._steps").fetchone() == (0,)


async def test_cancel_while_running_raises_at_the_next_checkpoint(conductor: Conductor, db: DB) -> None:
    reached: list[str] = []

    @conductor.task("loop")
    async def loop(event: Any, ctx: Any) -> None:
        while True:
            await ctx.checkpoint()
            reached.append("checkpoint")
            await asyncio.sleep(0.01)

    execution_id = await loop.invoke({})
    orchestrator = Orchestrator.create(conductor)
    await orchestrator.start(handle_signals=False)
    try:
        while not reached:
            await asyncio.sleep(0.01)
        assert await conductor.cancel(execution_id, reason="user left")
        with pytest.raises(ExecutionCancelled):
            await conductor.wait_for(execution_id, timeout=10)
    finally:
        await orchestrator.stop()
    info = await conductor.get_execution(execution_id)
    assert info is not None and (info.status, info.attempts) == ("cancelled", 1)
    assert info.error == {"type": "Cancelled", "message": "user left"}


async def test_stop_releases_at_the_next_checkpoint_and_steps_survive(conductor: Conductor, db: DB) -> None:
    calls: Counter[str] = Counter()
    progress: list[int] = []

    def prepare() -> str:
        calls["prepare"] += 1
        return "prepared"

    @conductor.task("long")
    async def long(event: Any, ctx: Any) -> str:
        prepared = await ctx.step("prepare", prepare)
        for i in range(1000):
            await ctx.checkpoint()
            progress.append(i)
            await asyncio.sleep(0.005 if not event.payload.get("fast") else 0)
        return prepared

    execution_id = await long.invoke({})
    # A generous grace period: the release comes from the checkpoint, not from the timeout.
    orchestrator = Orchestrator.create(conductor, default_worker=WorkerConfig(shutdown_timeout_s=30))
    await orchestrator.start(handle_signals=False)
    while len(progress) < 3:
        await asyncio.sleep(0.01)
    await orchestrator.stop()
    info = await conductor.get_execution(execution_id)
    assert info is not None and (info.status, info.attempts) == ("pending", 0)
    assert len(progress) < 1000
    await drain(conductor)
    assert await conductor.wait_for(execution_id) == "prepared"
    assert calls == {"prepare": 1}


async def test_sleep_frees_the_worker_and_resumes_after_the_delay(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    calls: Counter[str] = Counter()

    def before() -> str:
        calls["before"] += 1
        return "done before"

    @conductor.task("nap")
    async def nap(event: Any, ctx: Any) -> str:
        first = await ctx.step("before", before)
        await ctx.sleep("an hour", timedelta(hours=1))
        calls["after"] += 1
        return first

    execution_id = await nap.invoke({})
    await drain(conductor)
    info = await conductor.get_execution(execution_id)
    assert info is not None and (info.status, info.attempts) == ("waiting", 0)
    assert info.run_at == T0 + timedelta(hours=1)
    await advance_time(conductor, timedelta(minutes=59))
    await drain(conductor)  # not yet
    assert calls == {"before": 1}
    await advance_time(conductor, timedelta(minutes=1))
    await drain(conductor)
    assert await conductor.wait_for(execution_id) == "done before"
    assert calls == {"before": 1, "after": 1}
    info = await conductor.get_execution(execution_id)
    assert info is not None and info.attempts == 1  # the sleep was not an attempt


async def test_cancel_while_sleeping_ends_it_at_once(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)

    @conductor.task("sleeper")
    async def sleeper(event: Any, ctx: Any) -> None:
        await ctx.sleep("wait", 60_000)

    execution_id = await sleeper.invoke({})
    await drain(conductor)
    assert await conductor.cancel(execution_id, reason="no longer needed")
    with pytest.raises(ExecutionCancelled):
        await conductor.wait_for(execution_id, timeout=5)
    await advance_time(conductor, timedelta(minutes=2))
    await drain(conductor)
    info = await conductor.get_execution(execution_id)
    assert info is not None and info.status == "cancelled"


@pytest.mark.parametrize("delay", [-1, "soon", True])
async def test_a_bad_sleep_delay_fails_naming_it(conductor: Conductor, delay: Any) -> None:
    @conductor.task("bad-sleep", max_attempts=1)
    async def bad_sleep(event: Any, ctx: Any) -> None:
        await ctx.sleep("x", delay)

    execution_id = await bad_sleep.invoke({})
    await drain(conductor)
    info = await conductor.get_execution(execution_id)
    assert info is not None and info.status == "failed" and info.error is not None
    assert info.error["type"] == "InvalidInput" and "delay" in info.error["message"]

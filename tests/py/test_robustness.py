"""Failure modes found in review: a worker that outlived its lease, outcomes the database
refuses, plain-def handlers at shutdown, and values Postgres cannot store."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from pgconductor import Conductor, InvalidInput, Orchestrator, WorkerConfig
from pgconductor.testing import run_maintenance

DB = psycopg.Connection[tuple[Any, ...]]


async def poll(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_worker_that_outlived_its_lease_runs_the_reclaimed_attempt_to_completion(
    conductor: Conductor, db: DB
) -> None:
    """The lease lapses while attempt 1 runs (a stalled process); the execution is recovered
    and claimed again by the same worker. Attempt 1 is told (signal "lease lost"), both
    attempts finish without crashing the worker, and the newer attempt's outcome counts."""
    release_first = asyncio.Event()
    seen: list[tuple[int, str | None]] = []

    @conductor.task("stalls")
    async def stalls(event: Any, ctx: Any) -> dict[str, int]:
        if ctx.attempt == 1:
            await release_first.wait()
        seen.append((ctx.attempt, ctx.signal.reason))
        return {"attempt": ctx.attempt}

    execution_id = await stalls.invoke({})
    orchestrator = Orchestrator.create(
        conductor, default_worker=WorkerConfig(poll_interval_ms=50), heartbeat_interval_s=30
    )
    await orchestrator.start(handle_signals=False)
    try:
        await poll(
            lambda: (
                db.execute("select count(*) from pgconductor.executions where status = 'running'").fetchone()
                == (1,)
            ),
            "attempt 1 to run",
        )
        # The process stalls past its lease: its heartbeat is an hour old when maintenance runs.
        db.execute("update pgconductor._workers set last_seen_at = last_seen_at - interval '1 hour'")
        assert (await run_maintenance(conductor))["recovered"] == 1
        await poll(
            lambda: (
                db.execute(
                    "select attempts from pgconductor.executions where id = %s", (execution_id,)
                ).fetchone()
                == (2,)
            ),
            "attempt 2 to be claimed",
        )
        release_first.set()
        assert await conductor.wait_for(execution_id, timeout=10) == {"attempt": 2}
        await poll(lambda: len(seen) == 2, "both attempts to return")
    finally:
        await orchestrator.stop()
    assert sorted(seen) == [(1, "lease lost"), (2, None)]
    info = orchestrator.info()["workers"][0]
    assert info["completed"] == 2 and info["running"] == 0


async def test_an_outcome_the_database_refuses_does_not_hold_back_the_others(
    conductor: Conductor, db: DB
) -> None:
    """A result Postgres cannot store fails only its own execution; the rest complete."""

    @conductor.task("values")
    async def values(event: Any, ctx: Any) -> Any:
        return {"v": float("nan")} if event.payload["n"] == 0 else {"v": event.payload["n"]}

    ids = await conductor.invoke_many("values", [{"payload": {"n": n}} for n in range(5)])
    await Orchestrator.create(conductor).drain()
    rows = dict(
        db.execute("select id, status from pgconductor.executions where task_name = 'values'").fetchall()
    )
    assert rows[ids[0]] in ("pending", "failed")  # NaN: an InvalidResult failure, retried
    error = db.execute("select error from pgconductor.executions where id = %s", (ids[0],)).fetchone()
    assert error is not None and error[0]["type"] == "InvalidResult"
    assert [rows[i] for i in ids[1:]] == ["completed"] * 4


async def test_plain_def_handler_is_not_released_while_its_thread_runs(conductor: Conductor, db: DB) -> None:
    """Stopping cannot interrupt a thread: the worker waits for it and stores its result,
    instead of releasing an execution that is still running."""
    started = threading.Event()
    finish = threading.Event()

    @conductor.task("blocking")
    def blocking(event: Any, ctx: Any) -> dict[str, bool]:
        started.set()
        finish.wait(30)
        return {"done": True}

    execution_id = await blocking.invoke({})
    orchestrator = Orchestrator.create(conductor, default_worker=WorkerConfig(shutdown_timeout_s=0.05))
    await orchestrator.start(handle_signals=False)
    await poll(started.is_set, "the handler to start")
    stopping = asyncio.create_task(orchestrator.stop())
    await asyncio.sleep(0.2)  # past the grace period: the worker must still be waiting
    assert not stopping.done()
    finish.set()
    await stopping
    info = await conductor.get_execution(execution_id)
    assert info is not None and (info.status, info.attempts, info.result) == ("completed", 1, {"done": True})


@pytest.mark.parametrize(
    ("call", "input"),
    [
        (lambda c: c.invoke("t", {"v": float("nan")}), "payload"),
        (lambda c: c.invoke("t", {"v": "a\x00b"}), "payload"),
        (lambda c: c.invoke("t", {}, priority=2**40), "priority"),
        (lambda c: c.invoke("t", {}, queue="é" * 30), "queue"),
        (lambda c: c.invoke_many("t", [{"payload": {"v": float("inf")}}]), "items[0]"),
        (lambda c: c.invoke_many("t", [{"priority": 2**40}]), "items[0].priority"),
    ],
)
async def test_values_postgres_cannot_store_are_refused_before_writing(
    conductor: Conductor, db: DB, call: Any, input: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        await call(conductor)
    assert raised.value.input == input
    assert db.execute("select count(*) from pgconductor._executions").fetchone() == (0,)


def test_retention_beyond_a_century_is_refused(conductor: Conductor) -> None:
    with pytest.raises(InvalidInput) as raised:
        conductor.create_task("t", lambda e, c: None, remove_on_complete={"days": 1e9})
    assert raised.value.input == "remove_on_complete"


async def test_a_quick_outcome_is_written_while_a_long_handler_runs(conductor: Conductor) -> None:
    """flush_interval_ms bounds how long an outcome waits, even beside a long handler."""
    release = asyncio.Event()

    @conductor.task("long")
    async def long(event: Any, ctx: Any) -> None:
        await release.wait()

    @conductor.task("quick")
    async def quick(event: Any, ctx: Any) -> str:
        return "done"

    await long.invoke({})
    orchestrator = Orchestrator.create(conductor, default_worker=WorkerConfig(flush_interval_ms=20))
    await orchestrator.start(handle_signals=False)
    try:
        quick_id = await quick.invoke({})
        # The long handler is still running; the quick result must not wait for it.
        assert await conductor.wait_for(quick_id, timeout=10) == "done"
    finally:
        release.set()
        await orchestrator.stop()


async def test_invoke_and_invoke_many_accept_and_refuse_the_same_payloads(
    conductor: Conductor, db: DB
) -> None:
    from datetime import UTC, datetime

    import pydantic

    class Body(pydantic.BaseModel):
        n: int

    # A pydantic payload is accepted by both (no task model declared).
    one = await conductor.invoke("t", Body(n=1))
    many = await conductor.invoke_many("t", [{"payload": Body(n=2)}])
    payloads = dict(db.execute("select id, payload from pgconductor.executions").fetchall())
    assert payloads[one] == {"n": 1} and payloads[many[0]] == {"n": 2}
    # A datetime inside a payload is not JSON: refused by both, naming the input.
    with pytest.raises(InvalidInput) as by_one:
        await conductor.invoke("t", {"at": datetime.now(UTC)})
    with pytest.raises(InvalidInput) as by_many:
        await conductor.invoke_many("t", [{"payload": {"at": datetime.now(UTC)}}])
    assert (by_one.value.input, by_many.value.input) == ("payload", "items[0]")
    # run_at as a datetime is fine in both.
    assert len(await conductor.invoke_many("t", [{"run_at": datetime.now(UTC)}])) == 1


async def test_a_model_payload_with_a_nul_character_is_refused(conductor: Conductor, db: DB) -> None:
    import pydantic

    from pgconductor import define_task

    class Body(pydantic.BaseModel):
        text: str

    typed = Conductor.create(conductor.dsn, tasks=[define_task("typed", payload=Body)])
    async with typed:
        with pytest.raises(InvalidInput) as raised:
            await typed.invoke("typed", {"text": "a\x00b"})
    assert raised.value.input == "payload"
    assert db.execute("select count(*) from pgconductor._executions").fetchone() == (0,)

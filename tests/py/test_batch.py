"""Batch tasks: groups decided in SQL, one handler run per group, results mapped back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgconductor import BatchContext, Conductor, InvalidInput, Orchestrator, PgConductorError
from pgconductor.testing import advance_time, set_fake_time

DB = psycopg.Connection[tuple[Any, ...]]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def statuses(db: DB, task: str) -> dict[Any, tuple[str, int, Any]]:
    rows = db.execute(
        "select id, status, attempts, result from pgconductor.executions where task_name = %s", (task,)
    ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


async def drain(conductor: Conductor) -> None:
    await Orchestrator.create(conductor).drain()


async def test_full_group_at_once_and_the_rest_after_the_timeout(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    groups: list[list[int]] = []

    @conductor.task("rows", batch={"size": 3, "timeout_ms": 2000})
    async def rows(events: Any, ctx: Any) -> None:
        assert isinstance(ctx, BatchContext)
        groups.append([e.payload["n"] for e in events])

    await conductor.invoke_many("rows", [{"payload": {"n": n}} for n in range(5)])
    await drain(conductor)
    assert groups == [[0, 1, 2]]  # a full group at once; 2 ready are fewer than the size
    await advance_time(conductor, timedelta(milliseconds=1999))
    await drain(conductor)
    assert groups == [[0, 1, 2]]
    await advance_time(conductor, timedelta(milliseconds=1))  # the oldest has waited 2 s
    await drain(conductor)
    assert groups == [[0, 1, 2], [3, 4]]
    assert {s for s, _, _ in statuses(db, "rows").values()} == {"completed"}


async def test_results_are_mapped_to_each_execution(conductor: Conductor) -> None:
    @conductor.task("double", batch={"size": 4, "timeout_ms": 0})
    def double(events: Any, ctx: Any) -> list[dict[str, int]]:  # plain def works too
        return [{"twice": e.payload["n"] * 2} for e in events]

    ids = await conductor.invoke_many("double", [{"payload": {"n": n}} for n in range(4)])
    await drain(conductor)
    assert [await conductor.wait_for(i) for i in ids] == [{"twice": n * 2} for n in range(4)]


async def test_a_failure_fails_and_retries_the_whole_group(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    calls: list[list[int]] = []

    @conductor.task("flaky", batch={"size": 3, "timeout_ms": 0}, max_attempts=2)
    async def flaky(events: Any, ctx: Any) -> None:
        calls.append([e.payload["n"] for e in events])
        if len(calls) == 1:
            raise RuntimeError("the bulk API said no")

    await conductor.invoke_many("flaky", [{"payload": {"n": n}} for n in range(3)])
    await drain(conductor)
    after_failure = statuses(db, "flaky")
    assert {(s, a) for s, a, _ in after_failure.values()} == {("pending", 1)}
    errors = db.execute("select distinct error ->> 'message' from pgconductor.executions").fetchall()
    assert errors == [("the bulk API said no",)]
    await advance_time(conductor, timedelta(seconds=15))
    await drain(conductor)
    assert calls == [[0, 1, 2], [0, 1, 2]]
    assert {(s, a) for s, a, _ in statuses(db, "flaky").values()} == {("completed", 2)}


async def test_a_result_list_of_the_wrong_length_fails_the_group(conductor: Conductor, db: DB) -> None:
    @conductor.task("short", batch={"size": 3, "timeout_ms": 0}, max_attempts=1)
    async def short(events: Any, ctx: Any) -> list[int]:
        return [1]

    ids = await conductor.invoke_many("short", [{"payload": {"n": n}} for n in range(3)])
    await drain(conductor)
    for execution_id in ids:
        info = await conductor.get_execution(execution_id)
        assert info is not None and info.status == "failed" and info.error is not None
        assert info.error["type"] == "InvalidResult"
        assert "list of 3 results" in info.error["message"] and "got 1 results" in info.error["message"]


async def test_batch_and_plain_tasks_share_a_queue(conductor: Conductor, db: DB) -> None:
    seen: dict[str, int] = {"batch": 0, "plain": 0}

    @conductor.task("b", batch={"size": 10, "timeout_ms": 0})
    async def b(events: Any, ctx: Any) -> None:
        seen["batch"] += len(events)

    @conductor.task("p")
    async def p(event: Any, ctx: Any) -> None:
        seen["plain"] += 1

    await conductor.invoke_many("b", [{"payload": {}} for _ in range(25)])
    await conductor.invoke_many("p", [{"payload": {}} for _ in range(25)])
    await drain(conductor)
    assert seen == {"batch": 25, "plain": 25}


async def test_batch_with_a_concurrency_limit_never_runs_more_executions_at_once(
    conductor: Conductor,
) -> None:
    running = 0
    peak = 0

    @conductor.task("limited-batch", batch={"size": 2, "timeout_ms": 0}, concurrency=2)
    async def limited_batch(events: Any, ctx: Any) -> None:
        nonlocal running, peak
        running += len(events)
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= len(events)

    await conductor.invoke_many("limited-batch", [{"payload": {}} for _ in range(10)])
    await drain(conductor)
    assert peak == 2


async def test_durable_helpers_are_refused_in_batch_handlers(conductor: Conductor, db: DB) -> None:
    raised: list[str] = []

    @conductor.task("nosteps", batch={"size": 1, "timeout_ms": 0})
    async def nosteps(events: Any, ctx: Any) -> None:
        for helper in ("step", "sleep", "invoke", "checkpoint"):
            try:
                await getattr(ctx, helper)("x")
            except PgConductorError as exc:
                raised.append(str(exc))

    await conductor.invoke("nosteps", {})
    await drain(conductor)
    assert len(raised) == 4 and all("not available in batch handlers" in m for m in raised)


@pytest.mark.parametrize(
    "bad",
    [
        {"size": 0, "timeout_ms": 0},
        {"size": 2},
        {"size": 2, "timeout_ms": -1},
        {"size": "2", "timeout_ms": 0},
    ],
)
def test_bad_batch_options_are_refused(conductor: Conductor, bad: Any) -> None:
    with pytest.raises(InvalidInput) as raised:
        conductor.create_task("t", lambda events, ctx: None, batch=bad)
    assert raised.value.input == "batch"

"""Child executions (ctx.invoke): created once per (parent, step), the parent waits without
a worker, the child's outcome becomes the parent's step; failures, timeouts, nesting and
cancellation cascades."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pydantic
import pytest

from pgconductor import (
    ChildFailed,
    ChildTimeout,
    Conductor,
    ExecutionCancelled,
    ExecutionFailed,
    InvalidInput,
    Orchestrator,
    PgConductorError,
    WorkerConfig,
    define_task,
)
from pgconductor.testing import advance_time, set_fake_time

from .polling import eventually

DB = psycopg.Connection[tuple[Any, ...]]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def drain(conductor: Conductor) -> None:
    await Orchestrator.create(conductor).drain()


def status_of(db: DB, execution_id: Any) -> str:
    row = db.execute("select status from pgconductor._executions where id = %s", (execution_id,)).fetchone()
    assert row is not None
    return str(row[0])


async def test_child_result_is_returned_and_earlier_steps_do_not_rerun(conductor: Conductor, db: DB) -> None:
    calls: Counter[str] = Counter()

    @conductor.task("double")
    async def double(event: Any, ctx: Any) -> dict[str, int]:
        calls["child"] += 1
        return {"value": event.payload["n"] * 2}

    @conductor.task("parent")
    async def parent(event: Any, ctx: Any) -> Any:
        calls["parent runs"] += 1
        before = await ctx.step("before", lambda: calls.update(["before"]) or "saved")
        doubled = await ctx.invoke("double-it", "double", {"n": 21})
        return {"before": before, "doubled": doubled}

    parent_id = await parent.invoke({})
    await drain(conductor)
    assert await conductor.wait_for(parent_id) == {"before": "saved", "doubled": {"value": 42}}
    assert calls == {"parent runs": 2, "before": 1, "child": 1}
    children = db.execute(
        "select task_name, status, parent_id, parent_step, payload from pgconductor._executions"
        " where parent_id is not null"
    ).fetchall()
    assert children == [("double", "completed", parent_id, "double-it", {"n": 21})]
    # The wait was not an attempt: the parent ran twice with one attempt counted.
    assert (await conductor.get_execution(parent_id)).attempts == 1  # type: ignore[union-attr]


async def test_the_parent_waits_without_a_worker_until_the_child_finishes(
    conductor: Conductor, db: DB
) -> None:
    release = asyncio.Event()

    @conductor.task("slow-child")
    async def slow_child(event: Any, ctx: Any) -> str:
        await release.wait()
        return "done"

    @conductor.task("waiting-parent")
    async def waiting_parent(event: Any, ctx: Any) -> Any:
        return await ctx.invoke("child", "slow-child", {})

    parent_id = await waiting_parent.invoke({})
    orchestrator = Orchestrator.create(conductor)
    await orchestrator.start()
    try:
        row = await eventually(
            lambda: db.execute(
                "select p.status, p.worker_id, c.status from pgconductor._executions p"
                " join pgconductor._executions c on c.parent_id = p.id where p.id = %s",
                (parent_id,),
            ).fetchone(),
            lambda r: r == ("waiting", None, "running"),
        )
        assert row == ("waiting", None, "running")
        release.set()
        assert await conductor.wait_for(parent_id, timeout=10) == "done"
    finally:
        release.set()
        await orchestrator.stop()


async def test_child_is_created_once_per_step_across_parent_retries(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    calls: Counter[str] = Counter()

    @conductor.task("leaf")
    async def leaf(event: Any, ctx: Any) -> int:
        calls["leaf"] += 1
        return 7

    @conductor.task("flaky-parent")
    async def flaky_parent(event: Any, ctx: Any) -> Any:
        got = await ctx.invoke("leaf", "leaf", {})
        calls["after child"] += 1
        if calls["after child"] == 1:
            raise RuntimeError("fails after the child finished")
        return got

    parent_id = await flaky_parent.invoke({})
    await drain(conductor)
    assert status_of(db, parent_id) == "pending"  # retry scheduled
    await advance_time(conductor, timedelta(seconds=15))
    await drain(conductor)
    assert await conductor.wait_for(parent_id) == 7
    assert calls == {"leaf": 1, "after child": 2}
    assert db.execute(
        "select count(*) from pgconductor._executions where parent_id = %s", (parent_id,)
    ).fetchone() == (1,)


async def test_child_failure_can_be_caught_by_the_parent(conductor: Conductor) -> None:
    @conductor.task("always-fails", max_attempts=2)
    async def always_fails(event: Any, ctx: Any) -> None:
        raise ValueError("card declined")

    @conductor.task("careful-parent")
    async def careful_parent(event: Any, ctx: Any) -> Any:
        try:
            await ctx.invoke("charge", "always-fails", {})
        except ChildFailed as exc:
            return {"status": exc.status, "type": exc.error_type, "message": exc.error_message}
        return "unreachable"

    await set_fake_time(conductor, T0)
    parent_id = await careful_parent.invoke({})
    await drain(conductor)
    await advance_time(conductor, timedelta(seconds=15))  # the child's retry
    await drain(conductor)
    assert await conductor.wait_for(parent_id) == {
        "status": "failed",
        "type": "ValueError",
        "message": "card declined",
    }


async def test_child_failure_uncaught_fails_the_parent(conductor: Conductor) -> None:
    @conductor.task("broken", max_attempts=1)
    async def broken(event: Any, ctx: Any) -> None:
        raise RuntimeError("boom")

    @conductor.task("trusting-parent", max_attempts=1)
    async def trusting_parent(event: Any, ctx: Any) -> Any:
        return await ctx.invoke("step-1", "broken", {})

    parent_id = await trusting_parent.invoke({})
    await drain(conductor)
    with pytest.raises(ExecutionFailed) as failed:
        await conductor.wait_for(parent_id)
    assert failed.value.error_type == "ChildFailed"
    assert "RuntimeError: boom" in failed.value.error_message


async def test_child_timeout_raises_timeout_error_and_the_child_keeps_running(
    conductor: Conductor, db: DB
) -> None:
    await set_fake_time(conductor, T0)
    release = asyncio.Event()

    @conductor.task("stuck")
    async def stuck(event: Any, ctx: Any) -> str:
        await release.wait()
        return "late"

    @conductor.task("impatient")
    async def impatient(event: Any, ctx: Any) -> Any:
        try:
            return await ctx.invoke("call", "stuck", {}, timeout_ms=60_000)
        except TimeoutError as exc:
            assert isinstance(exc, ChildTimeout)
            return "gave up"

    parent_id = await impatient.invoke({})
    orchestrator = Orchestrator.create(conductor)
    await orchestrator.start()
    try:
        assert await eventually(lambda: status_of(db, parent_id), lambda s: s == "waiting") == "waiting"
        run_at = db.execute(
            "select run_at from pgconductor._executions where id = %s", (parent_id,)
        ).fetchone()
        assert run_at == (T0 + timedelta(seconds=60),)
        await advance_time(conductor, timedelta(seconds=61))
        await conductor.invoke("stuck", {})  # a notification wakes the idle worker at once
        assert await conductor.wait_for(parent_id, timeout=10) == "gave up"
        child = db.execute(
            "select id, status from pgconductor._executions where parent_id = %s", (parent_id,)
        ).fetchone()
        assert child is not None and child[1] == "running"
        release.set()
        assert await conductor.wait_for(child[0], timeout=10) == "late"
        # The timeout stays the step's outcome: the late result does not replace it.
        step = db.execute(
            "select result from pgconductor._steps where execution_id = %s", (parent_id,)
        ).fetchone()
        assert step is not None and step[0]["status"] == "timeout"
    finally:
        release.set()
        await orchestrator.stop()


async def test_grandchildren(conductor: Conductor) -> None:
    @conductor.task("level-3")
    async def level_3(event: Any, ctx: Any) -> int:
        return int(event.payload["n"]) + 1

    @conductor.task("level-2")
    async def level_2(event: Any, ctx: Any) -> int:
        return int(await ctx.invoke("down", "level-3", {"n": event.payload["n"] * 10})) + 1

    @conductor.task("level-1")
    async def level_1(event: Any, ctx: Any) -> list[int]:
        first = await ctx.invoke("a", "level-2", {"n": 1})
        second = await ctx.invoke("b", "level-2", {"n": 2})
        return [first, second]

    root = await level_1.invoke({})
    await drain(conductor)
    assert await conductor.wait_for(root) == [12, 22]


async def test_cancelling_a_waiting_parent_cancels_its_children(conductor: Conductor, db: DB) -> None:
    release = asyncio.Event()
    seen: list[str | None] = []

    @conductor.task("deep-child")
    async def deep_child(event: Any, ctx: Any) -> None:
        await ctx.signal.wait()
        seen.append(ctx.signal.reason)
        await ctx.checkpoint()

    @conductor.task("middle")
    async def middle(event: Any, ctx: Any) -> Any:
        return await ctx.invoke("deep", "deep-child", {})

    @conductor.task("top")
    async def top(event: Any, ctx: Any) -> Any:
        return await ctx.invoke("mid", "middle", {})

    top_id = await top.invoke({})
    orchestrator = Orchestrator.create(conductor)
    await orchestrator.start()
    try:
        expected = [("top", "waiting"), ("middle", "waiting"), ("deep-child", "running")]
        rows = await eventually(
            lambda: db.execute(
                "select task_name, status from pgconductor._executions order by seq"
            ).fetchall(),
            lambda r: r == expected,
        )
        assert rows == [("top", "waiting"), ("middle", "waiting"), ("deep-child", "running")]
        assert await conductor.cancel(top_id, reason="order withdrawn") is True
        with pytest.raises(ExecutionCancelled):
            await conductor.wait_for(top_id, timeout=10)
        deep_id = db.execute(
            "select id from pgconductor._executions where task_name = 'deep-child'"
        ).fetchone()
        assert deep_id is not None
        with pytest.raises(ExecutionCancelled):
            await conductor.wait_for(deep_id[0], timeout=10)
        assert seen == ["order withdrawn"]
        rows = db.execute(
            "select task_name, status, attempts from pgconductor._executions order by seq"
        ).fetchall()
        assert [(name, status) for name, status, _ in rows] == [
            ("top", "cancelled"),
            ("middle", "cancelled"),
            ("deep-child", "cancelled"),
        ]
    finally:
        release.set()
        await orchestrator.stop()


async def test_cancelling_a_child_raises_child_failed_in_the_parent(conductor: Conductor, db: DB) -> None:
    @conductor.task("never-runs")
    async def never_runs(event: Any, ctx: Any) -> None:
        raise AssertionError("a cancelled child never runs")

    @conductor.task("watcher")
    async def watcher(event: Any, ctx: Any) -> Any:
        try:
            await ctx.invoke("job", "never-runs", {})
        except ChildFailed as exc:
            return exc.status

    parent_id = await watcher.invoke({})
    # Run only the parent's first attempt: the worker serves just "watcher".
    worker = conductor.create_worker(tasks=[watcher])
    await Orchestrator.create(conductor, workers=[worker]).drain()
    child = db.execute("select id from pgconductor._executions where parent_id = %s", (parent_id,)).fetchone()
    assert child is not None and status_of(db, parent_id) == "waiting"
    assert await conductor.cancel(child[0]) is True
    assert status_of(db, parent_id) == "pending"
    await drain(conductor)
    assert await conductor.wait_for(parent_id) == "cancelled"


class AddIn(pydantic.BaseModel):
    a: int
    b: int


class AddOut(pydantic.BaseModel):
    total: int


async def test_child_payload_and_result_use_the_child_task_models(conductor: Conductor, db: DB) -> None:
    add_def = define_task("add", payload=AddIn, returns=AddOut)

    @conductor.task(add_def)
    async def add(event: Any, ctx: Any) -> AddOut:
        return AddOut(total=event.payload.a + event.payload.b)

    @conductor.task("uses-models", max_attempts=1)
    async def uses_models(event: Any, ctx: Any) -> Any:
        if event.payload.get("bad"):
            await ctx.invoke("bad", add_def, {"a": "not a number"})
        got = await ctx.invoke("sum", add_def, AddIn(a=2, b=3))
        assert isinstance(got, AddOut)
        return got.total

    good = await uses_models.invoke({})
    bad = await uses_models.invoke({"bad": True})
    await drain(conductor)
    assert await conductor.wait_for(good) == 5
    with pytest.raises(ExecutionFailed) as failed:
        await conductor.wait_for(bad)
    assert failed.value.error_type == "InvalidInput" and "payload" in failed.value.error_message
    # Nothing was written for the refused child.
    assert db.execute(
        "select count(*) from pgconductor._executions where parent_id = %s", (bad,)
    ).fetchone() == (0,)


async def test_bad_invoke_arguments_are_refused(conductor: Conductor) -> None:
    errors: list[str] = []

    @conductor.task("target")
    async def target(event: Any, ctx: Any) -> None:
        return None

    @conductor.task("bad-args", max_attempts=1)
    async def bad_args(event: Any, ctx: Any) -> None:
        for call in (
            lambda: ctx.invoke("", "target", {}),
            lambda: ctx.invoke("x", "target", {}, timeout_ms=0),
            lambda: ctx.invoke("x", "target", [1, 2]),
        ):
            try:
                await call()
            except InvalidInput as exc:
                errors.append(exc.input)

    execution_id = await bad_args.invoke({})
    await drain(conductor)
    await conductor.wait_for(execution_id)
    assert errors == ["step name", "timeout_ms", "payload"]


async def test_plain_def_handlers_use_the_blocking_twins(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    calls: Counter[str] = Counter()

    @conductor.task("sync-child")
    def sync_child(event: Any, ctx: Any) -> int:
        return 5

    @conductor.task("sync-parent")
    def sync_parent(event: Any, ctx: Any) -> Any:
        calls["runs"] += 1
        first = ctx.step_sync("first", lambda: calls.update(["first"]) or 1)
        ctx.checkpoint_sync()
        ctx.sleep_sync("nap", timedelta(minutes=5))
        child = ctx.invoke_sync("child", "sync-child", {})
        return first + child

    parent_id = await sync_parent.invoke({})
    await drain(conductor)
    assert status_of(db, parent_id) == "waiting"  # asleep
    await advance_time(conductor, timedelta(minutes=5))
    await drain(conductor)
    assert await conductor.wait_for(parent_id) == 6
    assert calls == {"runs": 3, "first": 1}


async def test_cancelling_a_running_parent_cancels_its_running_child(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    child_saw: list[str | None] = []
    parent_saw: list[str | None] = []
    child_started = asyncio.Event()
    parent_resumed = asyncio.Event()

    @conductor.task("long-child")
    async def long_child(event: Any, ctx: Any) -> None:
        child_started.set()
        child_saw.append(await ctx.signal.wait())
        await ctx.checkpoint()

    @conductor.task("busy-parent", max_attempts=3)
    async def busy_parent(event: Any, ctx: Any) -> None:
        try:
            await ctx.invoke("child", "long-child", {}, timeout_ms=1_000)
        except ChildTimeout:
            pass
        parent_resumed.set()
        parent_saw.append(await ctx.signal.wait())
        await ctx.checkpoint()

    parent_id = await busy_parent.invoke({})
    orchestrator = Orchestrator.create(conductor)
    await orchestrator.start()
    try:
        await asyncio.wait_for(child_started.wait(), 10)
        await advance_time(conductor, timedelta(seconds=2))  # the parent's timeout passes
        await conductor.invoke("long-child", {"wake": True})  # a notification: claim now
        await asyncio.wait_for(parent_resumed.wait(), 10)
        assert await conductor.cancel(parent_id, reason="stop all") is True
        with pytest.raises(ExecutionCancelled):
            await conductor.wait_for(parent_id, timeout=10)
        child = db.execute(
            "select id from pgconductor._executions where parent_id = %s", (parent_id,)
        ).fetchone()
        assert child is not None
        with pytest.raises(ExecutionCancelled):
            await conductor.wait_for(child[0], timeout=10)
    finally:
        await orchestrator.stop()
    assert parent_saw == ["stop all"] and child_saw[0] == "stop all"
    # Cancelled executions are not retried.
    rows = db.execute(
        "select status, attempts from pgconductor._executions where id = %s or parent_id = %s",
        (parent_id, parent_id),
    ).fetchall()
    assert rows == [("cancelled", 1), ("cancelled", 1)]


async def test_blocking_twins_refuse_to_run_in_an_async_handler(conductor: Conductor, db: DB) -> None:
    refused: list[str] = []
    ran: list[str] = []

    @conductor.task("async-with-twins", max_attempts=1)
    async def async_with_twins(event: Any, ctx: Any) -> None:
        for name, call in (
            ("step", lambda: ctx.step_sync("s", lambda: ran.append("step fn"))),
            ("sleep", lambda: ctx.sleep_sync("nap", 1000)),
            ("checkpoint", lambda: ctx.checkpoint_sync()),
            ("invoke", lambda: ctx.invoke_sync("c", "async-with-twins", {})),
        ):
            try:
                call()
            except PgConductorError as exc:
                assert f"await ctx.{name}" in str(exc)
                refused.append(name)

    execution_id = await async_with_twins.invoke({})
    await drain(conductor)
    await conductor.wait_for(execution_id)
    assert refused == ["step", "sleep", "checkpoint", "invoke"] and ran == []
    assert db.execute("select count(*) from pgconductor._steps").fetchone() == (0,)


async def test_drain_runs_children_in_other_queues(conductor: Conductor) -> None:
    @conductor.task("remote-child", queue="kids")
    async def remote_child(event: Any, ctx: Any) -> str:
        return "from kids"

    @conductor.task("local-parent", queue="default")
    async def local_parent(event: Any, ctx: Any) -> Any:
        first = await ctx.invoke("one", "remote-child", {})
        second = await ctx.invoke("two", "remote-child", {})
        return [first, second]

    parent_id = await local_parent.invoke({})
    await drain(conductor)  # one drain: the workers of both queues run until all is done
    assert await conductor.wait_for(parent_id, timeout=1) == ["from kids", "from kids"]


async def test_a_parent_resumed_while_its_previous_run_unwinds_keeps_its_slot(
    conductor: Conductor, db: DB
) -> None:
    runs: list[int] = []

    @conductor.task("quick-child")
    async def quick_child(event: Any, ctx: Any) -> int:
        return 7

    @conductor.task("slow-cleanup")
    def slow_cleanup(event: Any, ctx: Any) -> Any:
        runs.append(ctx.attempt)
        try:
            return ctx.invoke_sync("call", "quick-child", {})
        finally:
            if len(runs) == 1:
                time.sleep(0.5)  # cleanup while the child finishes and the parent is claimed again

    parent_id = await slow_cleanup.invoke({})
    orchestrator = Orchestrator.create(
        conductor, default_worker=WorkerConfig(concurrency=4, poll_interval_ms=100)
    )
    await orchestrator.start()
    try:
        assert await conductor.wait_for(parent_id, timeout=10) == 7
        info = await eventually(orchestrator.workers[0].info, lambda i: i["active_runs"] == 0)
    finally:
        await orchestrator.stop()
    # Same attempt number for both runs (waiting is not an attempt), and no slot lost.
    assert runs == [1, 1]
    assert info["active_runs"] == 0 and info["running"] == 0 and info["waited"] == 1


async def test_sleep_and_invoke_inside_a_task_group(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)

    @conductor.task("grouped-child")
    async def grouped_child(event: Any, ctx: Any) -> int:
        return 3

    @conductor.task("grouped")
    async def grouped(event: Any, ctx: Any) -> Any:
        async with asyncio.TaskGroup() as group:
            nap = group.create_task(ctx.sleep("nap", timedelta(minutes=1)))
        async with asyncio.TaskGroup() as group:
            child = group.create_task(ctx.invoke("call", "grouped-child", {}))
        return [nap.result(), child.result()]

    execution_id = await grouped.invoke({})
    await drain(conductor)
    assert status_of(db, execution_id) == "waiting"
    await advance_time(conductor, timedelta(minutes=1))
    await drain(conductor)
    assert await conductor.wait_for(execution_id) == [None, 3]


async def test_step_names_with_nul_or_lone_surrogates_are_refused(conductor: Conductor) -> None:
    problems: list[str] = []

    @conductor.task("odd-names", max_attempts=1)
    async def odd_names(event: Any, ctx: Any) -> None:
        for name in ("a\x00b", "\udc80"):
            try:
                await ctx.step(name, lambda: 1)
            except InvalidInput as exc:
                problems.append(f"{exc.input}: {exc.problem.split(',')[0]}")

    execution_id = await odd_names.invoke({})
    await drain(conductor)
    await conductor.wait_for(execution_id)
    assert problems == [
        "step name: must not contain NUL characters",
        "step name: must be valid UTF-8 text (no lone surrogates)",
    ]


async def test_a_child_start_cut_off_by_a_lost_connection_is_sent_again_once(
    conductor: Conductor, db: DB
) -> None:
    go = asyncio.Event()
    runs: list[int] = []

    @conductor.task("kid-after-loss")
    async def kid_after_loss(event: Any, ctx: Any) -> str:
        return "kid done"

    @conductor.task("boss-after-loss")
    async def boss_after_loss(event: Any, ctx: Any) -> Any:
        runs.append(ctx.attempt)
        await go.wait()
        return await ctx.invoke("call", "kid-after-loss", {})

    parent_id = await boss_after_loss.invoke({})
    orchestrator = Orchestrator.create(conductor, default_worker=WorkerConfig(poll_interval_ms=100))
    await orchestrator.start()
    try:
        await eventually(lambda: runs, bool)
        # Hold the parent's row so that the child start blocks, then cut its connection.
        with psycopg.connect(db.info.dsn) as locker:
            locker.execute("select 1 from pgconductor._executions where id = %s for update", (parent_id,))
            go.set()
            blocked = await eventually(
                lambda: db.execute(
                    "select pid from pg_stat_activity where query like '%%invoke_children%%'"
                    " and state = 'active' and pid <> pg_backend_pid()"
                ).fetchone(),
                lambda row: row is not None,
            )
            assert blocked is not None
            db.execute("select pg_terminate_backend(%s)", (blocked[0],))
            locker.rollback()
        # The call was rolled back with its connection: the worker sends it again on a new
        # connection, and the child is created once.
        assert await conductor.wait_for(parent_id, timeout=10) == "kid done"
    finally:
        go.set()
        await orchestrator.stop()
    children = db.execute(
        "select count(*) from pgconductor._executions where parent_id = %s", (parent_id,)
    ).fetchone()
    assert children == (1,)
    info = await conductor.get_execution(parent_id)
    assert info is not None and info.attempts == 1 and runs == [1, 1]


async def test_drain_rounds_run_plain_def_parents_again(conductor: Conductor) -> None:
    @conductor.task("far-child", queue="far")
    async def far_child(event: Any, ctx: Any) -> int:
        return 9

    @conductor.task("sync-near-parent")
    def sync_near_parent(event: Any, ctx: Any) -> Any:
        return ctx.invoke_sync("far", "far-child", {}) + 1

    parent_id = await sync_near_parent.invoke({})
    await drain(conductor)
    assert await conductor.wait_for(parent_id, timeout=1) == 10

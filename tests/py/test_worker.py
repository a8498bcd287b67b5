"""The worker side in-process: claim order, retries, attempts, handler inputs and results,
cancellation, graceful stop, draining, wake-ups, reconnects, lease recovery and logs.

Time-dependent behaviour runs on the database's fake clock; outcomes are awaited with
`Orchestrator.drain()` or bounded polling, never with timed sleeps."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pydantic
import pytest

from pgconductor import (
    Conductor,
    ExecutionCancelled,
    ExecutionFailed,
    InvalidInput,
    Orchestrator,
    WorkerConfig,
    define_task,
)
from pgconductor.logs import JsonFormatter
from pgconductor.testing import advance_time, set_fake_time

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DB = psycopg.Connection[tuple[Any, ...]]


def row(db: DB, execution_id: uuid.UUID) -> dict[str, Any]:
    cur = db.execute(
        "select status, attempts, max_attempts, run_at, result, error from pgconductor.executions"
        " where id = %s",
        (execution_id,),
    )
    found = cur.fetchone()
    assert found is not None, f"execution {execution_id} not found"
    keys = ("status", "attempts", "max_attempts", "run_at", "result", "error")
    return dict(zip(keys, found, strict=True))


def statuses(db: DB, task_name: str) -> Counter[str]:
    cur = db.execute(
        "select status, count(*) from pgconductor.executions where task_name = %s group by status",
        (task_name,),
    )
    return Counter({status: count for status, count in cur.fetchall()})


async def poll(condition: Any, what: str, timeout: float = 60.0) -> None:
    """Poll `condition()` every 50 ms until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# --- claim order -------------------------------------------------------------------------


async def test_priority_then_run_at_then_insertion_order_and_future_run_at_waits(
    conductor: Conductor, db: DB
) -> None:
    await set_fake_time(conductor, T0)
    order: list[str] = []

    @conductor.task("ordered")
    async def ordered(event: Any, ctx: Any) -> None:
        order.append(event.payload["name"])

    items: list[tuple[str, int, datetime | None]] = [
        ("p0-late", 0, T0 - timedelta(seconds=5)),
        ("p0-early", 0, T0 - timedelta(seconds=30)),
        ("p0-now-1", 0, None),
        ("p10", 10, None),
        ("p0-now-2", 0, None),
        ("p-5", -5, T0 - timedelta(seconds=100)),
        ("future", 100, T0 + timedelta(seconds=60)),
        ("p5-now", 5, None),
        ("p5-early", 5, T0 - timedelta(seconds=1)),
    ]
    ids = {}
    for name, priority, run_at in items:
        ids[name] = await ordered.invoke({"name": name}, priority=priority, run_at=run_at)

    await Orchestrator.create(conductor, tasks=[ordered], default_worker=WorkerConfig(concurrency=1)).drain()
    assert order == ["p10", "p5-early", "p5-now", "p0-early", "p0-late", "p0-now-1", "p0-now-2", "p-5"]
    assert row(db, ids["future"])["status"] == "pending"

    # Not yet: one second before its run_at.
    await advance_time(conductor, timedelta(seconds=59))
    await Orchestrator.create(conductor, tasks=[ordered], default_worker=WorkerConfig(concurrency=1)).drain()
    assert "future" not in order and row(db, ids["future"])["status"] == "pending"

    await advance_time(conductor, timedelta(seconds=2))
    await Orchestrator.create(conductor, tasks=[ordered], default_worker=WorkerConfig(concurrency=1)).drain()
    assert order[-1] == "future"
    assert row(db, ids["future"])["status"] == "completed"
    assert statuses(db, "ordered") == Counter(completed=len(items))


# --- retries -----------------------------------------------------------------------------


class Flaky(Exception):
    pass


async def test_retries_with_backoff_on_fake_time(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    calls: list[int] = []

    @conductor.task("flaky", max_attempts=3)
    async def flaky(event: Any, ctx: Any) -> dict[str, int]:
        calls.append(ctx.attempt)
        if len(calls) < 3:
            raise Flaky(f"boom {len(calls)}")
        return {"ok": len(calls)}

    execution_id = await flaky.invoke({})

    def drain() -> Any:
        return Orchestrator.create(conductor, tasks=[flaky]).drain()

    await drain()
    assert calls == [1]
    first = row(db, execution_id)
    assert first["status"] == "pending"
    assert first["attempts"] == 1
    assert first["run_at"] == T0 + timedelta(seconds=15)
    assert first["error"]["type"] == "Flaky"
    assert first["error"]["message"] == "boom 1"
    assert "Traceback" in first["error"]["traceback"]
    assert "Flaky: boom 1" in first["error"]["traceback"]
    assert "in flaky" in first["error"]["traceback"]

    # Time has not moved: the retry is not ready.
    await drain()
    assert calls == [1]

    await advance_time(conductor, timedelta(seconds=14))
    await drain()
    assert calls == [1]

    await advance_time(conductor, timedelta(seconds=1))
    await drain()
    assert calls == [1, 2]
    second = row(db, execution_id)
    assert second["status"] == "pending"
    assert second["attempts"] == 2
    assert second["run_at"] == T0 + timedelta(seconds=15 + 30)
    assert second["error"]["message"] == "boom 2"

    await advance_time(conductor, timedelta(seconds=29))
    await drain()
    assert calls == [1, 2]

    await advance_time(conductor, timedelta(seconds=1))
    await drain()
    assert calls == [1, 2, 3]
    third = row(db, execution_id)
    assert third["status"] == "completed"
    assert third["attempts"] == 3
    assert third["result"] == {"ok": 3}
    assert await conductor.wait_for(execution_id, timeout=10) == {"ok": 3}


async def test_max_attempts_ends_failed_and_applies_to_earlier_invocations(
    conductor: Conductor, db: DB
) -> None:
    await set_fake_time(conductor, T0)
    # Enqueued before any worker declared the task (its max_attempts is not known yet).
    execution_id = await conductor.invoke("always-fails", {"n": 1})
    assert execution_id is not None
    calls: list[int] = []

    @conductor.task("always-fails", max_attempts=2)
    async def always_fails(event: Any, ctx: Any) -> None:
        calls.append(ctx.attempt)
        raise ValueError(f"nope {ctx.attempt}")

    await Orchestrator.create(conductor, tasks=[always_fails]).drain()
    assert calls == [1]
    assert row(db, execution_id)["status"] == "pending"

    await advance_time(conductor, timedelta(seconds=15))
    await Orchestrator.create(conductor, tasks=[always_fails]).drain()
    assert calls == [1, 2]
    final = row(db, execution_id)
    assert final["status"] == "failed"
    assert final["attempts"] == 2
    assert final["max_attempts"] == 2
    assert final["error"]["type"] == "ValueError"
    assert final["error"]["message"] == "nope 2"

    # No third attempt, however far time moves.
    await advance_time(conductor, timedelta(hours=1))
    await Orchestrator.create(conductor, tasks=[always_fails]).drain()
    assert calls == [1, 2]

    with pytest.raises(ExecutionFailed) as raised:
        await conductor.wait_for(execution_id, timeout=10)
    assert raised.value.error_type == "ValueError"
    assert raised.value.error_message == "nope 2"
    assert raised.value.traceback is not None and "nope 2" in raised.value.traceback


# --- handlers ----------------------------------------------------------------------------


async def test_sync_handlers_run_in_a_thread_and_async_handlers_on_the_loop(
    conductor: Conductor, db: DB
) -> None:
    seen: dict[str, Any] = {}

    @conductor.task("sync-add")
    def sync_add(event: Any, ctx: Any) -> dict[str, Any]:
        seen["sync"] = threading.current_thread() is threading.main_thread()
        return {"sum": event.payload["a"] + event.payload["b"], "attempt": ctx.attempt}

    @conductor.task("async-mul")
    async def async_mul(event: Any, ctx: Any) -> dict[str, Any]:
        seen["async"] = threading.current_thread() is threading.main_thread()
        await asyncio.sleep(0)
        return {"product": event.payload["a"] * event.payload["b"]}

    sync_id = await sync_add.invoke({"a": 2, "b": 3})
    async_id = await async_mul.invoke({"a": 4, "b": 5})
    await Orchestrator.create(conductor, tasks=[sync_add, async_mul]).drain()

    assert seen == {"sync": False, "async": True}
    assert await conductor.wait_for(sync_id, timeout=10) == {"sum": 5, "attempt": 1}
    assert await conductor.wait_for(async_id, timeout=10) == {"product": 20}
    assert row(db, sync_id)["status"] == "completed"
    assert row(db, async_id)["attempts"] == 1


class GreetIn(pydantic.BaseModel):
    name: str
    times: int = 1


class GreetOut(pydantic.BaseModel):
    text: str


async def test_handler_sees_event_payload_model_and_context(
    dsn: str, db: DB, caplog: pytest.LogCaptureFixture
) -> None:
    mailer = object()
    greet_def = define_task("greet", payload=GreetIn, returns=GreetOut)
    seen: dict[str, Any] = {}
    caplog.set_level(logging.INFO, logger="pgconductor")

    async with Conductor.create(dsn, tasks=[greet_def], context={"mailer": mailer}) as conductor:

        @conductor.task(greet_def)
        async def greet(event: Any, ctx: Any) -> GreetOut:
            seen.update(
                name=event.name,
                payload=event.payload,
                execution_id=ctx.execution_id,
                attempt=ctx.attempt,
                mailer=ctx.mailer,
            )
            ctx.logger.info("hello %s", event.payload.name)
            return GreetOut(text=f"hi {event.payload.name} x{event.payload.times}")

        execution_id = await conductor.invoke("greet", {"name": "Ada", "times": 2})
        await Orchestrator.create(conductor, tasks=[greet]).drain()
        result = await conductor.wait_for(execution_id, timeout=10)

    assert seen["name"] == "pgconductor.invoke"
    assert isinstance(seen["payload"], GreetIn)
    assert seen["payload"] == GreetIn(name="Ada", times=2)
    assert seen["execution_id"] == execution_id
    assert seen["attempt"] == 1
    assert seen["mailer"] is mailer
    assert result == GreetOut(text="hi Ada x2")
    assert row(db, execution_id)["result"] == {"text": "hi Ada x2"}

    hello = [r for r in caplog.records if r.getMessage() == "hello Ada"]
    assert len(hello) == 1
    assert hello[0].task == "greet"  # type: ignore[attr-defined]
    assert hello[0].execution_id == str(execution_id)  # type: ignore[attr-defined]
    assert hello[0].attempt == 1  # type: ignore[attr-defined]


class Total(pydantic.BaseModel):
    total: int


@pytest.mark.parametrize(
    ("task_name", "value", "problem"),
    [
        ("bad-shape", {"total": "many"}, "does not match Total"),
        ("bad-set", {1, 2}, "not JSON serializable"),
        ("bad-object", object(), "not JSON serializable"),
    ],
)
async def test_invalid_results_fail_the_execution_with_invalid_result(
    conductor: Conductor, db: DB, task_name: str, value: Any, problem: str
) -> None:
    definition = define_task(task_name, returns=Total if task_name == "bad-shape" else None)

    @conductor.task(definition, max_attempts=1)
    async def handler(event: Any, ctx: Any) -> Any:
        return value

    execution_id = await handler.invoke({})
    await Orchestrator.create(conductor, tasks=[handler]).drain()

    final = row(db, execution_id)
    assert final["status"] == "failed"
    assert final["attempts"] == 1
    assert final["result"] is None
    assert final["error"]["type"] == "InvalidResult"
    assert repr(task_name) in final["error"]["message"]
    assert problem in final["error"]["message"]
    with pytest.raises(ExecutionFailed) as raised:
        await conductor.wait_for(execution_id, timeout=10)
    assert raised.value.error_type == "InvalidResult"


# --- cancellation and stopping -------------------------------------------------------------


async def test_cancel_running_execution_sets_signal_and_ends_cancelled(conductor: Conductor, db: DB) -> None:
    started = asyncio.Event()
    seen: dict[str, Any] = {}
    calls = 0

    @conductor.task("cancellable", max_attempts=3)
    async def cancellable(event: Any, ctx: Any) -> None:
        nonlocal calls
        calls += 1
        started.set()
        reason = await ctx.signal.wait()
        seen.update(aborted=ctx.signal.aborted, reason=ctx.signal.reason, returned=reason)
        raise RuntimeError("stopped by cancel")

    execution_id = await cancellable.invoke({})
    orch = Orchestrator.create(conductor, tasks=[cancellable])
    await orch.start(handle_signals=False)
    try:
        await asyncio.wait_for(started.wait(), 30)
        assert row(db, execution_id)["status"] == "running"
        assert await conductor.cancel(execution_id, reason="user asked") is True
        with pytest.raises(ExecutionCancelled) as raised:
            await conductor.wait_for(execution_id, timeout=30)
        assert raised.value.error_message == "user asked"
    finally:
        await orch.stop()

    assert seen == {"aborted": True, "reason": "user asked", "returned": "user asked"}
    final = row(db, execution_id)
    assert final["status"] == "cancelled"
    assert final["attempts"] == 1
    assert statuses(db, "cancellable") == Counter(cancelled=1)
    assert calls == 1
    # A finished execution cannot be cancelled again.
    assert await conductor.cancel(execution_id) is False


async def test_graceful_stop_releases_without_counting_an_attempt(conductor: Conductor, db: DB) -> None:
    started = asyncio.Event()
    slow = {"on": True}
    attempts_seen: list[int] = []

    @conductor.task("long")
    async def long(event: Any, ctx: Any) -> str:
        attempts_seen.append(ctx.attempt)
        if slow["on"]:
            started.set()
            await asyncio.sleep(3600)
        return "done"

    execution_id = await long.invoke({})
    orch = Orchestrator.create(conductor, tasks=[long], default_worker=WorkerConfig(shutdown_timeout_s=0.2))
    await orch.start(handle_signals=False)
    try:
        await asyncio.wait_for(started.wait(), 30)
        assert row(db, execution_id)["status"] == "running"
    finally:
        await orch.stop()

    released = row(db, execution_id)
    assert released["status"] == "pending"
    assert released["attempts"] == 0
    assert orch.info()["workers"][0]["released"] == 1

    slow["on"] = False
    await Orchestrator.create(conductor, tasks=[long]).drain()
    final = row(db, execution_id)
    assert final["status"] == "completed"
    assert final["attempts"] == 1
    assert final["result"] == "done"
    assert attempts_seen == [1, 1]


async def test_drain_does_not_wait_for_future_retries_and_reports_counters(
    conductor: Conductor, db: DB
) -> None:
    await set_fake_time(conductor, T0)

    @conductor.task("fine")
    async def fine(event: Any, ctx: Any) -> int:
        return 1

    @conductor.task("broken")
    async def broken(event: Any, ctx: Any) -> None:
        raise RuntimeError("broken")

    await fine.invoke({})
    await fine.invoke({})
    broken_id = await broken.invoke({})
    orch = Orchestrator.create(conductor, tasks=[fine, broken])
    await orch.drain()

    info = orch.info()
    assert info["state"] == "stopped"
    assert sum(w["completed"] for w in info["workers"]) == 2
    assert sum(w["failed"] for w in info["workers"]) == 1
    assert orch.stopped.done()
    assert row(db, broken_id)["status"] == "pending"  # retry scheduled in 15 s: not waited for
    assert statuses(db, "fine") == Counter(completed=2)


async def test_stopped_resolves_after_stop(conductor: Conductor) -> None:
    @conductor.task("idle")
    async def idle(event: Any, ctx: Any) -> None:
        return None

    orch = Orchestrator.create(conductor, tasks=[idle])
    await orch.start(handle_signals=False)
    try:
        assert orch.info()["state"] == "running"
        assert not orch.stopped.done()
    finally:
        await orch.stop()
    await asyncio.wait_for(orch.stopped, 10)
    assert orch.info()["state"] == "stopped"


# --- wake-ups and connections --------------------------------------------------------------


async def test_notify_wakes_an_idle_worker(conductor: Conductor, db: DB) -> None:
    @conductor.task("wake")
    async def wake(event: Any, ctx: Any) -> str:
        return "awake"

    def claimed_once() -> bool:
        found = db.execute(
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and state = 'idle' and query like '%pgconductor.claim(%'"
        ).fetchone()
        return found is not None and found[0] > 0

    orch = Orchestrator.create(conductor, tasks=[wake], default_worker=WorkerConfig(poll_interval_ms=60000))
    await orch.start(handle_signals=False)
    try:
        # The worker's first claim found nothing: it now sleeps on its 60 s poll wait.
        await poll(claimed_once, "the first (empty) claim")
        execution_id = await wake.invoke({})
        assert await conductor.wait_for(execution_id, timeout=10) == "awake"
    finally:
        await orch.stop()


async def test_worker_survives_terminated_connections(conductor: Conductor, db: DB) -> None:
    ran: Counter[uuid.UUID] = Counter()

    @conductor.task("sturdy")
    async def sturdy(event: Any, ctx: Any) -> int:
        ran[ctx.execution_id] += 1
        await asyncio.sleep(0.01)
        return int(event.payload["i"])

    ids = await sturdy.invoke_many([{"payload": {"i": i}} for i in range(300)])
    assert len(ids) == 300

    def completed() -> int:
        return statuses(db, "sturdy")["completed"]

    orch = Orchestrator.create(conductor, tasks=[sturdy], default_worker=WorkerConfig(concurrency=2))
    await orch.start(handle_signals=False)
    terminated_at: list[int] = []
    try:
        for threshold in (20, 90, 170):
            await poll(lambda t=threshold: completed() >= t, f"{threshold} completed")  # type: ignore[misc]
            terminated_at.append(completed())
            killed = db.execute(
                "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity"
                " where datname = current_database() and pid <> pg_backend_pid()"
            ).fetchone()
            assert killed is not None and killed[0] > 0
        await poll(lambda: completed() == 300, "all 300 completed")
    finally:
        await orch.stop()

    assert terminated_at[0] < 300, "the connections were terminated while work was left"
    assert completed() == 300
    assert statuses(db, "sturdy") == Counter(completed=300)
    assert set(ran) == set(ids)
    assert all(count >= 1 for count in ran.values())
    results = dict(db.execute("select id, result from pgconductor.executions where task_name = 'sturdy'"))
    assert sorted(results[i] for i in ids) == list(range(300))


async def test_stop_after_connections_were_terminated(conductor: Conductor, db: DB) -> None:
    """A connection loss just before a graceful stop must not break the stop: the running
    execution is released, the orchestrator ends "stopped" and `stopped` resolves."""
    started = asyncio.Event()

    @conductor.task("interrupted")
    async def interrupted(event: Any, ctx: Any) -> None:
        started.set()
        await asyncio.sleep(3600)

    execution_id = await interrupted.invoke({})
    # No heartbeat during the test (it would quietly replace dead pooled connections).
    orch = Orchestrator.create(
        conductor,
        tasks=[interrupted],
        default_worker=WorkerConfig(shutdown_timeout_s=0.2),
        heartbeat_interval_s=30,
    )
    await orch.start(handle_signals=False)
    try:
        await asyncio.wait_for(started.wait(), 30)
        db.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        )
    finally:
        await orch.stop()

    assert orch.info()["state"] == "stopped"
    await asyncio.wait_for(orch.stopped, 10)
    assert row(db, execution_id)["status"] == "pending"
    assert row(db, execution_id)["attempts"] == 0


# --- lease recovery ------------------------------------------------------------------------


async def test_expired_lease_is_recovered_and_run_again(conductor: Conductor, db: DB) -> None:
    await set_fake_time(conductor, T0)
    attempts_seen: list[int] = []

    @conductor.task("leased")
    async def leased(event: Any, ctx: Any) -> str:
        attempts_seen.append(ctx.attempt)
        return "recovered"

    execution_id = await leased.invoke({})
    ghost = uuid.uuid4()
    db.execute(
        "select pgconductor.register_worker(%s, 'ghost', %s::jsonb, 60)",
        (ghost, json.dumps([leased.registration()])),
    )
    claimed = db.execute(
        "select id, attempt from pgconductor.claim(%s, 'default', array['leased'], 1)", (ghost,)
    )
    assert claimed.fetchall() == [(execution_id, 1)]
    assert row(db, execution_id)["status"] == "running"

    # Within the lease the execution stays with the (silent) ghost worker.
    await advance_time(conductor, timedelta(seconds=59))
    await Orchestrator.create(conductor, tasks=[leased]).drain()
    assert attempts_seen == []
    assert row(db, execution_id)["status"] == "running"

    await advance_time(conductor, timedelta(seconds=2))
    await Orchestrator.create(conductor, tasks=[leased]).drain()
    assert attempts_seen == [2]
    final = row(db, execution_id)
    assert final["status"] == "completed"
    assert final["attempts"] == 2
    assert final["result"] == "recovered"


# --- logs and configuration ----------------------------------------------------------------


async def test_failure_log_carries_structured_fields(
    conductor: Conductor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgconductor")

    @conductor.task("loud", max_attempts=1)
    async def loud(event: Any, ctx: Any) -> None:
        raise KeyError("missing")

    execution_id = await loud.invoke({})
    await Orchestrator.create(conductor, tasks=[loud]).drain()

    records = [r for r in caplog.records if getattr(r, "execution_id", None) == str(execution_id)]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING
    assert record.task == "loud"  # type: ignore[attr-defined]
    assert record.attempt == 1  # type: ignore[attr-defined]
    assert isinstance(record.duration_ms, float | int) and record.duration_ms >= 0  # type: ignore[attr-defined]
    assert "KeyError" in record.getMessage()

    data = json.loads(JsonFormatter().format(record))
    assert data["level"] == "warning"
    assert data["logger"] == "pgconductor.worker"
    assert data["task"] == "loud"
    assert data["execution_id"] == str(execution_id)
    assert data["attempt"] == 1
    assert data["duration_ms"] == record.duration_ms  # type: ignore[attr-defined]
    assert "KeyError" in data["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrency", 0),
        ("concurrency", -3),
        ("poll_interval_ms", -1),
        ("flush_interval_ms", 0),
        ("fetch_batch_size", 0),
        ("shutdown_timeout_s", -1),
    ],
)
def test_bad_worker_config_names_the_field(field: str, value: int) -> None:
    with pytest.raises(InvalidInput) as raised:
        WorkerConfig(**{field: value})
    assert raised.value.input == field
    assert field in str(raised.value)

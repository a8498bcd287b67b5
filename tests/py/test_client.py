"""The client side of pgconductor: enqueue, dedupe, inspect, wait, cancel, bad input,
transactional enqueue, installation and retention, through the Python API against a
real Postgres."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pydantic
import pytest
from psycopg.rows import dict_row

from pgconductor import (
    Conductor,
    ExecutionCancelled,
    ExecutionFailed,
    ExtensionNotAvailable,
    InvalidInput,
    Orchestrator,
    UnknownExecution,
    UnknownTask,
    WaitTimeout,
    WorkerConfig,
    define_task,
)
from pgconductor import testing as pgc_testing

from .conftest import dsn_for

Db = psycopg.Connection[tuple[Any, ...]]
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


# --- helpers ---------------------------------------------------------------------------


def count(db: Db, task_name: str | None = None) -> int:
    """Rows in pgconductor.executions (of one task, or all)."""
    if task_name is None:
        row = db.execute("select count(*) from pgconductor.executions").fetchone()
    else:
        row = db.execute(
            "select count(*) from pgconductor.executions where task_name = %s", (task_name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def row_of(db: Db, execution_id: UUID) -> dict[str, Any] | None:
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from pgconductor.executions where id = %s", (execution_id,))
        return cur.fetchone()


def must_row(db: Db, execution_id: UUID) -> dict[str, Any]:
    row = row_of(db, execution_id)
    assert row is not None, f"no row for {execution_id}"
    return row


def claim_one(db: Db, queue: str = "default") -> UUID:
    """Make the oldest ready execution of a queue `running`, as a worker would."""
    worker_id = uuid.uuid4()
    db.execute("select pgconductor.register_worker(%s, 'test-worker', '[]'::jsonb, 60)", (worker_id,))
    rows = db.execute("select * from pgconductor.claim(%s, %s, null, 1)", (worker_id, queue)).fetchall()
    assert len(rows) == 1
    claimed: UUID = rows[0][0]
    return claimed


async def drain(conductor: Conductor) -> None:
    await Orchestrator.create(conductor).drain()


class GreetIn(pydantic.BaseModel):
    name: str


class GreetOut(pydantic.BaseModel):
    text: str


# --- invoke ----------------------------------------------------------------------------


async def test_invoke_returns_uuid_and_writes_a_pending_row(conductor: Conductor, db: Db) -> None:
    run_at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    execution_id = await conductor.invoke("greet", {"name": "Ada"}, priority=7, run_at=run_at)
    assert isinstance(execution_id, UUID)
    row = must_row(db, execution_id)
    assert row["task_name"] == "greet"
    assert row["status"] == "pending"
    assert row["payload"] == {"name": "Ada"}
    assert row["queue"] == "default"
    assert row["priority"] == 7
    assert row["run_at"] == run_at
    assert row["attempts"] == 0
    assert row["dedupe_key"] is None
    assert row["event_name"] == "pgconductor.invoke"
    assert count(db) == 1


async def test_invoke_defaults_payload_priority_and_run_at_now(conductor: Conductor, db: Db) -> None:
    await pgc_testing.set_fake_time(conductor, T0)
    execution_id = await conductor.invoke("plain")
    assert execution_id is not None
    row = must_row(db, execution_id)
    assert row["payload"] == {}
    assert row["priority"] == 0
    assert row["run_at"] == T0
    assert row["created_at"] == T0
    assert row["queue"] == "default"


async def test_invoke_uses_the_queue_of_the_decorator(conductor: Conductor, db: Db) -> None:
    @conductor.task("mail", queue="emails")
    async def mail(event: Any, ctx: Any) -> None:
        return None

    by_name = await conductor.invoke("mail", {"to": "a"})
    by_handle = await mail.invoke({"to": "b"})
    assert by_name is not None and by_handle is not None
    assert must_row(db, by_name)["queue"] == "emails"
    assert must_row(db, by_handle)["queue"] == "emails"


async def test_invoke_explicit_queue_wins(conductor: Conductor, db: Db) -> None:
    @conductor.task("mail", queue="emails")
    async def mail(event: Any, ctx: Any) -> None:
        return None

    explicit = await conductor.invoke("mail", {}, queue="urgent")
    other = await conductor.invoke("unregistered", {}, queue="side")
    assert explicit is not None and other is not None
    assert must_row(db, explicit)["queue"] == "urgent"
    assert must_row(db, other)["queue"] == "side"


async def test_invoke_accepts_a_task_definition_and_a_payload_model(conductor: Conductor, db: Db) -> None:
    greet_def = define_task("greet", payload=GreetIn)
    execution_id = await conductor.invoke(greet_def, GreetIn(name="Ada"))
    assert execution_id is not None
    assert must_row(db, execution_id)["payload"] == {"name": "Ada"}


# --- dedupe (SPEC §3) ------------------------------------------------------------------


async def test_dedupe_pending_replaces_payload_priority_and_run_at(conductor: Conductor, db: Db) -> None:
    await pgc_testing.set_fake_time(conductor, T0)
    first = await conductor.invoke("sync-user", {"v": 1}, dedupe_key="user-1")
    later = T0 + timedelta(hours=1)
    second = await conductor.invoke("sync-user", {"v": 2}, dedupe_key="user-1", priority=9, run_at=later)
    assert second == first
    assert count(db) == 1
    row = must_row(db, first)  # type: ignore[arg-type]
    assert row["status"] == "pending"
    assert row["payload"] == {"v": 2}
    assert row["priority"] == 9
    assert row["run_at"] == later
    assert row["dedupe_key"] == "user-1"


async def test_dedupe_key_is_per_task_and_queue(conductor: Conductor, db: Db) -> None:
    a = await conductor.invoke("t1", {}, dedupe_key="k")
    b = await conductor.invoke("t2", {}, dedupe_key="k")
    c = await conductor.invoke("t1", {}, dedupe_key="k", queue="other")
    assert len({a, b, c}) == 3
    assert count(db) == 3


async def test_dedupe_running_queues_a_successor_then_replaces_it(conductor: Conductor, db: Db) -> None:
    first = await conductor.invoke("sync-user", {"v": 1}, dedupe_key="user-1")
    assert claim_one(db) == first
    assert must_row(db, first)["status"] == "running"

    successor = await conductor.invoke("sync-user", {"v": 2}, dedupe_key="user-1", priority=3)
    assert successor is not None and successor != first
    running = must_row(db, first)
    assert running["status"] == "running" and running["payload"] == {"v": 1}
    queued = must_row(db, successor)
    assert queued["status"] == "pending" and queued["payload"] == {"v": 2} and queued["priority"] == 3

    again = await conductor.invoke("sync-user", {"v": 3}, dedupe_key="user-1", priority=4)
    assert again == successor
    queued = must_row(db, successor)
    assert queued["status"] == "pending" and queued["payload"] == {"v": 3} and queued["priority"] == 4
    assert must_row(db, first)["payload"] == {"v": 1}
    assert count(db) == 2


@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
async def test_dedupe_finished_returns_the_existing_id_and_queues_nothing(
    conductor: Conductor, db: Db, final: str
) -> None:
    calls: list[Any] = []

    @conductor.task("once", max_attempts=1)
    async def once(event: Any, ctx: Any) -> dict[str, int]:
        calls.append(event.payload)
        if final == "failed":
            raise RuntimeError("nope")
        return {"ok": 1}

    first = await conductor.invoke("once", {"v": 1}, dedupe_key="k")
    assert first is not None
    if final == "cancelled":
        assert await conductor.cancel(first) is True
    else:
        await drain(conductor)
    assert must_row(db, first)["status"] == final

    again = await conductor.invoke("once", {"v": 2}, dedupe_key="k", priority=5)
    assert again == first
    assert count(db) == 1
    row = must_row(db, first)
    assert row["status"] == final and row["payload"] == {"v": 1} and row["priority"] == 0

    handled = len(calls)
    await drain(conductor)
    assert len(calls) == handled  # nothing new ran


# --- invoke_many ----------------------------------------------------------------------


async def test_invoke_many_returns_ids_in_item_order(conductor: Conductor, db: Db) -> None:
    when = datetime(2032, 1, 1, tzinfo=UTC)
    items: list[dict[str, Any]] = [
        {"payload": {"n": 0}},
        {"payload": {"n": 1}, "dedupe_key": "k1", "priority": 5},
        {"payload": {"n": 2}, "run_at": when},
        {},
    ]
    ids = await conductor.invoke_many("bulk", items)
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(isinstance(i, UUID) for i in ids)
    rows = [must_row(db, i) for i in ids]
    assert [r["payload"] for r in rows] == [{"n": 0}, {"n": 1}, {"n": 2}, {}]
    assert [r["priority"] for r in rows] == [0, 5, 0, 0]
    assert rows[1]["dedupe_key"] == "k1"
    assert rows[2]["run_at"] == when
    assert {r["status"] for r in rows} == {"pending"}
    assert {r["queue"] for r in rows} == {"default"}
    assert count(db) == 4


async def test_invoke_many_uses_the_registered_or_explicit_queue(conductor: Conductor, db: Db) -> None:
    @conductor.task("mail", queue="emails")
    async def mail(event: Any, ctx: Any) -> None:
        return None

    registered = await conductor.invoke_many("mail", [{"payload": {}}])
    by_handle = await mail.invoke_many([{"payload": {}}])
    explicit = await conductor.invoke_many("mail", [{"payload": {}}], queue="urgent")
    assert must_row(db, registered[0])["queue"] == "emails"
    assert must_row(db, by_handle[0])["queue"] == "emails"
    assert must_row(db, explicit[0])["queue"] == "urgent"


async def test_invoke_many_repeated_keys_collapse_to_the_last_item(conductor: Conductor, db: Db) -> None:
    ids = await conductor.invoke_many(
        "bulk",
        [
            {"payload": {"v": 1}, "dedupe_key": "a", "priority": 1},
            {"payload": {"v": 2}},
            {"payload": {"v": 3}, "dedupe_key": "a", "priority": 3},
            {"payload": {"v": 4}, "dedupe_key": "b"},
        ],
    )
    assert len(ids) == 4
    assert ids[0] == ids[2]
    assert len({ids[0], ids[1], ids[3]}) == 3
    assert count(db) == 3
    collapsed = must_row(db, ids[0])
    assert collapsed["payload"] == {"v": 3} and collapsed["priority"] == 3


async def test_invoke_many_follows_dedupe_rules_against_existing_rows(conductor: Conductor, db: Db) -> None:
    pending = await conductor.invoke("bulk", {"v": 1}, dedupe_key="p")
    cancelled = await conductor.invoke("bulk", {"v": 1}, dedupe_key="c")
    assert pending is not None and cancelled is not None
    assert await conductor.cancel(cancelled)
    ids = await conductor.invoke_many(
        "bulk", [{"payload": {"v": 2}, "dedupe_key": "p"}, {"payload": {"v": 2}, "dedupe_key": "c"}]
    )
    assert ids == [pending, cancelled]
    assert must_row(db, pending)["payload"] == {"v": 2}
    assert must_row(db, cancelled)["payload"] == {"v": 1}
    assert count(db) == 2


async def test_invoke_many_bad_item_changes_no_existing_row(conductor: Conductor, db: Db) -> None:
    existing = await conductor.invoke("bulk", {"v": 1}, dedupe_key="p", priority=1)
    assert existing is not None
    with pytest.raises(InvalidInput) as exc:
        await conductor.invoke_many(
            "bulk",
            [{"payload": {"v": 2}, "dedupe_key": "p", "priority": 9}, {"payload": {}}, {"payload": [1]}],
        )
    assert exc.value.input in ("items[2]", "items[2].payload")
    assert count(db) == 1
    row = must_row(db, existing)
    assert row["payload"] == {"v": 1} and row["priority"] == 1


async def test_invoke_many_items_run_in_item_order(conductor: Conductor) -> None:
    """Same priority and run_at: executions run in insertion order, i.e. the order of the items."""
    await pgc_testing.set_fake_time(conductor, T0)
    order: list[int] = []

    @conductor.task("ordered")
    async def ordered(event: Any, ctx: Any) -> None:
        order.append(event.payload["n"])

    await ordered.invoke_many(
        [
            {"payload": {"n": 0}, "dedupe_key": "a"},
            {"payload": {"n": 1}},
            {"payload": {"n": 2}, "dedupe_key": "b"},
        ]
    )
    await Orchestrator.create(conductor, default_worker=WorkerConfig(concurrency=1)).drain()
    assert order == [0, 1, 2]


async def test_invoke_many_validates_payloads_per_item_against_the_model(
    conductor: Conductor, db: Db
) -> None:
    greet_def = define_task("greet", payload=GreetIn)
    with pytest.raises(InvalidInput) as exc:
        await conductor.invoke_many(
            greet_def, [{"payload": {"name": "Ada"}}, {"payload": {"name": "Bob"}}, {"payload": {"nom": 1}}]
        )
    assert exc.value.input == "items[2].payload"
    assert "items[2]" in str(exc.value)
    assert count(db) == 0

    ids = await conductor.invoke_many(
        greet_def, [{"payload": GreetIn(name="Ada")}, {"payload": {"name": "B"}}]
    )
    assert [must_row(db, i)["payload"] for i in ids] == [{"name": "Ada"}, {"name": "B"}]


@pytest.mark.parametrize(
    ("items", "named"),
    [
        ([{"payload": {}}, "not a dict"], "items[1]"),
        ([{"payload": {}}, {"payload": {}, "colour": "red"}], "items[1]"),
        ([{"payload": {}}, {"payload": [1]}], "items[1]"),  # refused by the SQL function
        ([{"payload": {}}, {"payload": {}}, {"priority": "high"}], "items[2]"),  # refused by SQL
        ([{"payload": {}}, {"priority": 1.5}], "items[1]"),
        ([{"payload": {}}, {"run_at": "not a time"}], "items[1]"),
        ([{"payload": {}}, {"run_at": datetime(2030, 1, 1)}], "items[1]"),  # naive datetime
        ([{"payload": {}}, {"dedupe_key": ""}], "items[1]"),
        ("not a list", "items"),
    ],
    ids=[
        "not-a-dict",
        "unknown-key",
        "payload-not-object",
        "priority-string",
        "priority-float",
        "run_at-garbage",
        "run_at-naive",
        "empty-dedupe-key",
        "items-not-a-list",
    ],
)
async def test_invoke_many_bad_item_writes_nothing(
    conductor: Conductor, db: Db, items: Any, named: str
) -> None:
    with pytest.raises(InvalidInput) as exc:
        await conductor.invoke_many("bulk", items)
    assert exc.value.input.startswith(named), exc.value.input
    assert named in str(exc.value)
    assert count(db) == 0


# --- transactional enqueue (conn=) -----------------------------------------------------


async def test_invoke_with_async_conn_rolled_back_writes_and_runs_nothing(
    conductor: Conductor, db: Db, dsn: str
) -> None:
    calls: list[Any] = []

    @conductor.task("tx")
    async def tx(event: Any, ctx: Any) -> None:
        calls.append(event.payload)

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        execution_id = await conductor.invoke("tx", {"n": 1}, conn=conn)
        ids = await conductor.invoke_many("tx", [{"payload": {"n": 2}}], conn=conn)
        assert execution_id is not None and len(ids) == 1
        assert count(db) == 0  # not visible before commit
        await conn.rollback()
    assert count(db) == 0
    assert await conductor.get_execution(execution_id) is None
    await drain(conductor)
    assert calls == []


async def test_invoke_with_async_conn_committed_runs(conductor: Conductor, db: Db, dsn: str) -> None:
    calls: list[Any] = []

    @conductor.task("tx")
    async def tx(event: Any, ctx: Any) -> None:
        calls.append(event.payload)

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        execution_id = await conductor.invoke("tx", {"n": 1}, conn=conn)
        assert count(db) == 0
        await conn.commit()
    assert execution_id is not None
    assert must_row(db, execution_id)["status"] == "pending"
    await drain(conductor)
    assert calls == [{"n": 1}]
    assert must_row(db, execution_id)["status"] == "completed"


async def test_invoke_sync_with_sync_conn_rolled_back_and_committed(
    conductor: Conductor, db: Db, dsn: str
) -> None:
    calls: list[Any] = []

    @conductor.task("tx")
    async def tx(event: Any, ctx: Any) -> None:
        calls.append(event.payload)

    with psycopg.connect(dsn) as conn:
        rolled = conductor.invoke_sync("tx", {"n": "rolled back"}, conn=conn)
        conductor.invoke_many_sync("tx", [{"payload": {"n": "rolled back too"}}], conn=conn)
        assert rolled is not None
        assert count(db) == 0
        conn.rollback()
        assert count(db) == 0
        kept = conductor.invoke_sync("tx", {"n": "committed"}, conn=conn)
        assert count(db) == 0
        conn.commit()
    assert kept is not None
    assert count(db) == 1 and row_of(db, rolled) is None
    await drain(conductor)
    assert calls == [{"n": "committed"}]


async def test_invoke_with_the_wrong_kind_of_connection_is_refused(
    conductor: Conductor, db: Db, dsn: str
) -> None:
    with psycopg.connect(dsn) as sync_conn:
        with pytest.raises(InvalidInput) as exc:
            await conductor.invoke("tx", {}, conn=sync_conn)  # type: ignore[arg-type]
        assert exc.value.input == "conn"
    async with await psycopg.AsyncConnection.connect(dsn) as async_conn:
        with pytest.raises(InvalidInput) as exc:
            conductor.invoke_sync("tx", {}, conn=async_conn)  # type: ignore[arg-type]
        assert exc.value.input == "conn"
    assert count(db) == 0


# --- sync twins ------------------------------------------------------------------------


async def test_sync_twins_behave_like_the_async_calls(conductor: Conductor, db: Db) -> None:
    @conductor.task("echo")
    def echo(event: Any, ctx: Any) -> dict[str, Any]:
        return {"echo": event.payload["v"]}

    first = conductor.invoke_sync("echo", {"v": 1}, dedupe_key="k", priority=2)
    assert isinstance(first, UUID)
    assert conductor.invoke_sync("echo", {"v": 2}, dedupe_key="k") == first
    assert must_row(db, first)["payload"] == {"v": 2}
    by_handle = echo.invoke_sync({"v": 3})
    ids = conductor.invoke_many_sync("echo", [{"payload": {"v": 4}}, {"payload": {"v": 5}}])
    assert len(ids) == 2 and count(db) == 4

    info = conductor.get_execution_sync(first)
    assert info is not None and info.status == "pending" and info.payload == {"v": 2}
    assert conductor.get_execution_sync(uuid.uuid4()) is None

    assert conductor.cancel_sync(ids[1], reason="not needed") is True
    assert conductor.cancel_sync(ids[1]) is False
    with pytest.raises(ExecutionCancelled) as cancelled:
        conductor.wait_for_sync(ids[1], timeout=5)
    assert cancelled.value.error_message == "not needed"

    with pytest.raises(WaitTimeout):
        conductor.wait_for_sync(first, timeout=0.2)

    await drain(conductor)
    assert conductor.wait_for_sync(first, timeout=5) == {"echo": 2}
    assert conductor.wait_for_sync(by_handle, timeout=5) == {"echo": 3}
    assert conductor.wait_for_sync(ids[0], timeout=5) == {"echo": 4}
    with pytest.raises(UnknownExecution):
        conductor.wait_for_sync(uuid.uuid4(), timeout=1)
    info = conductor.get_execution_sync(first)
    assert info is not None and info.status == "completed" and info.result == {"echo": 2}
    assert conductor.cancel_sync(first) is False


# --- wait_for ---------------------------------------------------------------------------


async def test_wait_for_returns_the_result_parsed_into_the_returns_model(
    conductor: Conductor, dsn: str
) -> None:
    greet_def = define_task("greet", payload=GreetIn, returns=GreetOut)

    @conductor.task(greet_def)
    async def greet(event: Any, ctx: Any) -> GreetOut:
        assert isinstance(event.payload, GreetIn)
        return GreetOut(text=f"hello {event.payload.name}")

    execution_id = await greet.invoke({"name": "Ada"})
    await drain(conductor)
    result = await conductor.wait_for(execution_id, timeout=5)
    assert result == GreetOut(text="hello Ada")

    # A producer that only declared the task parses the result the same way.
    async with Conductor.create(dsn, tasks=[greet_def]) as producer:
        assert await producer.wait_for(execution_id, timeout=5) == GreetOut(text="hello Ada")


async def test_wait_for_returns_plain_json_without_a_model(conductor: Conductor) -> None:
    @conductor.task("plain")
    async def plain(event: Any, ctx: Any) -> list[int]:
        return [1, 2, 3]

    execution_id = await plain.invoke({})
    await drain(conductor)
    assert await conductor.wait_for(execution_id, timeout=5) == [1, 2, 3]


async def test_wait_for_raises_the_failure_of_the_last_attempt(conductor: Conductor, db: Db) -> None:
    await pgc_testing.set_fake_time(conductor, T0)

    @conductor.task("flaky", max_attempts=2)
    async def flaky(event: Any, ctx: Any) -> None:
        raise ValueError(f"boom on attempt {ctx.attempt}")

    execution_id = await flaky.invoke({})
    await drain(conductor)
    row = must_row(db, execution_id)
    assert row["status"] == "pending" and row["attempts"] == 1
    await pgc_testing.advance_time(conductor, timedelta(seconds=16))  # past the 15 s backoff
    await drain(conductor)
    assert must_row(db, execution_id)["status"] == "failed"

    with pytest.raises(ExecutionFailed) as exc:
        await conductor.wait_for(execution_id, timeout=5)
    assert not isinstance(exc.value, ExecutionCancelled)
    assert exc.value.execution_id == execution_id
    assert exc.value.error_type == "ValueError"
    assert exc.value.error_message == "boom on attempt 2"
    assert exc.value.traceback is not None
    assert "ValueError: boom on attempt 2" in exc.value.traceback
    assert "boom on attempt 2" in str(exc.value)


async def test_wait_for_raises_execution_cancelled(conductor: Conductor) -> None:
    execution_id = await conductor.invoke("later", {})
    assert execution_id is not None
    assert await conductor.cancel(execution_id, reason="changed my mind")
    with pytest.raises(ExecutionCancelled) as exc:
        await conductor.wait_for(execution_id, timeout=5)
    assert exc.value.execution_id == execution_id
    assert exc.value.error_message == "changed my mind"


async def test_wait_for_times_out_on_an_unfinished_execution(conductor: Conductor, db: Db) -> None:
    execution_id = await conductor.invoke("nobody-runs-this", {})
    assert execution_id is not None
    with pytest.raises(WaitTimeout) as exc:
        await conductor.wait_for(execution_id, timeout=0.2)
    assert isinstance(exc.value, TimeoutError)
    assert str(execution_id) in str(exc.value)
    assert must_row(db, execution_id)["status"] == "pending"


async def test_wait_for_an_unknown_execution_raises(conductor: Conductor) -> None:
    missing = uuid.uuid4()
    with pytest.raises(UnknownExecution) as exc:
        await conductor.wait_for(missing, timeout=1)
    assert str(missing) in str(exc.value)


# --- get_execution ---------------------------------------------------------------------


async def test_get_execution_unknown_is_none(conductor: Conductor) -> None:
    assert await conductor.get_execution(uuid.uuid4()) is None


async def test_get_execution_fields_match_the_row(conductor: Conductor, db: Db) -> None:
    @conductor.task("shape", max_attempts=4)
    async def shape(event: Any, ctx: Any) -> dict[str, str]:
        return {"done": "yes"}

    execution_id = await shape.invoke({"a": 1}, dedupe_key="d", priority=3)
    assert execution_id is not None
    pending = await conductor.get_execution(execution_id)
    assert pending is not None
    assert dataclasses.asdict(pending) == must_row(db, execution_id)
    assert pending.id == execution_id and pending.status == "pending" and not pending.finished
    assert pending.dedupe_key == "d" and pending.priority == 3 and pending.payload == {"a": 1}

    await drain(conductor)
    done = await conductor.get_execution(execution_id)
    assert done is not None
    assert dataclasses.asdict(done) == must_row(db, execution_id)
    assert done.status == "completed" and done.finished
    assert done.result == {"done": "yes"} and done.attempts == 1 and done.max_attempts == 4
    assert done.started_at is not None and done.finished_at is not None and done.error is None


# --- cancel ----------------------------------------------------------------------------


async def test_cancel_pending_never_runs(conductor: Conductor, db: Db) -> None:
    calls: list[Any] = []

    @conductor.task("victim")
    async def victim(event: Any, ctx: Any) -> None:
        calls.append(event.payload)

    doomed = await victim.invoke({"n": 1})
    kept = await victim.invoke({"n": 2})
    assert doomed is not None and kept is not None
    assert await conductor.cancel(doomed, reason="no longer needed") is True
    row = must_row(db, doomed)
    assert row["status"] == "cancelled" and row["finished_at"] is not None
    assert row["cancel_reason"] == "no longer needed"
    await drain(conductor)
    assert calls == [{"n": 2}]
    assert must_row(db, doomed)["status"] == "cancelled"
    assert must_row(db, kept)["status"] == "completed"


async def test_cancel_finished_or_unknown_returns_false(conductor: Conductor, db: Db) -> None:
    @conductor.task("quick")
    async def quick(event: Any, ctx: Any) -> int:
        return 1

    execution_id = await quick.invoke({})
    assert execution_id is not None
    await drain(conductor)
    assert await conductor.cancel(execution_id) is False
    assert must_row(db, execution_id)["status"] == "completed"

    cancelled = await conductor.invoke("other", {})
    assert cancelled is not None
    assert await conductor.cancel(cancelled) is True
    assert await conductor.cancel(cancelled) is False
    assert await conductor.cancel(uuid.uuid4()) is False


# --- bad input -------------------------------------------------------------------------

BadCall = Callable[[Any], Any]  # Any: the calls pass ill-typed arguments on purpose

BAD_INVOKES: list[tuple[str, BadCall, str]] = [
    ("empty-task-name", lambda c: c.invoke("", {}), "task_name"),
    ("blank-task-name", lambda c: c.invoke("   ", {}), "task_name"),
    ("none-task-name", lambda c: c.invoke(None, {}), "task_name"),
    ("payload-list", lambda c: c.invoke("t", [1, 2]), "payload"),
    ("payload-string", lambda c: c.invoke("t", "hello"), "payload"),
    ("payload-not-json", lambda c: c.invoke("t", {"x": object()}), "payload"),
    ("naive-run_at", lambda c: c.invoke("t", {}, run_at=datetime(2030, 1, 1)), "run_at"),
    ("run_at-string", lambda c: c.invoke("t", {}, run_at="2030-01-01T00:00:00Z"), "run_at"),
    ("priority-str", lambda c: c.invoke("t", {}, priority="high"), "priority"),
    ("priority-float", lambda c: c.invoke("t", {}, priority=1.5), "priority"),
    ("priority-none", lambda c: c.invoke("t", {}, priority=None), "priority"),
    ("empty-dedupe-key", lambda c: c.invoke("t", {}, dedupe_key=""), "dedupe_key"),
    ("empty-queue", lambda c: c.invoke("t", {}, queue=""), "queue"),
    (
        "throttle-and-debounce",
        lambda c: c.invoke("t", {}, throttle={"seconds": 5}, debounce={"seconds": 5}),
        "throttle",
    ),
    ("throttle-shape", lambda c: c.invoke("t", {}, throttle={"secs": 5}), "throttle"),
    ("debounce-shape", lambda c: c.invoke("t", {}, debounce={"max_wait": 5}), "debounce"),
]


@pytest.mark.parametrize(
    ("call", "named"), [(call, named) for _, call, named in BAD_INVOKES], ids=[i for i, _, _ in BAD_INVOKES]
)
async def test_bad_invoke_is_refused_naming_the_input(
    conductor: Conductor, db: Db, call: BadCall, named: str
) -> None:
    with pytest.raises(InvalidInput) as exc:
        await call(conductor)
    assert exc.value.input == named
    assert named in str(exc.value)
    assert count(db) == 0


async def test_bad_invoke_sync_is_refused_naming_the_input(conductor: Conductor, db: Db) -> None:
    with pytest.raises(InvalidInput) as exc:
        conductor.invoke_sync("t", [1])
    assert exc.value.input == "payload"
    with pytest.raises(InvalidInput) as exc:
        conductor.invoke_sync("", {})
    assert exc.value.input == "task_name"
    with pytest.raises(InvalidInput) as exc:
        conductor.invoke_many_sync("t", [{"payload": {}}, {"nope": 1}])
    assert exc.value.input == "items[1]"
    assert count(db) == 0


async def test_payload_failing_the_model_is_refused(conductor: Conductor, db: Db) -> None:
    greet_def = define_task("greet", payload=GreetIn)

    @conductor.task(greet_def)
    async def greet(event: Any, ctx: Any) -> None:
        return None

    for call in (
        lambda: conductor.invoke("greet", {"nom": "Ada"}),
        lambda: conductor.invoke(greet_def, {"name": ["not", "a", "string"]}),
        lambda: greet.invoke({}),
    ):
        with pytest.raises(InvalidInput) as exc:
            await call()
        assert exc.value.input == "payload"
        assert "GreetIn" in str(exc.value)
    with pytest.raises(InvalidInput):
        conductor.invoke_sync("greet", {"nom": "Ada"})
    assert count(db) == 0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"remove_on_complete": {"days": -1}}, "remove_on_complete"),
        ({"remove_on_complete": "x"}, "remove_on_complete"),
        ({"remove_on_complete": True}, "remove_on_complete"),
        ({"remove_on_complete": {"weeks": 1}}, "remove_on_complete"),
        ({"remove_on_fail": -3}, "remove_on_fail"),
        ({"queue": ""}, "queue"),
    ],
    ids=[
        "max_attempts-0",
        "max_attempts-negative",
        "max_attempts-float",
        "retention-negative-days",
        "retention-string",
        "retention-true",
        "retention-weeks",
        "retention-fail-negative",
        "queue-empty",
    ],
)
async def test_bad_task_options_are_refused(
    conductor: Conductor, db: Db, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidInput) as exc:

        @conductor.task("bad", **options)
        async def bad(event: Any, ctx: Any) -> None:
            return None

    assert exc.value.input == named
    assert named in str(exc.value)
    assert conductor.tasks == []
    row = db.execute("select count(*) from pgconductor._tasks").fetchone()
    assert row is not None and row[0] == 0


async def test_unknown_task_is_refused_when_the_conductor_has_a_task_list(dsn: str, db: Db) -> None:
    known = define_task("known")
    async with Conductor.create(dsn, tasks=[known]) as conductor:
        with pytest.raises(UnknownTask) as exc:
            await conductor.invoke("typo", {})
        assert isinstance(exc.value, InvalidInput)
        assert exc.value.name == "typo" and "typo" in str(exc.value)
        with pytest.raises(UnknownTask) as exc:
            await conductor.invoke_many("typo", [{"payload": {}}])
        assert "typo" in str(exc.value)
        with pytest.raises(UnknownTask):
            conductor.invoke_sync("typo", {})
        with pytest.raises(UnknownTask):
            await conductor.invoke(define_task("undeclared"), {})
        with pytest.raises(UnknownTask) as exc:

            @conductor.task("undeclared")
            async def undeclared(event: Any, ctx: Any) -> None:
                return None

        assert "undeclared" in str(exc.value)
        assert conductor.tasks == []
        assert count(db) == 0

        # The declared one is accepted.
        assert isinstance(await conductor.invoke("known", {}), UUID)
        assert count(db) == 1


def test_sql_invoke_with_a_non_object_payload_raises_pgc01(db: Db) -> None:
    with pytest.raises(psycopg.Error) as exc:
        db.execute("select pgconductor.invoke('t', '[1]'::jsonb)")
    assert exc.value.sqlstate == "PGC01"
    assert "payload" in str(exc.value)
    with pytest.raises(psycopg.Error) as exc:
        db.execute("select pgconductor.invoke('', '{}'::jsonb)")
    assert exc.value.sqlstate == "PGC01"
    with pytest.raises(psycopg.Error) as exc:
        db.execute("""select pgconductor.invoke_many('t', '[{"payload": {}}, 3]'::jsonb)""")
    assert exc.value.sqlstate == "PGC01"
    assert "items[1]" in str(exc.value)
    assert count(db) == 0


# --- ensure_installed ------------------------------------------------------------------


@pytest.fixture
def bare_dbname() -> Iterator[str]:
    """A database created without the template: no extension installed."""
    name = f"pgconductor_bare_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    ident = psycopg.sql.Identifier(name)
    with psycopg.connect(dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("create database {}").format(ident))
    try:
        yield name
    finally:
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("drop database if exists {} with (force)").format(ident))


def installed_version(dsn: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select extversion from pg_extension where extname = 'pgconductor'").fetchone()
    return None if row is None else str(row[0])


async def test_ensure_installed_creates_the_extension_then_is_a_no_op(bare_dbname: str) -> None:
    dsn = dsn_for(bare_dbname)
    assert installed_version(dsn) is None
    async with Conductor.create(dsn) as conductor:
        assert await conductor.ensure_installed() == "0.1.0"
        assert installed_version(dsn) == "0.1.0"
        execution_id = await conductor.invoke("after-install", {"x": 1})
        assert execution_id is not None
        assert await conductor.ensure_installed() == "0.1.0"
        assert installed_version(dsn) == "0.1.0"
        info = await conductor.get_execution(execution_id)
        assert info is not None and info.payload == {"x": 1}  # nothing was reinstalled


async def test_ensure_installed_without_extension_files_names_make_install(bare_dbname: str) -> None:
    sharedir = subprocess.run(
        ["pg_config", "--sharedir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    control = Path(sharedir) / "extension" / "pgconductor.control"
    if not control.exists() or not os.access(control.parent, os.W_OK):
        pytest.skip(f"{control} is not writable by the test user")
    hidden = control.with_name(f"pgconductor.control.hidden-{os.getpid()}")
    dsn = dsn_for(bare_dbname)
    async with Conductor.create(dsn) as conductor:
        control.rename(hidden)
        try:
            with pytest.raises(ExtensionNotAvailable) as exc:
                await conductor.ensure_installed()
        finally:
            hidden.rename(control)
    assert "make install" in str(exc.value)
    assert installed_version(dsn) is None


# --- retention -------------------------------------------------------------------------


async def test_remove_on_complete_zero_deletes_at_once(conductor: Conductor, db: Db) -> None:
    @conductor.task("ephemeral", remove_on_complete=0)
    async def ephemeral(event: Any, ctx: Any) -> int:
        return 1

    execution_id = await ephemeral.invoke({})
    assert execution_id is not None
    await drain(conductor)
    assert row_of(db, execution_id) is None
    assert count(db) == 0
    assert await conductor.get_execution(execution_id) is None


async def test_remove_on_complete_days_deletes_after_the_retention(conductor: Conductor, db: Db) -> None:
    await pgc_testing.set_fake_time(conductor, T0)
    calls: list[Any] = []

    @conductor.task("kept-a-day", remove_on_complete={"days": 1})
    async def kept(event: Any, ctx: Any) -> int:
        calls.append(event.payload)
        return 1

    execution_id = await kept.invoke({})
    assert execution_id is not None
    await drain(conductor)
    assert calls == [{}]
    row = must_row(db, execution_id)
    assert row["status"] == "completed" and row["finished_at"] == T0

    await pgc_testing.advance_time(conductor, timedelta(hours=23))
    await pgc_testing.run_maintenance(conductor)
    assert row_of(db, execution_id) is not None

    await pgc_testing.advance_time(conductor, timedelta(hours=2))
    await pgc_testing.run_maintenance(conductor)
    assert row_of(db, execution_id) is None
    with pytest.raises(UnknownExecution):
        await conductor.wait_for(execution_id, timeout=1)


# --- queue_stats -----------------------------------------------------------------------


async def test_queue_stats_counts_per_task(conductor: Conductor) -> None:
    await pgc_testing.set_fake_time(conductor, T0)

    @conductor.task("alpha")
    async def alpha(event: Any, ctx: Any) -> None:
        return None

    await alpha.invoke({})
    await drain(conductor)  # alpha: 1 completed
    await alpha.invoke({})
    await alpha.invoke({})
    doomed = await alpha.invoke({})
    assert doomed is not None
    await conductor.cancel(doomed)  # alpha: 2 pending, 1 cancelled
    await conductor.invoke("beta", {}, queue="side")  # beta: 1 pending on queue side
    await conductor.invoke("beta", {}, queue="side", run_at=T0 + timedelta(hours=1))  # not ready yet
    await pgc_testing.advance_time(conductor, timedelta(seconds=10))

    stats = {(s.queue, s.task_name): s for s in await conductor.queue_stats()}
    assert set(stats) == {("default", "alpha"), ("side", "beta")}
    a = stats[("default", "alpha")]
    assert (a.pending, a.running, a.waiting, a.completed, a.failed, a.cancelled) == (2, 0, 0, 1, 0, 1)
    assert a.oldest_pending_age == timedelta(seconds=10)
    b = stats[("side", "beta")]
    assert (b.pending, b.running, b.waiting, b.completed, b.failed, b.cancelled) == (2, 0, 0, 0, 0, 0)
    assert b.oldest_pending_age == timedelta(seconds=10)


async def test_queue_stats_empty_database(conductor: Conductor) -> None:
    assert await conductor.queue_stats() == []

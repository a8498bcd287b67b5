"""Throttle and debounce through the Python API, observed by the handlers that run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgconductor import Conductor, InvalidInput, Orchestrator
from pgconductor.testing import advance_time, set_fake_time

DB = psycopg.Connection[tuple[Any, ...]]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def recorder(conductor: Conductor, name: str) -> list[Any]:
    calls: list[Any] = []

    @conductor.task(name)
    async def handler(event: Any, ctx: Any) -> None:
        calls.append(event.payload)

    return calls


async def drain(conductor: Conductor) -> None:
    await Orchestrator.create(conductor).drain()


async def test_throttle_first_call_wins_per_window_with_and_without_keys(conductor: Conductor) -> None:
    await set_fake_time(conductor, T0)
    calls = recorder(conductor, "sync")
    first = await conductor.invoke("sync", {"n": 1}, throttle={"seconds": 60})
    assert first is not None
    assert await conductor.invoke("sync", {"n": 2}, throttle={"seconds": 60}) is None
    assert await conductor.invoke("sync", {"n": 3}, dedupe_key="a", throttle={"seconds": 60}) is not None
    assert await conductor.invoke("sync", {"n": 4}, dedupe_key="a", throttle={"seconds": 60}) is None
    await drain(conductor)
    assert sorted(c["n"] for c in calls) == [1, 3]
    # The window rolls over 60 s after the call that opened it.
    await advance_time(conductor, timedelta(seconds=59))
    assert await conductor.invoke("sync", {"n": 5}, throttle={"seconds": 60}) is None
    await advance_time(conductor, timedelta(seconds=1))
    assert conductor.invoke_sync("sync", {"n": 6}, throttle={"seconds": 60}) is not None
    await drain(conductor)
    assert sorted(c["n"] for c in calls) == [1, 3, 6]


async def test_invoke_many_throttles_per_item(conductor: Conductor) -> None:
    await set_fake_time(conductor, T0)
    ids = await conductor.invoke_many(
        "sync", [{"payload": {"n": n}, "throttle": {"seconds": 10}} for n in range(3)]
    )
    assert [i is not None for i in ids] == [True, False, False]


async def test_debounce_runs_once_with_the_last_payload_after_the_burst(conductor: Conductor) -> None:
    await set_fake_time(conductor, T0)
    calls = recorder(conductor, "reindex")
    ids = set()
    for n in range(4):  # a burst: one call every 2 s, debounce 5 s
        ids.add(await conductor.invoke("reindex", {"n": n}, debounce={"seconds": 5}))
        await drain(conductor)
        await advance_time(conductor, timedelta(seconds=2))
    assert len(ids) == 1 and calls == []  # every call returned the same id; nothing ran yet
    await advance_time(conductor, timedelta(seconds=3))  # 5 s after the last call
    await drain(conductor)
    assert calls == [{"n": 3}]
    # Keys debounce separately.
    a = await conductor.invoke("reindex", {"k": "a"}, dedupe_key="a", debounce={"seconds": 5})
    b = await conductor.invoke("reindex", {"k": "b"}, dedupe_key="b", debounce={"seconds": 5})
    assert a != b


async def test_debounce_max_wait_bounds_a_steady_stream(conductor: Conductor) -> None:
    await set_fake_time(conductor, T0)
    calls = recorder(conductor, "stream")
    for second in range(30):  # a worker looks every second; a call comes every 3 s
        if second % 3 == 0:
            await conductor.invoke("stream", {"n": second // 3}, debounce={"seconds": 5, "max_wait": 20})
        await drain(conductor)
        await advance_time(conductor, timedelta(seconds=1))
    # 5 s of quiet never comes, yet the burst ran 20 s after its first call, with the payload
    # of the last call before that (n=6, sent at 18 s); the call at 21 s started a new burst.
    assert calls == [{"n": 6}]


async def test_a_burst_during_a_running_debounced_execution_starts_a_new_one(conductor: Conductor) -> None:
    await set_fake_time(conductor, T0)
    started = asyncio.Event()
    release = asyncio.Event()
    seen: list[int] = []

    @conductor.task("rebuild")
    async def rebuild(event: Any, ctx: Any) -> None:
        seen.append(event.payload["n"])
        started.set()
        await release.wait()

    first = await conductor.invoke("rebuild", {"n": 1}, debounce={"seconds": 5})
    await advance_time(conductor, timedelta(seconds=5))
    orchestrator = Orchestrator.create(conductor)
    await orchestrator.start(handle_signals=False)
    try:
        await asyncio.wait_for(started.wait(), 10)
        second = await conductor.invoke("rebuild", {"n": 2}, debounce={"seconds": 5})
        assert second is not None and second != first
        release.set()
        await conductor.wait_for(first, timeout=10)
    finally:
        release.set()
        await orchestrator.stop()
    await advance_time(conductor, timedelta(seconds=5))
    await drain(conductor)
    assert seen == [1, 2]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"throttle": {"seconds": 0}}, "throttle.seconds"),
        ({"throttle": {"seconds": 1.5}}, "throttle.seconds"),
        ({"debounce": {"seconds": 5, "max_wait": -1}}, "debounce.max_wait"),
        ({"debounce": {"seconds": 5}, "run_at": T0}, "run_at"),
        ({"throttle": {"seconds": 5}, "debounce": {"seconds": 5}}, "throttle"),
    ],
)
async def test_bad_flow_control_is_refused_naming_it(
    conductor: Conductor, db: DB, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        await conductor.invoke("t", {}, **options)
    assert raised.value.input == named
    assert db.execute("select count(*) from pgconductor._executions").fetchone() == (0,)

"""Time windows: executions start only while their task's window is open (decided in SQL),
windows crossing midnight and in other time zones, release at a step or checkpoint when
the window closes, and bad windows refused at registration."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgconductor import Conductor, InvalidInput, Orchestrator
from pgconductor.testing import set_fake_time

from .polling import eventually

DB = psycopg.Connection[tuple[Any, ...]]
DAY = datetime(2030, 1, 1, tzinfo=UTC)  # a Tuesday in winter (Berlin is UTC+1)


def at(hours: int, minutes: int = 0, days: int = 0) -> datetime:
    return DAY + timedelta(days=days, hours=hours, minutes=minutes)


async def drain(conductor: Conductor) -> None:
    await Orchestrator.create(conductor).drain()


def state(db: DB, execution_id: Any) -> tuple[str, datetime | None, int]:
    row = db.execute(
        "select status, run_at, attempts from pgconductor.executions where id = %s", (execution_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


async def test_office_hours_window_skips_claims_outside_it(conductor: Conductor, db: DB) -> None:
    ran: list[str] = []

    @conductor.task("report", window=("09:00", "17:00"))
    async def report(event: Any, ctx: Any) -> None:
        ran.append(event.payload["n"])

    await set_fake_time(conductor, at(8, 0))
    early = await report.invoke({"n": "early"})
    await drain(conductor)
    assert ran == []
    assert state(db, early) == ("waiting", at(9, 0), 0)

    await set_fake_time(conductor, at(9, 0))
    await drain(conductor)
    assert ran == ["early"]

    await set_fake_time(conductor, at(17, 0))  # the end is exclusive
    late = await report.invoke({"n": "late"})
    await drain(conductor)
    assert ran == ["early"]
    assert state(db, late) == ("waiting", at(9, 0, days=1), 0)
    await set_fake_time(conductor, at(9, 0, days=1))
    await drain(conductor)
    assert ran == ["early", "late"]


async def test_window_crossing_midnight(conductor: Conductor, db: DB) -> None:
    ran: list[str] = []

    @conductor.task("nightly", window=("22:00", "06:00"))
    async def nightly(event: Any, ctx: Any) -> None:
        ran.append(event.payload["n"])

    await set_fake_time(conductor, at(12, 0))
    noon = await nightly.invoke({"n": "noon"})
    await drain(conductor)
    assert ran == [] and state(db, noon) == ("waiting", at(22, 0), 0)

    await set_fake_time(conductor, at(23, 30))
    await drain(conductor)
    assert ran == ["noon"]

    await set_fake_time(conductor, at(5, 59, days=1))
    await nightly.invoke({"n": "dawn"})
    await drain(conductor)
    assert ran == ["noon", "dawn"]

    await set_fake_time(conductor, at(6, 0, days=1))
    morning = await nightly.invoke({"n": "morning"})
    await drain(conductor)
    assert ran == ["noon", "dawn"] and state(db, morning) == ("waiting", at(22, 0, days=1), 0)


async def test_window_in_a_time_zone(conductor: Conductor, db: DB) -> None:
    ran: list[str] = []

    @conductor.task("berlin", window=("09:00", "17:00", "Europe/Berlin"))
    async def berlin(event: Any, ctx: Any) -> None:
        ran.append("ran")

    await set_fake_time(conductor, at(7, 30))  # 08:30 in Berlin
    execution_id = await berlin.invoke({})
    await drain(conductor)
    assert ran == [] and state(db, execution_id) == ("waiting", at(8, 0), 0)  # 09:00 in Berlin
    await set_fake_time(conductor, at(8, 0))
    await drain(conductor)
    assert ran == ["ran"]


@pytest.mark.parametrize("release_point", ["checkpoint", "step"])
async def test_running_execution_is_released_when_its_window_closes(
    conductor: Conductor, db: DB, release_point: str
) -> None:
    calls: Counter[str] = Counter()
    reached = asyncio.Event()
    go_on = asyncio.Event()

    @conductor.task("closing", window=("09:00", "17:00"))
    async def closing(event: Any, ctx: Any) -> str:
        calls["runs"] += 1
        await ctx.step("first", lambda: calls.update(["first"]))
        if calls["runs"] == 1:
            reached.set()
            await go_on.wait()
        if release_point == "checkpoint":
            await ctx.checkpoint()
        await ctx.step("second", lambda: calls.update(["second"]))
        return "finished"

    await set_fake_time(conductor, at(16, 59))
    execution_id = await closing.invoke({})
    orchestrator = Orchestrator.create(conductor)
    await orchestrator.start()
    try:
        await asyncio.wait_for(reached.wait(), 10)
        await set_fake_time(conductor, at(17, 1))
        go_on.set()
        await eventually(lambda: state(db, execution_id)[0], lambda s: s == "waiting")
    finally:
        await orchestrator.stop()
    # Released until tomorrow's opening; the attempt is not counted, the first step kept.
    assert state(db, execution_id) == ("waiting", at(9, 0, days=1), 0)
    assert calls == {"runs": 1, "first": 1}

    await set_fake_time(conductor, at(9, 0, days=1))
    await drain(conductor)
    assert await conductor.wait_for(execution_id) == "finished"
    assert calls == {"runs": 2, "first": 1, "second": 1}


async def test_dedupe_replaces_an_execution_waiting_for_its_window(conductor: Conductor, db: DB) -> None:
    seen: list[Any] = []

    @conductor.task("digest", window=("09:00", "17:00"))
    async def digest(event: Any, ctx: Any) -> None:
        seen.append(event.payload)

    await set_fake_time(conductor, at(20, 0))
    first = await digest.invoke({"v": 1}, dedupe_key="user-1")
    await drain(conductor)
    assert state(db, first)[0] == "waiting"
    second = await digest.invoke({"v": 2}, dedupe_key="user-1")
    assert second == first
    await set_fake_time(conductor, at(9, 0, days=1))
    await drain(conductor)
    assert seen == [{"v": 2}]


@pytest.mark.parametrize(
    "window, problem",
    [
        (("9:00", "17:00"), "'9:00' is not a time HH:MM"),
        (("09:00", "24:00"), "'24:00' is not a time HH:MM"),
        (("09:00", "09:00"), "start and end must differ"),
        (("09:00", "17:00", "Mars/Olympus"), "unknown IANA time zone 'Mars/Olympus'"),
        ("09:00-17:00", "must be None"),
        (("09:00",), "must be None"),
        (("09:00", "17:00", "UTC", "extra"), "must be None"),
    ],
)
async def test_bad_windows_are_refused_at_registration(
    conductor: Conductor, window: Any, problem: str
) -> None:
    async def handler(event: Any, ctx: Any) -> None:
        return None

    with pytest.raises(InvalidInput) as refused:
        conductor.create_task("windowed", handler, window=window)
    assert refused.value.input == "window" and problem in refused.value.problem
    assert "windowed" not in [t.name for t in conductor.tasks]


async def test_the_database_refuses_bad_windows_from_any_client(conductor: Conductor, db: DB) -> None:
    for window, problem in [
        ('["09:00", "17:00", "Mars/Olympus"]', "unknown IANA time zone"),
        ('["09:00", "09:00"]', "start and end must differ"),
        ('["9am", "5pm"]', 'must be null or ["HH:MM", "HH:MM"]'),
    ]:
        with pytest.raises(psycopg.Error) as refused:
            db.execute(
                "select pgconductor.register_worker(gen_random_uuid(), 'w',"
                " jsonb_build_array(jsonb_build_object('name', 't', 'window', %s::jsonb)))",
                (window,),
            )
        assert refused.value.sqlstate == "PGC01"
        assert "tasks[0].window" in str(refused.value) and problem in str(refused.value)
    assert db.execute("select count(*) from pgconductor._tasks").fetchone() == (0,)

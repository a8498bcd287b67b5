"""Concurrency limits across worker processes, observed through the handlers' own spans."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from pgconductor import Conductor, InvalidInput

from .conftest import spawn_worker

DB = psycopg.Connection[tuple[Any, ...]]
COMPLETED = "select count(*) from pgconductor.executions where task_name = 'limited' and status = 'completed'"


def wait_until(db: DB, sql: str, expected: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute(sql).fetchone()
        if row is not None and row[0] == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {sql!r} == {expected!r}")


def max_overlap(db: DB) -> int:
    """The most spans open at one instant (at each span's start)."""
    row = db.execute(
        "select coalesce(max(open), 0) from ("
        " select (select count(*) from spans o where o.started_at <= s.started_at"
        "   and coalesce(o.ended_at, 'infinity') > s.started_at) as open from spans s) x"
    ).fetchone()
    assert row is not None
    return int(row[0])


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def spans(db: DB) -> DB:
    db.execute(
        "create table spans (span bigint generated always as identity, execution_id uuid,"
        " pid int, started_at timestamptz, ended_at timestamptz)"
    )
    return db


@pytest.mark.parametrize("limit", [1, 3])
def test_limit_holds_across_two_worker_processes(dsn: str, spans: DB, limit: int) -> None:
    spans.execute(
        "select count(pgconductor.invoke('limited', jsonb_build_object('n', g)))"
        " from generate_series(1, 20) g"
    )
    env = (("LIMIT", str(limit)), ("SLEEP_S", "0.1"))
    workers = [spawn_worker(dsn, "limited:app", *env), spawn_worker(dsn, "limited:app", *env)]
    try:
        wait_until(
            spans,
            COMPLETED,
            20,
        )
    finally:
        stop(*workers)
    assert spans.execute("select count(distinct execution_id) from spans").fetchone() == (20,)
    overlap = max_overlap(spans)
    assert overlap <= limit
    assert overlap == limit  # the limit is also used, not just respected
    assert all(w.returncode == 0 for w in workers)


def test_slot_of_a_killed_worker_is_freed_by_lease_recovery(dsn: str, spans: DB) -> None:
    spans.execute("select pgconductor.set_fake_time(%s)", (datetime(2030, 1, 1, tzinfo=UTC),))
    first = spans.execute("select pgconductor.invoke('limited', '{\"n\": 1}')").fetchone()
    second = spans.execute("select pgconductor.invoke('limited', '{\"n\": 2}')").fetchone()
    assert first and second
    doomed = spawn_worker(dsn, "limited:app", ("LIMIT", "1"), ("SLEEP_S", "3600"))
    try:
        wait_until(spans, "select count(*) from spans", 1)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
        if doomed.stdout is not None:
            doomed.stdout.close()
    # The killed worker still holds the only slot: nothing else may start.
    assert spans.execute(
        "select count(*) from pgconductor.executions where task_name = 'limited' and status = 'running'"
    ).fetchone() == (1,)
    spans.execute("select pgconductor.set_fake_time(pgconductor.now() + interval '61 seconds')")
    survivor = spawn_worker(dsn, "limited:app", ("LIMIT", "1"), ("SLEEP_S", "0"))
    try:
        wait_until(
            spans,
            COMPLETED,
            2,
        )
    finally:
        stop(survivor)
    # The killed attempt never ended its span; the two runs that completed did not overlap.
    spans.execute("delete from spans where ended_at is null")
    assert spans.execute("select count(*) from spans").fetchone() == (2,)
    assert max_overlap(spans) == 1
    attempts = dict(spans.execute("select id, attempts from pgconductor.executions").fetchall())
    assert sorted(attempts.values()) == [1, 2]


async def test_bad_concurrency_is_refused(conductor: Conductor) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInput) as raised:
            conductor.create_task("t", lambda e, c: None, concurrency=bad)
        assert raised.value.input == "concurrency"

"""Worker processes (`pgconductor worker tests.py.apps.procs:app`): crash recovery by lease,
graceful shutdown on SIGTERM, no double execution across processes, second signal.

Outcomes are awaited by polling the database (or the process) every 50 ms up to a
deadline; every process a test starts is killed and reaped in its `finally`."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from pgconductor import Conductor
from pgconductor.testing import advance_time, set_fake_time

from .conftest import spawn_worker

APP = "procs:app"
TASK = "proc-work"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DB = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def calls(db: DB) -> DB:
    db.execute(
        "create table calls (execution_id uuid not null, pid int not null, what text not null,"
        " at timestamptz not null default clock_timestamp())"
    )
    return db


class Workers:
    """Spawns worker processes and always reaps them."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.procs: list[subprocess.Popen[bytes]] = []
        self.output: dict[int, str] = {}

    def spawn(self, *env: tuple[str, str]) -> subprocess.Popen[bytes]:
        proc = spawn_worker(self.dsn, APP, *env)
        self.procs.append(proc)
        return proc

    def reap(self, proc: subprocess.Popen[bytes]) -> str:
        """Kill if still alive, wait, and return everything it printed."""
        if proc.pid not in self.output:
            if proc.poll() is None:
                proc.kill()
            out, _ = proc.communicate()
            self.output[proc.pid] = out.decode(errors="replace")
        return self.output[proc.pid]

    def close(self) -> None:
        for proc in self.procs:
            self.reap(proc)

    def describe(self) -> str:
        return "\n".join(f"--- worker {pid} ---\n{out[-3000:]}" for pid, out in self.output.items())


@contextmanager
def workers(dsn: str) -> Iterator[Workers]:
    w = Workers(dsn)
    try:
        yield w
    finally:
        w.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    wait_until(lambda: proc.poll() is not None, f"worker {proc.pid} to exit", timeout)
    code = proc.returncode
    assert code is not None
    return code


def execution(db: DB, execution_id: UUID) -> tuple[str, int]:
    found = db.execute(
        "select status, attempts from pgconductor.executions where id = %s", (execution_id,)
    ).fetchone()
    assert found is not None
    return found[0], found[1]


def started(db: DB, execution_id: UUID, what: str = "start") -> int:
    found = db.execute(
        "select count(*) from calls where execution_id = %s and what = %s", (execution_id, what)
    ).fetchone()
    assert found is not None
    return int(found[0])


async def test_killed_worker_execution_is_recovered_after_the_lease(
    conductor: Conductor, dsn: str, calls: DB
) -> None:
    db = calls
    await set_fake_time(conductor, T0)
    execution_id = await conductor.invoke(TASK, {"n": 1})
    assert execution_id is not None
    with workers(dsn) as w:
        first = w.spawn(("PROC_SLEEP_S", "3600"))
        wait_until(lambda: started(db, execution_id) == 1, "the first attempt to start")
        assert execution(db, execution_id) == ("running", 1)

        first.send_signal(signal.SIGKILL)
        assert wait_exit(first, 30) == -signal.SIGKILL
        w.reap(first)
        # Nobody releases it: it stays running, held by the dead worker.
        assert execution(db, execution_id) == ("running", 1)

        await advance_time(conductor, timedelta(seconds=61))
        second = w.spawn(("PROC_SLEEP_S", "0"))
        wait_until(lambda: execution(db, execution_id)[0] not in ("pending", "running"), "the second attempt")
        second.send_signal(signal.SIGTERM)
        code = wait_exit(second, 30)
        w.reap(second)
        assert code == 0, w.describe()

    assert execution(db, execution_id) == ("completed", 2), w.describe()
    assert started(db, execution_id) == 2
    pids = [
        r[0] for r in db.execute("select pid from calls where execution_id = %s order by at", (execution_id,))
    ]
    assert pids == [first.pid, second.pid]


async def test_sigterm_releases_the_running_execution_and_exits_zero(
    conductor: Conductor, dsn: str, calls: DB
) -> None:
    db = calls
    execution_id = await conductor.invoke(TASK, {"n": 1})
    assert execution_id is not None
    with workers(dsn) as w:
        first = w.spawn(("PROC_SLEEP_S", "3600"), ("PROC_SHUTDOWN_S", "0.5"))
        wait_until(lambda: started(db, execution_id) == 1, "the handler to start")
        assert execution(db, execution_id) == ("running", 1)

        first.send_signal(signal.SIGTERM)
        code = wait_exit(first, 30)
        w.reap(first)
        assert code == 0, w.describe()
        # Released: pending again, the interrupted attempt not counted.
        assert execution(db, execution_id) == ("pending", 0)

        second = w.spawn(("PROC_SLEEP_S", "0"))
        wait_until(lambda: execution(db, execution_id)[0] == "completed", "the execution to complete")
        second.send_signal(signal.SIGTERM)
        code = wait_exit(second, 30)
        w.reap(second)
        assert code == 0, w.describe()

    assert execution(db, execution_id) == ("completed", 1)
    assert started(db, execution_id) == 2
    assert await conductor.wait_for(execution_id, timeout=10) == {"pid": second.pid}


async def test_two_worker_processes_never_run_an_execution_twice(
    conductor: Conductor, dsn: str, calls: DB
) -> None:
    db = calls
    total = 2000

    def count(sql: str) -> int:
        found = db.execute(sql).fetchone()
        assert found is not None
        return int(found[0])

    with workers(dsn) as w:
        env = (("PROC_SLEEP_S", "0.005"), ("PROC_CONCURRENCY", "50"))
        procs = [w.spawn(*env), w.spawn(*env)]
        # Both registered (and listening) before the work arrives, so both get a share.
        wait_until(lambda: count("select count(*) from pgconductor._workers") == 2, "both workers registered")
        ids = await conductor.invoke_many(TASK, [{"payload": {"i": i}} for i in range(total)])
        assert len(set(ids)) == total
        wait_until(
            lambda: count("select count(*) from pgconductor.executions where status = 'completed'") == total,
            "all executions to complete",
            timeout=90,
        )
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [wait_exit(proc, 30) for proc in procs]
        for proc in procs:
            w.reap(proc)
        assert codes == [0, 0], w.describe()

    assert count("select count(*) from calls") == total
    assert count("select count(distinct execution_id) from calls") == total
    assert count("select count(*) from pgconductor.executions where attempts <> 1") == 0
    by_pid = dict(db.execute("select pid, count(*) from calls group by pid").fetchall())
    assert set(by_pid) == {p.pid for p in procs}, by_pid
    recorded = {r[0] for r in db.execute("select execution_id from calls")}
    assert recorded == set(ids)


async def test_second_sigterm_exits_at_once(conductor: Conductor, dsn: str, calls: DB) -> None:
    db = calls
    execution_id = await conductor.invoke(TASK, {"n": 1})
    assert execution_id is not None
    with workers(dsn) as w:
        proc = w.spawn(("PROC_SLEEP_S", "3600"), ("PROC_SHUTDOWN_S", "60"), ("PROC_RECORD_ABORT", "1"))
        wait_until(lambda: started(db, execution_id) == 1, "the handler to start")

        proc.send_signal(signal.SIGTERM)
        # The first signal reached the handler (ctx.signal set); the 60 s grace period runs.
        wait_until(lambda: started(db, execution_id, "aborted") == 1, "the handler to see the stop")
        assert proc.poll() is None

        proc.send_signal(signal.SIGTERM)
        code = wait_exit(proc, 10)
        w.reap(proc)
        assert code != 0, w.describe()

    # Nothing was released: the execution comes back only by lease recovery.
    assert execution(db, execution_id) == ("running", 1)

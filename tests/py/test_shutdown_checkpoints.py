"""Graceful shutdown end to end: SIGTERM during a long loop with checkpoints releases the
execution at the next checkpoint (long before the 60 s grace period), and another worker
process finishes it with its steps intact."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import psycopg

from pgconductor import Conductor

from .conftest import spawn_worker

DB = psycopg.Connection[tuple[Any, ...]]


def wait_for_value(db: DB, sql: str, params: Any, expected: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute(sql, params).fetchone()
        if row is not None and row[0] == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {sql!r} == {expected!r}")


def finish(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_sigterm_releases_at_a_checkpoint_and_another_worker_resumes(
    conductor: Conductor, dsn: str, db: DB
) -> None:
    db.execute("create table calls (execution_id uuid, pid int, what text)")
    execution_id = await conductor.invoke("looper", {})
    first = spawn_worker(dsn, "looper:app")
    wait_for_value(db, "select count(*) from calls where execution_id = %s", (execution_id,), 1)
    first.send_signal(signal.SIGTERM)
    # The grace period is 60 s: an exit well within 30 s is the checkpoint's release.
    assert finish(first, 30) == 0
    info = await conductor.get_execution(execution_id)
    assert info is not None and (info.status, info.attempts) == ("pending", 0)

    second = spawn_worker(dsn, "looper:app", ("LOOP_N", "5"))
    try:
        result = await conductor.wait_for(execution_id, timeout=60)
    finally:
        second.send_signal(signal.SIGTERM)
        assert finish(second, 30) == 0
    # The step ran once, in the first process; the second resumed with its saved result.
    assert result == {"prepared_by": first.pid, "finished_by": second.pid}
    assert db.execute("select count(*) from calls").fetchone() == (1,)

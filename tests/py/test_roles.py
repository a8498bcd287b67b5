"""The grants of docs/roles.md, run as written: a worker process connected as the worker
role runs steps, children and a window; an application connected as the enqueue role
invokes and cancels (with the cascade to children); the enqueue role cannot call
worker functions."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgconductor import ChildFailed, Conductor, ExecutionCancelled, Orchestrator

from .conftest import HOST, PORT, ROOT

ROLES_DOC = ROOT / "docs" / "roles.md"


@pytest.fixture
def roles(dbname: str, db: psycopg.Connection[tuple[Any, ...]]) -> Iterator[tuple[str, str]]:
    """Run every SQL block of docs/roles.md with cluster-unique role names (login roles,
    so that the test can connect as them); drop the roles afterwards."""
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    enqueue, worker = f"pgc_enqueue_{suffix}", f"pgc_worker_{suffix}"
    blocks = re.findall(r"```sql\n(.*?)```", ROLES_DOC.read_text(), re.S)
    assert len(blocks) >= 3, "docs/roles.md lost its SQL blocks"
    for block in blocks:
        statement = (
            block.replace("pgconductor_enqueue", enqueue)
            .replace("pgconductor_worker", worker)
            .replace(" nologin", " login")
        )
        db.execute(statement)  # type: ignore[arg-type]
    try:
        yield enqueue, worker
    finally:
        for role in (enqueue, worker):
            db.execute(psycopg.sql.SQL("drop owned by {}").format(psycopg.sql.Identifier(role)))
            db.execute(psycopg.sql.SQL("drop role {}").format(psycopg.sql.Identifier(role)))


def as_role(dbname: str, role: str) -> str:
    return f"postgresql://{role}@{HOST}:{PORT}/{dbname}"


async def test_the_documented_roles_run_workers_and_applications(
    dbname: str, roles: tuple[str, str], db: psycopg.Connection[tuple[Any, ...]]
) -> None:
    enqueue_role, worker_role = roles
    async with Conductor.create(as_role(dbname, worker_role)) as worker_side:

        @worker_side.task("leaf")
        async def leaf(event: Any, ctx: Any) -> int:
            return int(event.payload["n"]) * 2

        @worker_side.task("root", window=("00:00", "23:59"))
        async def root(event: Any, ctx: Any) -> Any:
            saved = await ctx.step("saved", lambda: 1)
            await ctx.checkpoint()  # a windowed task asks the database
            try:
                doubled = await ctx.invoke("child", "leaf", {"n": 21})
            except ChildFailed as exc:
                return exc.status
            return saved + doubled

        async with Conductor.create(as_role(dbname, enqueue_role)) as app:
            done = await app.invoke("root", {})
            await Orchestrator.create(worker_side).drain()
            assert await app.wait_for(done) == 43

            # The application cancels a parent waiting on its child: both end cancelled.
            waiting = await app.invoke("root", {})
            only_root = worker_side.create_worker(tasks=[root])
            await Orchestrator.create(worker_side, workers=[only_root]).drain()
            assert await app.cancel(waiting, reason="changed my mind") is True
            with pytest.raises(ExecutionCancelled):
                await app.wait_for(waiting, timeout=5)
            statuses = db.execute(
                "select status from pgconductor._executions where parent_id = %s", (waiting,)
            ).fetchall()
            assert statuses == [("cancelled",)]

            # Worker functions are refused to the enqueue role.
            async with await psycopg.AsyncConnection.connect(as_role(dbname, enqueue_role)) as conn:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await conn.execute("select * from pgconductor.claim(%s, 'default')", (uuid.uuid4(),))

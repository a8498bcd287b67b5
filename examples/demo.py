"""pgconductor demo: a worker processing real tasks on the local Postgres.

    make demo        # or: .venv/bin/python examples/demo.py [--dsn postgresql://...]

Creates the database `pgconductor_demo` afresh, installs the extension, starts a
worker, enqueues work the ways users do (single, bulk, deduplicated, prioritized,
inside a transaction, failing, cancelled, durable steps with a child task and a sleep)
and prints what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import random
from datetime import UTC, datetime, timedelta

import psycopg
from pydantic import BaseModel

from pgconductor import (
    Conductor,
    ExecutionCancelled,
    ExecutionFailed,
    Orchestrator,
    WorkerConfig,
    define_task,
)


class WelcomeIn(BaseModel):
    email: str
    name: str


class WelcomeOut(BaseModel):
    message_id: str


send_welcome = define_task("send-welcome", payload=WelcomeIn, returns=WelcomeOut)
CHECKOUT_CALLS = {"runs": 0, "reserve": 0}  # how often the durable checkout handler and its step ran


def fresh_database(server: str, name: str) -> None:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')


async def main(server: str) -> None:
    fresh_database(server, "pgconductor_demo")
    conductor = Conductor.create(f"{server}/pgconductor_demo", context={"smtp": "smtp.example.test"})

    @conductor.task(send_welcome, queue="emails", max_attempts=3)
    async def welcome(event, ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(random.uniform(0.01, 0.05))  # talk to the mail server
        ctx.logger.info("sent welcome to %s via %s", event.payload.email, ctx.smtp)
        return WelcomeOut(message_id=f"msg-{ctx.execution_id.hex[:8]}")

    @conductor.task("resize-image", max_attempts=1)
    def resize(event, ctx):  # type: ignore[no-untyped-def]  # plain def: runs in a thread
        if event.payload["width"] <= 0:
            raise ValueError(f"width must be positive, got {event.payload['width']}")
        return {"thumbnail": f"{event.payload['path']}@{event.payload['width']}px"}

    @conductor.task("nightly-report")
    async def report(event, ctx):  # type: ignore[no-untyped-def]
        return {"rows": 42}

    # A batch task: one handler run per group of up to 10, one result per event.
    @conductor.task("index-doc", batch={"size": 10, "timeout_ms": 200}, concurrency=20)
    async def index_docs(events, ctx):  # type: ignore[no-untyped-def]
        ctx.logger.info("indexing %d documents in one call", len(events))
        return [{"indexed": e.payload["doc"], "group_size": len(events)} for e in events]

    # Durable execution: steps run once, a child runs while the parent frees its worker,
    # a durable sleep frees it again; every resume starts from the top with saved steps.

    @conductor.task("charge-card")
    async def charge_card(event, ctx):  # type: ignore[no-untyped-def]
        return {"charged": event.payload["cents"], "receipt": f"r-{ctx.execution_id.hex[:6]}"}

    @conductor.task("checkout")
    async def checkout(event, ctx):  # type: ignore[no-untyped-def]
        CHECKOUT_CALLS["runs"] += 1

        def reserve() -> dict[str, int]:
            CHECKOUT_CALLS["reserve"] += 1
            return {"reserved": event.payload["items"]}

        reserved = await ctx.step("reserve", reserve)
        payment = await ctx.invoke("pay", "charge-card", {"cents": 1999}, timeout_ms=10_000)
        await ctx.sleep("cool-off", 300)  # 300 ms here; days work the same way
        return {**reserved, **payment}

    async with conductor:
        print("installed pgconductor", await conductor.ensure_installed())
        orchestrator = Orchestrator.create(
            conductor, default_worker=WorkerConfig(concurrency=20, fetch_batch_size=20)
        )
        await orchestrator.start(handle_signals=False)
        try:
            await run_examples(conductor)
        finally:
            await orchestrator.stop()
        print("\nworkers:", *orchestrator.info()["workers"], sep="\n  ")
        print("\nqueue_stats:")
        for row in await conductor.queue_stats():
            print(
                f"  {row.queue:8} {row.task_name:15} completed={row.completed} "
                f"failed={row.failed} cancelled={row.cancelled} pending={row.pending}"
            )


async def run_examples(conductor: Conductor) -> None:
    # One execution, its typed result.
    one = await conductor.invoke("send-welcome", {"email": "ada@example.test", "name": "Ada"})
    print("single invoke ->", await conductor.wait_for(one, timeout=10))

    # Bulk: one statement, ids in item order.
    ids = await conductor.invoke_many(
        "send-welcome",
        [
            {"payload": {"email": f"user{n}@example.test", "name": f"User {n}"}, "priority": n % 3}
            for n in range(200)
        ],
    )
    results = [await conductor.wait_for(i, timeout=30) for i in ids]
    print(f"bulk invoke_many -> {len(results)} welcomes sent, e.g. {results[0]}")

    # Dedupe: the second call replaces the pending one and returns the same id.
    later = datetime.now(UTC) + timedelta(seconds=1)
    first = await conductor.invoke("nightly-report", {"day": "mon"}, dedupe_key="report", run_at=later)
    second = await conductor.invoke("nightly-report", {"day": "tue"}, dedupe_key="report", run_at=later)
    print("dedupe_key -> same id:", first == second, "| result:", await conductor.wait_for(second))

    # Enqueue inside your own transaction: nothing runs unless it commits.
    async with await psycopg.AsyncConnection.connect(conductor.dsn) as conn:
        await conductor.invoke("resize-image", {"path": "a.png", "width": 128}, conn=conn)
        await conn.rollback()
        tx = await conductor.invoke("resize-image", {"path": "b.png", "width": 64}, conn=conn)
        await conn.commit()
    print("transactional invoke (one rolled back, one committed) ->", await conductor.wait_for(tx))

    # A failure is stored with its traceback and raised by wait_for.
    bad = await conductor.invoke("resize-image", {"path": "c.png", "width": 0})
    try:
        await conductor.wait_for(bad, timeout=10)
    except ExecutionFailed as exc:
        print("failing task ->", exc.error_type, exc.error_message)

    # Batch: 25 documents become groups of 10, 10 and 5 (the last after its 200 ms timeout).
    docs = await conductor.invoke_many("index-doc", [{"payload": {"doc": n}} for n in range(25)])
    sizes = sorted({(await conductor.wait_for(i, timeout=10))["group_size"] for i in docs})
    print("batch task -> 25 documents indexed in groups of sizes", sizes)

    # Throttle: the first call of a 60 s window queues, the next ones return None.
    calls = [await conductor.invoke("nightly-report", {"n": n}, throttle={"seconds": 60}) for n in range(3)]
    print("throttle -> queued:", [c is not None for c in calls])

    # Debounce: a burst collapses into one execution with the last payload.
    burst = {
        await conductor.invoke("nightly-report", {"v": n}, dedupe_key="b", debounce={"seconds": 1})
        for n in range(5)
    }
    (debounced,) = burst
    info = await conductor.wait_for(debounced, timeout=10)
    print("debounce -> 5 calls, 1 execution:", len(burst) == 1, info)

    # Durable execution (see checkout above).
    order = await conductor.invoke("checkout", {"items": 3})
    print("durable checkout ->", await conductor.wait_for(order, timeout=10), end=" ")
    print(f"(handler runs: {CHECKOUT_CALLS['runs']}, reserve step ran: {CHECKOUT_CALLS['reserve']} time)")

    # Cancel before it runs.
    future = await conductor.invoke("nightly-report", run_at=datetime.now(UTC) + timedelta(hours=1))
    await conductor.cancel(future, reason="not needed")
    try:
        await conductor.wait_for(future)
    except ExecutionCancelled as exc:
        print("cancelled ->", exc.error_message)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    user = os.environ.get("PGUSER", getpass.getuser())
    parser.add_argument(
        "--server", default=f"postgresql://{user}@{os.environ.get('PGHOST', '127.0.0.1')}:5432"
    )
    asyncio.run(main(parser.parse_args().server))

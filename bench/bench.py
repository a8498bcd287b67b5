"""pgconductor benchmarks: one JSON line per measurement, with its parameters.

    python bench/bench.py [--only enqueue,throughput,latency] [--dsn ...]

Runs against a fresh database `pgconductor_bench` on the local server. Workers run
as separate processes (`pgconductor worker bench.app:orchestrator`), one process.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from pgconductor import Conductor

ROOT = Path(__file__).resolve().parents[1]
DB = "pgconductor_bench"


def emit(name: str, params: dict[str, Any], **results: Any) -> None:
    print(json.dumps({"bench": name, "params": params, **results}), flush=True)


def server_dsn(args: argparse.Namespace, db: str) -> str:
    return f"{args.dsn.rstrip('/')}/{db}"


def fresh_database(args: argparse.Namespace) -> str:
    with psycopg.connect(server_dsn(args, "postgres"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {DB} with (force)")
        conn.execute(f"create database {DB}")
    dsn = server_dsn(args, DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create extension pgconductor")
    return dsn


def start_worker(dsn: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgconductor", "--log-level", "WARNING", "worker", "bench.app:orchestrator"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PGCONDUCTOR_DSN": dsn, **env},
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


async def bench_enqueue(dsn: str, count: int) -> None:
    items = [{"payload": {"n": n}} for n in range(count)]
    async with Conductor.create(dsn) as conductor:
        await conductor.invoke_many("noop", items[:100])  # warm up the connection and plans
        started = time.perf_counter()
        ids = await conductor.invoke_many("noop", items)
        elapsed = time.perf_counter() - started
    assert len(ids) == count
    emit(
        "bulk_enqueue",
        {"executions": count, "calls": 1, "api": "Conductor.invoke_many"},
        seconds=round(elapsed, 3),
        executions_per_s=round(count / elapsed),
    )


def run_until_done(dsn: str, env: dict[str, str], enqueue: list[tuple[str, int]]) -> dict[str, Any]:
    """Enqueue `count` no-op executions of each task (interleaved), run one worker process until
    all are completed, and return per task: completed, seconds (first claim to last
    completion, database clock) and jobs/s."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("truncate pgconductor._executions cascade")
        for task, count in enqueue:
            conn.execute(
                "select count(*) from pgconductor.invoke_many(%s, "
                "(select jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', g))) "
                "from generate_series(1, %s) g))",
                (task, count),
            )
        conn.execute("vacuum analyze pgconductor._executions")
        total = sum(count for _, count in enqueue)
        names = [task for task, _ in enqueue]
        proc = start_worker(dsn, **env)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                # Only the enqueued tasks count: children of parents are extra executions.
                row = conn.execute(
                    "select count(*) from pgconductor._executions where status = 'completed'"
                    " and task_name = any(%s)",
                    (names,),
                ).fetchone()
                if row and row[0] >= total:
                    break
                time.sleep(0.2)
            rows = conn.execute(
                "select task_name, min(started_at), max(finished_at), "
                "count(*) filter (where status = 'completed') from pgconductor._executions group by task_name"
            ).fetchall()
        finally:
            stop_worker(proc)
    out = {}
    for task, first, last, done in rows:
        seconds = (last - first).total_seconds()
        out[task] = {"completed": done, "seconds": round(seconds, 3), "jobs_per_s": round(done / seconds)}
    return out


def bench_throughput(dsn: str, count: int, env: dict[str, str]) -> None:
    result = run_until_done(dsn, env, [("noop", count)])["noop"]
    emit("noop_throughput", {"executions": count, "worker_processes": 1, **env}, **result)


def bench_mixed_limits(dsn: str, count: int, env: dict[str, str]) -> None:
    """One queue, a task limited to 5 at once beside an unlimited one: the unlimited task's
    throughput compared with its throughput alone."""
    alone = run_until_done(dsn, env, [("noop", count)])["noop"]
    mixed = run_until_done(dsn, env, [("noop", count), ("limited", count // 5)])
    emit(
        "unlimited_beside_limited",
        {
            "noop_executions": count,
            "limited_executions": count // 5,
            "limited_concurrency": 5,
            "worker_processes": 1,
            **env,
        },
        alone_jobs_per_s=alone["jobs_per_s"],
        mixed_jobs_per_s=mixed["noop"]["jobs_per_s"],
        kept=round(mixed["noop"]["jobs_per_s"] / alone["jobs_per_s"], 3),
        limited_jobs_per_s=mixed["limited"]["jobs_per_s"],
    )


def bench_batch(dsn: str, count: int) -> None:
    """No-op batch task, groups of 100: events per second through one worker process."""
    env = {
        "BENCH_CONCURRENCY": "20",
        "BENCH_FETCH": "20",
        "BENCH_FLUSH_BATCH": "2000",
        "BENCH_FLUSH_MS": "50",
    }
    result = run_until_done(dsn, env, [("batch", count)])["batch"]
    emit(
        "batch_throughput",
        {"events": count, "batch_size": 100, "worker_processes": 1, **env},
        completed=result["completed"],
        seconds=result["seconds"],
        events_per_s=result["jobs_per_s"],
    )


def handler_step_ms(dsn: str) -> tuple[float, float]:
    """Mean and p95 of the per-step time the steps10 handlers measured (their results)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select avg((result ->> 'step_ms')::float8), percentile_cont(0.95) within group"
            " (order by (result ->> 'step_ms')::float8) from pgconductor._executions"
            " where task_name = 'steps10' and status = 'completed'"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def bench_steps(dsn: str, count: int, env: dict[str, str]) -> None:
    """Executions of ten durable steps each: steps/s, and the per-step overhead measured two
    ways: the handlers' own mean time per step (one save round trip), and the extra wall
    time per step compared with no-op executions in the same worker."""
    plain = run_until_done(dsn, env, [("noop", count)])["noop"]
    stepped = run_until_done(dsn, env, [("steps10", count)])["steps10"]
    row = handler_step_ms(dsn)
    steps = count * 10
    emit(
        "durable_steps",
        {"executions": count, "steps_per_execution": 10, "worker_processes": 1, **env},
        completed=stepped["completed"],
        seconds=stepped["seconds"],
        steps_per_s=round(steps / stepped["seconds"]),
        executions_per_s=stepped["jobs_per_s"],
        handler_step_ms_mean=round(row[0], 3),
        handler_step_ms_p95=round(row[1], 3),
        extra_wall_ms_per_step=round((stepped["seconds"] - plain["seconds"]) * 1000 / steps, 4),
    )
    # One execution at a time: what one step costs a lone handler (its save's round trip).
    serial_env = {**env, "BENCH_CONCURRENCY": "1", "BENCH_FETCH": "1"}
    serial_count = max(1, count // 10)
    serial = run_until_done(dsn, serial_env, [("steps10", serial_count)])["steps10"]
    row = handler_step_ms(dsn)
    emit(
        "durable_steps_serial",
        {"executions": serial_count, "steps_per_execution": 10, "worker_processes": 1, **serial_env},
        completed=serial["completed"],
        seconds=serial["seconds"],
        steps_per_s=round(serial_count * 10 / serial["seconds"]),
        handler_step_ms_mean=round(row[0], 3),
        handler_step_ms_p95=round(row[1], 3),
    )


def bench_children(dsn: str, count: int, env: dict[str, str]) -> None:
    """Parents that each invoke one no-op child and return its result: full child round
    trips (parent waits, child runs, parent resumes) per second."""
    result = run_until_done(dsn, env, [("parent", count)])["parent"]
    emit(
        "child_round_trips",
        {"parents": count, "worker_processes": 1, **env},
        completed=result["completed"],
        seconds=result["seconds"],
        round_trips_per_s=result["jobs_per_s"],
    )


async def bench_debounce(dsn: str, calls: int, keys: int) -> None:
    """Debounced calls spread over `keys` keys: one at a time through the client, then all
    in one invoke_many. Each burst collapses to one pending execution per key."""
    async with Conductor.create(dsn) as conductor:
        async with conductor.connection() as conn:
            await conn.execute("truncate pgconductor._executions cascade")
        started = time.perf_counter()
        for n in range(calls):
            await conductor.invoke("noop", {"n": n}, dedupe_key=f"k{n % keys}", debounce={"seconds": 60})
        single = time.perf_counter() - started
        items = [
            {"payload": {"n": n}, "dedupe_key": f"k{n % keys}", "debounce": {"seconds": 60}}
            for n in range(calls)
        ]
        started = time.perf_counter()
        await conductor.invoke_many("noop", items)
        bulk = time.perf_counter() - started
        pending = next(s.pending for s in await conductor.queue_stats() if s.task_name == "noop")
    emit(
        "debounce_calls",
        {"calls": calls, "keys": keys, "api": "Conductor.invoke, sequential"},
        pending_executions=pending,
        seconds=round(single, 3),
        calls_per_s=round(calls / single),
    )
    emit(
        "debounce_calls",
        {"calls": calls, "keys": keys, "api": "Conductor.invoke_many, one call"},
        pending_executions=pending,
        seconds=round(bulk, 3),
        calls_per_s=round(calls / bulk),
    )


def bench_latency(dsn: str, samples: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:  # an idle worker: nothing else queued
        conn.execute("truncate pgconductor._executions cascade")
    with tempfile.TemporaryDirectory() as tmp:
        starts_file = Path(tmp) / "starts"
        starts_file.touch()
        proc = start_worker(dsn, BENCH_STARTS_FILE=str(starts_file), BENCH_CONCURRENCY="10", BENCH_FETCH="10")
        latencies: list[float] = []
        try:
            with psycopg.connect(dsn, autocommit=True) as conn, open(starts_file) as starts:
                time.sleep(1.0)  # let the worker register and go idle
                for _ in range(samples + 10):
                    sent = time.time()
                    execution_id = conn.execute("select pgconductor.invoke('probe')").fetchone()[0]  # type: ignore[index]
                    deadline = time.monotonic() + 10
                    line = ""
                    while not line.endswith("\n"):
                        line += starts.readline()
                        if time.monotonic() > deadline:
                            raise RuntimeError("probe did not start within 10 s")
                        if not line.endswith("\n"):
                            time.sleep(0.0001)
                    got_id, started = line.split()
                    assert got_id == str(execution_id)
                    latencies.append((float(started) - sent) * 1000)
                    time.sleep(0.005)  # idle worker between probes
        finally:
            stop_worker(proc)
    measured = sorted(latencies[10:])  # the first 10 warm up the worker
    quantiles = statistics.quantiles(measured, n=100)
    emit(
        "enqueue_to_start_latency",
        {"samples": samples, "mode": "sequential single invokes, idle worker"},
        p50_ms=round(statistics.median(measured), 2),
        p95_ms=round(quantiles[94], 2),
        max_ms=round(measured[-1], 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    user = os.environ.get("PGUSER", getpass.getuser())
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "PGCONDUCTOR_BENCH_SERVER", f"postgresql://{user}@{os.environ.get('PGHOST', '127.0.0.1')}:5432"
        ),
    )
    parser.add_argument("--only", default="enqueue,throughput,latency,debounce,limits,batch,steps,children")
    parser.add_argument("--enqueue", type=int, default=100_000)
    parser.add_argument("--throughput", type=int, default=50_000)
    parser.add_argument("--latency", type=int, default=200)
    args = parser.parse_args()
    only = set(args.only.split(","))
    dsn = fresh_database(args)
    if "enqueue" in only:
        asyncio.run(bench_enqueue(dsn, args.enqueue))
    best = {
        "BENCH_CONCURRENCY": "1000",
        "BENCH_FETCH": "500",
        "BENCH_FLUSH_BATCH": "1000",
        "BENCH_FLUSH_MS": "50",
    }
    if "throughput" in only:
        bench_throughput(dsn, args.throughput, best)
    if "latency" in only:
        bench_latency(dsn, args.latency)
    if "debounce" in only:
        asyncio.run(bench_debounce(dsn, 10_000, 100))
    if "limits" in only:
        bench_mixed_limits(dsn, args.throughput, best)
    if "batch" in only:
        bench_batch(dsn, 100_000)
    if "steps" in only:
        bench_steps(dsn, 2_000, best)
    if "children" in only:
        bench_children(dsn, 2_000, best)


if __name__ == "__main__":
    main()

"""The `pgconductor` command: run workers, show queue status, install the extension."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from typing import Any

from . import logs
from .conductor import Conductor
from .errors import PgConductorError
from .orchestrator import Orchestrator


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"pgconductor: expected module:attribute, got {target!r}")
    sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


async def _run_worker(target: str) -> int:
    obj = _load(target)
    orchestrator = obj() if callable(obj) and not isinstance(obj, Orchestrator) else obj
    if asyncio.iscoroutine(orchestrator):
        orchestrator = await orchestrator
    if not isinstance(orchestrator, Orchestrator):
        raise SystemExit(f"pgconductor: {target} is not an Orchestrator")
    await orchestrator.start(handle_signals=True)
    await orchestrator.stopped
    await orchestrator.conductor.close()
    return 0


def _dsn(args: argparse.Namespace) -> str:
    dsn: str | None = args.dsn or os.environ.get("PGCONDUCTOR_DSN") or os.environ.get("DATABASE_URL")
    if not dsn:
        raise SystemExit("pgconductor: give --dsn or set PGCONDUCTOR_DSN")
    return dsn


async def _status(dsn: str) -> int:
    async with Conductor.create(dsn) as conductor:
        rows = await conductor.queue_stats()
    header = ("queue", "task", "pending", "running", "waiting", "failed", "oldest pending")
    table = [header] + [
        (
            r.queue,
            r.task_name,
            str(r.pending),
            str(r.running),
            str(r.waiting),
            str(r.failed),
            "-" if r.oldest_pending_age is None else f"{r.oldest_pending_age.total_seconds():.1f}s",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _install(dsn: str) -> int:
    async with Conductor.create(dsn) as conductor:
        version = await conductor.ensure_installed()
    print(f"pgconductor {version} installed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgconductor")
    parser.add_argument("--log-level", default=os.environ.get("PGCONDUCTOR_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run module:orchestrator until SIGTERM/SIGINT")
    worker.add_argument("target", help="module:attribute of an Orchestrator (or a factory)")
    for name, text in (
        ("status", "per task: pending, running, failed, oldest pending age"),
        ("install", "install or upgrade the extension in a database"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--dsn", help="connection string (default: $PGCONDUCTOR_DSN)")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        if args.command == "worker":
            return asyncio.run(_run_worker(args.target))
        if args.command == "status":
            return asyncio.run(_status(_dsn(args)))
        return asyncio.run(_install(_dsn(args)))
    except PgConductorError as exc:
        print(f"pgconductor: {exc}", file=sys.stderr)
        return 2

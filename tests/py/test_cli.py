"""The `pgconductor` command line: install and status, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import dsn_for

ROOT = Path(__file__).resolve().parents[2]
Db = psycopg.Connection[tuple[Any, ...]]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("PGCONDUCTOR_DSN", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "pgconductor", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def bare_dbname() -> Iterator[str]:
    """A database created without the template: no extension installed."""
    name = f"pgconductor_cli_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    ident = psycopg.sql.Identifier(name)
    with psycopg.connect(dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("create database {}").format(ident))
    try:
        yield name
    finally:
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("drop database if exists {} with (force)").format(ident))


def status_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """The status table as {(queue, task): cells}; checks the header."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, stdout
    header = lines[0].split()
    assert header[:5] == ["queue", "task", "pending", "running", "waiting"], lines[0]
    assert "failed" in header
    rows: dict[tuple[str, str], list[str]] = {}
    for line in lines[1:]:
        cells = line.split()
        rows[(cells[0], cells[1])] = cells
    return rows


def test_install_creates_the_extension_and_prints_the_version(bare_dbname: str) -> None:
    dsn = dsn_for(bare_dbname)
    result = run_cli("install", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    assert "0.1.0" in result.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select extversion from pg_extension where extname = 'pgconductor'").fetchone()
    assert row is not None and row[0] == "0.1.0"

    again = run_cli("install", "--dsn", dsn)  # already installed: still fine
    assert again.returncode == 0, again.stderr
    assert "0.1.0" in again.stdout


def test_status_shows_pending_counts_per_task(dsn: str, db: Db) -> None:
    for _ in range(3):
        db.execute("select pgconductor.invoke('send-email', '{}'::jsonb)")
    db.execute("select pgconductor.invoke('resize', '{}'::jsonb, 'images')")
    cancelled = db.execute("select pgconductor.invoke('resize', '{}'::jsonb, 'images')").fetchone()
    assert cancelled is not None
    db.execute("select pgconductor.cancel(%s)", (cancelled[0],))

    result = run_cli("status", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    rows = status_rows(result.stdout)
    assert set(rows) == {("default", "send-email"), ("images", "resize")}
    assert rows[("default", "send-email")][2:5] == ["3", "0", "0"]
    assert rows[("images", "resize")][2:5] == ["1", "0", "0"]


def test_status_reads_the_dsn_from_the_environment(dsn: str, db: Db) -> None:
    db.execute("select pgconductor.invoke('from-env', '{}'::jsonb)")
    result = run_cli("status", env={"PGCONDUCTOR_DSN": dsn})
    assert result.returncode == 0, result.stderr
    assert status_rows(result.stdout)[("default", "from-env")][2] == "1"


def test_status_on_an_empty_database_prints_only_the_header(dsn: str) -> None:
    result = run_cli("status", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    assert status_rows(result.stdout) == {}


@pytest.mark.parametrize("command", ["status", "install"])
def test_missing_dsn_fails_naming_pgconductor_dsn(command: str) -> None:
    result = run_cli(command)
    assert result.returncode != 0
    assert "PGCONDUCTOR_DSN" in result.stderr + result.stdout

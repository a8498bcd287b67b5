"""Test databases: one template with the extension per session, one clone per test.

The server comes from the environment (PGHOST/PGPORT/PGUSER, default
127.0.0.1:5432 and the current user); `make test` starts one if none is running.
Every test database allows fake time (pgconductor.allow_fake_time = on).
"""

from __future__ import annotations

import getpass
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from pgconductor import Conductor

HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "5432"))
USER = os.environ.get("PGUSER", getpass.getuser())
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
TEMPLATE = f"pgconductor_tmpl_{WORKER}_{os.getpid()}"
_counter = itertools.count()
ROOT = Path(__file__).resolve().parents[2]


def dsn_for(dbname: str) -> str:
    return f"postgresql://{USER}@{HOST}:{PORT}/{dbname}"


def _janitor(dbname: str, template: str | None = None, as_template: bool = False) -> DatabaseJanitor:
    return DatabaseJanitor(
        user=USER,
        host=HOST,
        port=PORT,
        dbname=dbname,
        template_dbname=template,
        as_template=as_template,
        password=None,
    )


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A template database with the installed extension (rebuilt every session)."""
    janitor = _janitor(TEMPLATE, as_template=True)
    janitor.drop()
    with janitor:
        with psycopg.connect(dsn_for(TEMPLATE), autocommit=True) as conn:
            conn.execute("create extension pgconductor")
        yield TEMPLATE


@pytest.fixture
def dbname(template_db: str) -> Iterator[str]:
    """A fresh database cloned from the template, with fake time allowed."""
    name = f"pgconductor_t_{WORKER}_{os.getpid()}_{next(_counter)}"
    janitor = _janitor(name, template=template_db)
    janitor.drop()
    with janitor:
        with psycopg.connect(dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("alter database {} set pgconductor.allow_fake_time = on").format(
                    psycopg.sql.Identifier(name)
                )
            )
        yield name


@pytest.fixture
def dsn(dbname: str) -> str:
    return dsn_for(dbname)


@pytest.fixture
async def conductor(dsn: str) -> AsyncIterator[Conductor]:
    """A Conductor on the test database (no task list: any task name is accepted)."""
    async with Conductor.create(dsn) as c:
        yield c


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection for assertions and fake time."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def spawn_worker(dsn: str, target: str, *extra_env: tuple[str, str]) -> subprocess.Popen[bytes]:
    """Start `pgconductor worker tests.py.apps.<target>` in its own process."""
    env = {**os.environ, "PGCONDUCTOR_DSN": dsn, "PYTHONPATH": str(ROOT), **dict(extra_env)}
    return subprocess.Popen(
        [sys.executable, "-m", "pgconductor", "worker", f"tests.py.apps.{target}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

"""Waiting in tests for state that other tasks or processes change: poll, never sleep blindly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T], until: Callable[[T], bool], timeout: float = 5.0, interval: float = 0.02
) -> T:
    """Call `probe` until `until(value)` holds or `timeout` seconds pass; return the last
    value, so that the caller asserts on what it saw."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not until(value) and time.monotonic() < deadline:
        await asyncio.sleep(interval)
        value = probe()
    return value

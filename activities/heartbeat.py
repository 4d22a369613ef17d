"""Run blocking work in a thread while the activity keeps heartbeating."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio import activity

T = TypeVar("T")

HEARTBEAT_EVERY_S = 5.0


async def run_blocking(
    func: Callable[..., T], *args: Any, details: Callable[[], Any] | None = None
) -> T:
    """Call ``func(*args)`` off the event loop; heartbeat ``details()`` until it returns.

    Heartbeats are what let Temporal notice a dead worker within the heartbeat timeout,
    and what carries cancellation to a running activity.
    """
    task = asyncio.ensure_future(asyncio.to_thread(func, *args))
    while True:
        activity.heartbeat(details() if details else None)
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return task.result()

"""Run blocking work in a thread while the activity keeps heartbeating."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import activity

T = TypeVar("T")

# Upper bound; an activity with a short heartbeat timeout beats faster (see interval()).
HEARTBEAT_EVERY_S = 5.0

# Threads running blocking work right now. A worker shutting down checks it: a thread whose
# activity was cancelled cannot be interrupted, and is not worth waiting for.
_busy = 0
_busy_lock = threading.Lock()


def busy_threads() -> int:
    return _busy


def _counted(func: Callable[..., T], *args: Any) -> T:
    global _busy
    with _busy_lock:
        _busy += 1
    try:
        return func(*args)
    finally:
        with _busy_lock:
            _busy -= 1


def interval() -> float:
    """Beat three times per heartbeat timeout, so one late beat never times the step out."""
    timeout = activity.info().heartbeat_timeout
    if timeout is None:
        return HEARTBEAT_EVERY_S
    return max(0.1, min(HEARTBEAT_EVERY_S, timeout.total_seconds() / 3))


async def run_blocking(
    func: Callable[..., T], *args: Any, details: Callable[[], Any] | None = None
) -> T:
    """Call ``func(*args)`` off the event loop; heartbeat ``details()`` until it returns.

    Heartbeats are what let Temporal notice a dead worker within the heartbeat timeout,
    and what carries cancellation to a running activity.
    """
    return await heartbeat_while(asyncio.to_thread(_counted, func, *args), details=details)


async def heartbeat_while(work: Awaitable[T], details: Callable[[], Any] | None = None) -> T:
    """Await ``work`` while heartbeating, e.g. a request waiting in a micro-batch."""
    task = asyncio.ensure_future(work)
    every = interval()
    # No beat at the start: the server counts the heartbeat timeout from the start too, and
    # every beat is a write to the workflow's state, so a step that ends within ``every``
    # (most of them) costs none. Local activities cannot heartbeat at all.
    beats = not activity.info().is_local
    while True:
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            return task.result()
        if beats:
            activity.heartbeat(details() if details else None)

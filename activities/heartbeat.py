"""Keep an activity heartbeating while its step works.

Heartbeats are what let Temporal notice a dead worker within the heartbeat timeout, and
what carries cancellation to a running activity. The step reports progress through a
``Progress``; this module turns it into heartbeat details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import activity

from docindex.steps.progress import Progress

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741

# Upper bound; an activity with a short heartbeat timeout beats faster (see interval()).
HEARTBEAT_EVERY_S = 5.0


def interval() -> float:
    """Beat three times per heartbeat timeout, so one late beat never times the step out."""
    timeout = activity.info().heartbeat_timeout
    if timeout is None:
        return HEARTBEAT_EVERY_S
    return max(0.1, min(HEARTBEAT_EVERY_S, timeout.total_seconds() / 3))


async def run_step(step: Callable[[I, Progress], Awaitable[T]], inp: I) -> T:
    """Run a step of ``docindex.steps`` as this activity: its progress is the heartbeat's
    details, and each checkpoint it saves is sent at once.

    Work the step runs in a child process (the parse) beats only while the child shows
    life, so a stuck parse stops the heartbeat; and the step stops such a child itself at
    two thirds of the heartbeat timeout, so its typed error reaches Temporal first."""
    info = activity.info()
    beats = not info.is_local
    timeout = info.heartbeat_timeout
    progress = Progress(
        on_checkpoint=activity.heartbeat if beats else None,
        stall_s=timeout.total_seconds() * 2 / 3 if timeout else None,
    )
    every = interval()
    return await heartbeat_while(
        step(inp, progress),
        details=lambda: progress.details or None,
        alive=lambda: progress.silent_s() < every,
    )


async def heartbeat_while(
    work: Awaitable[T],
    details: Callable[[], Any] | None = None,
    alive: Callable[[], bool] | None = None,
) -> T:
    """Await ``work`` while heartbeating, e.g. a request waiting in a micro-batch; skip the
    beats while ``alive()`` says the work shows no sign of life."""
    task = asyncio.ensure_future(work)
    every = interval()
    # No beat at the start: the server counts the heartbeat timeout from the start too, and
    # every beat is a write to the workflow's state, so a step that ends within ``every``
    # (most of them) costs none. Local activities cannot heartbeat at all.
    beats = not activity.info().is_local
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            if beats and (alive is None or alive()):
                activity.heartbeat(details() if details else None)
    finally:
        # Cancelled (the activity was, or the worker is shutting down): stop the step too.
        task.cancel()

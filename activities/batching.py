"""Run one step for several small documents in one activity (workflows/batch.py).

Each document gets its own ``Progress``, so a parse that hangs is stopped by its cage like
any other; the activity heartbeats while any of them shows life. A document whose step
raised an error the batch cannot fix is handed back (its own workflow takes it from the
start); an error that concerns the whole step (an outage, a rate limit) fails the activity,
and Temporal retries it like any step: what was already saved is reused then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from temporalio import activity

from docindex.steps.models import HandedBack
from docindex.steps.progress import Progress

from .heartbeat import heartbeat_while, interval

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741

# Decides what an item's error means: handed back (its own workflow retries it and records
# its outcome), or None: the whole activity fails with it.
Triage = Callable[[BaseException], HandedBack | None]


async def run_steps(
    step: Callable[[I, Progress], Awaitable[T]],
    items: Mapping[str, I],
    triage: Triage,
) -> tuple[dict[str, T], dict[str, HandedBack]]:
    """``step`` for every item at once; the results by key, and the items handed back."""
    timeout = activity.info().heartbeat_timeout
    stall_s = timeout.total_seconds() * 2 / 3 if timeout else None
    progress = {key: Progress(stall_s=stall_s) for key in items}
    every = interval()

    async def all_of() -> list[T | BaseException]:
        return await asyncio.gather(
            *(step(item, progress[key]) for key, item in items.items()), return_exceptions=True
        )

    outcomes = await heartbeat_while(
        all_of(), alive=lambda: any(p.silent_s() < every for p in progress.values())
    )
    done: dict[str, T] = {}
    handed_back: dict[str, HandedBack] = {}
    for key, outcome in zip(items, outcomes, strict=True):
        if not isinstance(outcome, BaseException):
            done[key] = outcome
        elif isinstance(outcome, asyncio.CancelledError):
            raise outcome
        elif (back := triage(outcome)) is not None:
            activity.logger.info("%s handed back to its own workflow: %s", key, back.error)
            handed_back[key] = back
        else:
            raise outcome
    return done, handed_back
